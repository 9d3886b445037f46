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
from typing import TYPE_CHECKING, Any

import pytest

from ..core.record import replace
from ..core.workers import count_workers
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
        whole_host=False,  # a slice: the runtime's default (every core) is not it
    )


AUTO_ENV = "PYTEST_XDIST_AUTO_NUM_WORKERS"
AUTO_HOOK = "pytest_xdist_auto_num_workers"


def others_impls(manager: pytest.PytestPluginManager, skip: list[object]) -> list[Any]:
    """The ``pytest_xdist_auto_num_workers`` implementations of every plugin but ``skip``."""
    hook = manager.hook.pytest_xdist_auto_num_workers
    return [impl for impl in hook.get_hookimpls() if impl.plugin not in skip]


class XdistHooks:
    """Controller side: sizes ``-n auto``, reserves the run's cores, gathers the workers' summaries."""

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
        if topo is None or plan.nested:
            return None  # nested in a lease: its workers lease only when a test asks (context.lazy)
        size = int(plan.value("cores_per_worker") or 1)
        fit = max(1, plan.slices_that_fit(size))
        choice, source = self._users_choice(config)
        if choice is None:
            return max(1, min(fit, _cpu_count()))
        if plan.scope == "worker" and choice > fit:
            from ..core.coreset import format_coreset

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
        context = config.stash.get(CONTEXT_KEY, None)
        if context is None or context.plan.topology is None:
            return
        from ..core.plan import PLAN_ENV
        from ..core.plan_wire import plan_to_json
        from ..host.procinfo import this_process
        from .bootstrap import runs_tests

        # workers watch this process: they stop when it dies (host/watchdog.py)
        context.plan = replace(context.plan, controller=this_process())
        wants_run = context.plan.scope == "worker" and not context.lazy
        if wants_run and runs_tests(lambda dest: config.getoption(dest, None)):
            self._reserve_run(context, specs)
            return
        encoded = plan_to_json(context.plan)
        for spec in specs:
            spec.env[PLAN_ENV] = encoded

    def _reserve_run(self, context: NeuronContext, specs: list[Any]) -> None:
        """Reserve ``len(specs)`` slices in one request and give each worker its own."""
        from ..core.coreset import format_coreset
        from ..core.plan import HANDOFF_ENV, PLAN_ENV, Handoff
        from ..core.plan_wire import plan_to_json
        from ..core.runtime_env import VISIBLE, plugin_port_vars
        from .context import LeaseWaitFailed

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
        handoff = Handoff(
            lease.domain, os.getpid(), _starttime(), frozenset(lease.cores), plugin_port_vars(plan.user_env)
        )
        # every worker, and everything it starts, carries the reservation's lease id: a dead
        # controller's cores are not handed on while any of them lives (locks/lease.py)
        value = context.handoff_of(lease)
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
        changes = {w: s["overrides"] for w, s in self.worker_summaries.items() if s.get("overrides")}
        if not changes:
            return
        from .overrides import emit_warning, overrides_warning

        for var, text in overrides_warning(changes):
            emit_warning(session.config, text, var)


def _starttime() -> int | None:
    from ..host.procinfo import my_starttime

    return my_starttime()


__all__ = ["XdistHooks", "count_workers", "sub_topology"]
