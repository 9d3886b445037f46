"""pytest-xdist integration, registered only when xdist is installed and active."""

from __future__ import annotations

import os
from typing import Any

import pytest

from .plan import PLAN_ENV, plan_to_json


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class XdistHooks:
    """Controller side: sizes ``-n auto``, hands each worker the plan, gathers their slices."""

    def __init__(self) -> None:
        self.worker_summaries: dict[str, dict[str, Any]] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_auto_num_workers(self, config: pytest.Config) -> int | None:
        from .bootstrap import plan_for

        plan = plan_for(config)
        if plan.topology is None:
            return None
        size = plan.value("cores_per_worker") or 1
        return max(1, min(plan.slices_that_fit(size), _cpu_count()))

    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: list[Any]) -> None:
        from .bootstrap import SESSION_KEY

        session = config.stash.get(SESSION_KEY, None)
        if session is None or session.plan.topology is None:
            return
        encoded = plan_to_json(session.plan)
        for spec in specs:
            spec.env[PLAN_ENV] = encoded

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        output = getattr(node, "workeroutput", None) or {}
        summary = output.get("neuron")
        if summary and summary.get("worker"):
            self.worker_summaries[summary["worker"]] = summary


def worker_output(config: pytest.Config) -> dict[str, Any] | None:
    """xdist's channel from a worker back to the controller (None outside a worker)."""
    output = getattr(config, "workeroutput", None)
    return output if isinstance(output, dict) else None
