"""pytest-xdist integration: every xdist touchpoint of the plugin is in this module.

Controller side, in worker scope, the run reserves its cores as a whole:
in ``pytest_xdist_setupnodes`` (after the session header, before any worker
starts) the controller takes one lease of ``workers x cores-per-worker``
cores, all or nothing, and hands each worker its slice of it through the
worker's environment.  Each worker then leases exactly that slice in the
reservation's nested lock domain, where nobody else competes, so no run ever
holds part of its cores while waiting for the rest, and a restarted worker
gets its predecessor's slice back at once.  The reservation is released when
the controller unconfigures, after every worker has exited.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from ..core.coreset import format_coreset
from ..core.plan import PLAN_ENV, plan_to_json
from ..core.runtime_env import PORT_VARS, VISIBLE
from ..locks.handoff import HANDOFF_ENV, Handoff, handoff_value
from .context import LeaseWaitFailed
from .keys import CONTEXT_KEY

if TYPE_CHECKING:
    from ..core.topology import Topology
    from .context import NeuronContext


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def sub_topology(topology: Topology, cores: tuple[int, ...], source: str) -> Topology:
    """``topology`` restricted to ``cores`` (a worker's slice of the run's reservation)."""
    return replace(
        topology,
        cores=cores,
        physical={c: topology.physical[c] for c in cores},
        device_of={c: topology.device_of[c] for c in cores if c in topology.device_of},
        source=source,
        limit=None,
    )


class XdistHooks:
    """Controller side: sizes ``-n auto``, reserves the run's cores, gathers the workers' summaries."""

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
        context = config.stash.get(CONTEXT_KEY, None)
        if context is None or context.plan.topology is None:
            return
        from .bootstrap import runs_tests

        wants_run = context.plan.scope == "worker" and not context.lazy
        if wants_run and runs_tests(lambda dest: config.getoption(dest, None)):
            self._reserve_run(context, specs)
            return
        encoded = plan_to_json(context.plan)
        for spec in specs:
            spec.env[PLAN_ENV] = encoded

    def _reserve_run(self, context: NeuronContext, specs: list[Any]) -> None:
        """Reserve ``len(specs)`` slices in one request and give each worker its own."""
        plan = context.plan
        topo = plan.topology
        assert topo is not None
        if plan.slice_size is None or plan.slice_size * len(specs) > topo.size:
            plan = context.plan = plan.with_workers(len(specs))
        size = plan.slice_size or 1
        workers = len(specs)
        plural = ("s" if workers != 1 else "", "s" if size != 1 else "")
        who = f"this run ({workers} worker{plural[0]} x {size} core{plural[1]})"
        try:
            lease = context.acquire(size * workers, who=who, worker=f"run of {workers} workers", test=None)
        except LeaseWaitFailed as exc:
            # before any worker starts: pytest prints it once, as "ERROR: ...", and exits with status 4
            raise pytest.UsageError(str(exc)) from None
        context.state.lease = lease
        plugin_vars = tuple(v for v in PORT_VARS if v not in plan.user_env)
        handoff = Handoff(lease.domain, os.getpid(), _starttime(), frozenset(lease.cores), plugin_vars)
        # every worker, and everything it starts, carries the reservation's lease id: a dead
        # controller's cores are not handed on while any of them lives (locks/lease.py)
        value = handoff_value(lease.domain, lease.cores, plugin_vars=plugin_vars, lease_id=lease.lease_id)
        reservation = lease.visible_cores
        for index, spec in enumerate(specs):
            part = lease.cores[index * size : (index + 1) * size]
            source = (
                f"slice {format_coreset(part)} of this run's reservation {reservation} (pid {os.getpid()})"
            )
            worker_plan = replace(
                plan, topology=sub_topology(topo, part, source), handoff=handoff, run_pool=plan.pool_size
            )
            spec.env[PLAN_ENV] = plan_to_json(worker_plan)
            spec.env[HANDOFF_ENV] = value
            spec.env[VISIBLE] = format_coreset(part)

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        output = getattr(node, "workeroutput", None) or {}
        summary = output.get("neuron")
        if summary and summary.get("worker"):
            self.worker_summaries[summary["worker"]] = summary

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from .reporting import emit_warning, overrides_warning

        changes = {w: s["overrides"] for w, s in self.worker_summaries.items() if s.get("overrides")}
        for var, text in overrides_warning(changes):
            emit_warning(session.config, text, var)


def _starttime() -> int | None:
    from ..host.procinfo import my_starttime

    return my_starttime()


def worker_output(config: pytest.Config) -> dict[str, Any] | None:
    """xdist's channel from a worker back to the controller (None outside a worker)."""
    output = getattr(config, "workeroutput", None)
    return output if isinstance(output, dict) else None


def distributing(config: pytest.Config) -> bool:
    """Whether xdist distributes this run (known from ``pytest_configure`` on)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def hand_out_one_at_a_time(config: pytest.Config) -> None:
    """In test scope, let xdist's load scheduler hand out one test at a time.

    Tests are sorted biggest-first; xdist's default chunks would queue a run
    of big tests on one worker, and each would then wait for the whole pool
    to drain again.  One at a time (xdist's own ``--maxschedchunk=1``) keeps
    the global biggest-first order.  A value the user gave is kept.
    """
    if getattr(config.option, "dist", None) == "load" and getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1
