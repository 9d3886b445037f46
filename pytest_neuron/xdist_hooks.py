"""pytest-xdist integration, registered only when xdist is installed and active."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest

from .plan import PLAN_ENV, plan_to_json


def count_workers(tx: list[str] | None) -> int:
    """How many workers xdist starts for ``--tx`` specs: ``3*popen`` counts three.

    The same reading as xdist's own (``parse_tx_spec_config``, which is not a
    public API): the text before the first ``*`` (for a spec without one,
    every character but the last, as xdist slices it) read as a whole number
    is how many workers the spec stands for; any other spec is one.
    tests/test_xdist.py compares the two and fails loudly if xdist changes.
    """
    count = 0
    for spec in tx or ():
        try:
            count += max(0, int(spec[: spec.find("*")]))
        except ValueError:
            count += 1
    return count


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


AUTO_ENV = "PYTEST_XDIST_AUTO_NUM_WORKERS"
AUTO_HOOK = "pytest_xdist_auto_num_workers"


def others_impls(manager: pytest.PytestPluginManager, skip: list[object]) -> list[Any]:
    """The ``pytest_xdist_auto_num_workers`` implementations of every plugin but ``skip``."""
    hook = manager.hook.pytest_xdist_auto_num_workers
    return [impl for impl in hook.get_hookimpls() if impl.plugin not in skip]


class XdistHooks:
    """Controller side: sizes ``-n auto``, hands each worker the plan, gathers their slices."""

    def __init__(self) -> None:
        self.worker_summaries: dict[str, dict[str, Any]] = {}
        self.notices: list[str] = []  # run-wide lines for the summary (shown even at -q)

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_auto_num_workers(self, config: pytest.Config) -> int | None:
        """``-n auto``: the user's own choice if they expressed one, else as many workers as slices fit.

        The user's choice is, in this order, what another ``pytest_xdist_auto_num_workers``
        (a conftest's, another plugin's) returns, ``PYTEST_XDIST_AUTO_NUM_WORKERS``, or
        ``-n logical``; the last two are read by xdist's own hook, called here so that its
        warning for a bad value stays its own.  In worker scope a choice is capped at the
        slices that fit, with one line in the summary; in test scope it stands as it is.
        """
        from .bootstrap import plan_for

        plan = plan_for(config)
        topo = plan.topology
        if topo is None:
            return None
        size = int(plan.value("cores_per_worker") or 1)
        fit = max(1, plan.slices_that_fit(size))
        choice, source = self._users_choice(config)
        if choice is None:
            return max(1, min(fit, _cpu_count()))
        if plan.scope == "worker" and choice > fit:
            from .coreset import format_coreset

            self.notices.append(
                f"-n {config.option.numprocesses}: {source} asks for {choice} workers, but pool "
                f"{format_coreset(topo.cores)} ({topo.source}) holds only {fit} "
                f"slice{'s' if fit != 1 else ''} of {size} core{'s' if size != 1 else ''}; started {fit}"
            )
            return fit
        return choice

    def _users_choice(self, config: pytest.Config) -> tuple[int | None, str]:
        manager = config.pluginmanager
        xdist = manager.get_plugin("xdist")
        others = [self] if xdist is None else [self, xdist]
        theirs = manager.subset_hook_caller(AUTO_HOOK, remove_plugins=others)(config=config)
        if theirs is not None:
            names = [impl.plugin_name for impl in others_impls(manager, others)]
            return int(theirs), f"the {AUTO_HOOK} hook of {names[0] if len(names) == 1 else 'a plugin'}"
        raw = os.environ.get(AUTO_ENV, "")
        try:
            int(raw)
        except ValueError:
            valid = False
        else:
            valid = True
        logical = config.option.numprocesses == "logical"
        if not (raw or logical):
            return None, ""
        answer = manager.subset_hook_caller(AUTO_HOOK, remove_plugins=[self])(config=config)
        if valid:
            return int(answer), f"{AUTO_ENV}={raw}"
        if logical and answer is not None:
            return int(answer), "the logical CPU count"
        return None, ""  # a bad value: xdist has warned and ignores it, and so does the plugin

    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: list[Any]) -> None:
        from .bootstrap import SESSION_KEY

        session = config.stash.get(SESSION_KEY, None)
        if session is None or session.plan.topology is None:
            return
        from .watchdog import this_process

        encoded = plan_to_json(replace(session.plan, controller=this_process()))
        for spec in specs:
            spec.env[PLAN_ENV] = encoded

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        output = getattr(node, "workeroutput", None) or {}
        summary = output.get("neuron")
        if summary and summary.get("worker"):
            self.worker_summaries[summary["worker"]] = summary


def hand_out_one_at_a_time(config: pytest.Config) -> None:
    """In test scope, let xdist's load scheduler hand out one test at a time.

    Tests are sorted biggest-first; xdist's default chunks would queue a run
    of big tests on one worker, and each would then wait for the whole pool
    to drain again.  One at a time (xdist's own ``--maxschedchunk=1``) keeps
    the global biggest-first order.  A value the user gave is kept.
    """
    if getattr(config.option, "dist", None) == "load" and getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1


def worker_output(config: pytest.Config) -> dict[str, Any] | None:
    """xdist's channel from a worker back to the controller (None outside a worker)."""
    output = getattr(config, "workeroutput", None)
    return output if isinstance(output, dict) else None
