"""Starting pytest-neuron in a process: its plan, its role, and the plugins that role needs.

Roles: ``worker`` (an xdist worker: its plan comes from the controller),
``controller`` (an xdist controller: reserves the run's cores in worker
scope, holds none in test scope), ``single`` (pytest without distribution:
one process leases for the run).  A process's context is created once its
role is certain: in ``pytest_load_initial_conftests`` for a worker and for a
run that cannot distribute, else in ``pytest_configure`` (``-n auto`` is
resolved only then).

Which plugins are registered (each only when it has work):

=================  ============================================================
no pool            ``NoCores``: one collection hook (``FailAsking`` under ``--neuron-require``
                   when a test asks for cores)
controller         ``XdistHooks`` (with ``-n`` or ``--tx``), ``Records`` in test scope
single, worker     ``Collection``; ``TestLeases`` in test scope; ``MarkedTests``
                   once a collected test asks for cores; ``NoSlice`` /
                   ``RunWithoutCores`` when the slice could not be had;
                   ``Records`` in a single test-scope run
any, with a pool   ``TracePlugin`` with ``--neuron-trace``
=================  ============================================================
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from ..core.plan import HANDOFF_ENV, HOST_ENV, NESTED, PLAN_ENV
from .keys import CONTEXT_KEY, INHERITED_KEY, NO_POOL_KEY, PLAN_KEY

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.plan import Handoff, RunPlan
    from ..core.topology import Host
    from .context import NeuronContext, Role


def early_cmdline(config: pytest.Config) -> Callable[[str], Any]:
    """Command-line values before pytest's full parse.

    ``pytest_load_initial_conftests`` runs before ``config.option`` is
    filled; pytest's ``known_args_namespace`` holds the values then.  This is
    the one place that reads it; tests/test_plugin.py fails loudly if it
    disappears.
    """
    namespace = config.known_args_namespace
    return lambda dest: getattr(namespace, dest, None)


def _ini(config: pytest.Config) -> Callable[[str], str | None]:
    from .options import read_ini

    return lambda key: read_ini(config, key)


def _option(config: pytest.Config, early: bool) -> Callable[[str], Any]:
    return early_cmdline(config) if early else (lambda dest: config.getoption(dest, None))


def _detect() -> tuple[Host | None, bool]:
    """Host detection for build_plan (host/detect.py, loaded only when a run detects)."""
    from ..host.detect import detect_for_run

    return detect_for_run(os.environ)


def _handoff() -> Handoff | None:
    if HANDOFF_ENV not in os.environ:
        return None
    from ..locks.untrusted import inherited_handoff

    return inherited_handoff(os.environ)


def plan_for(config: pytest.Config, *, early: bool = False) -> RunPlan:
    """The run's plan, built once per config (a usage error for bad input)."""
    if PLAN_KEY in config.stash:
        return config.stash[PLAN_KEY]
    inherited = os.environ.pop(PLAN_ENV, None)
    try:
        if inherited is not None:
            from ..core.plan_wire import plan_from_json

            plan = plan_from_json(inherited)
        else:
            from ..core.planning import build_plan

            plan = build_plan(
                _option(config, early),
                _ini(config),
                os.environ,
                detect=_detect,
                handoff=_handoff(),
            )
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[PLAN_KEY] = plan
    config.stash[INHERITED_KEY] = inherited is not None
    hand_down_host(config, plan)
    return plan


def hand_down_host(config: pytest.Config, plan: RunPlan) -> None:
    """Export the host this run detected to the runs nested in it, until this config ends."""
    if plan.host is None or not plan.detected_here:
        return
    from ..host.envpatch import EnvPatch
    from ..host.hostcache import host_value

    patch = EnvPatch({HOST_ENV: host_value(plan.host)}).apply()
    config.add_cleanup(patch.restore)


def _distributing_early(option: Callable[[str], Any]) -> bool | None:
    """Whether xdist will distribute this run: True, False, or None when not yet known."""
    numprocesses, tx = option("numprocesses"), option("tx")
    if not numprocesses and not tx:
        return False
    if numprocesses in ("auto", "logical"):
        return None
    return True


def may_distribute(config: pytest.Config) -> bool:
    """Whether this process may be the controller of a distributed run (xdist, ``-n`` or ``--tx``,
    and not a worker): then the controller's hooks (plugins/xdist.py) are registered, before
    xdist's own ``pytest_configure`` asks them.  Call after :func:`start`."""
    if not config.pluginmanager.hasplugin("xdist") or config.stash.get(INHERITED_KEY, False):
        return False
    return _distributing_early(early_cmdline(config)) is not False


INFO_ONLY = ("help", "version", "markers", "showfixtures", "show_fixtures_per_test", "collectonly")


def runs_tests(option: Callable[[str], Any]) -> bool:
    """False for --help, --markers, --fixtures, --collect-only and the like.

    They run no test, and must not wait for cores a busy host may not free for minutes.
    """
    return not any(option(dest) for dest in INFO_ONLY)


def _role(config: pytest.Config, early: bool) -> Role | None:
    if config.stash[INHERITED_KEY]:
        return "worker"
    if not config.pluginmanager.hasplugin("xdist"):
        return "single"
    if early:
        known = _distributing_early(early_cmdline(config))
        return None if known is None else ("controller" if known else "single")
    return "controller" if distributing(config) else "single"


def distributing(config: pytest.Config) -> bool:
    """Whether xdist distributes this run (known from ``pytest_configure`` on)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def start(config: pytest.Config, *, early: bool) -> NeuronContext | None:
    """This process's context, created once its role is certain; leases the slice in worker scope.

    Without a pool there is no context at all: one collection hook (plugins/no_pool.py), and
    nothing else of the plugin is imported.
    """
    if CONTEXT_KEY in config.stash:
        return config.stash[CONTEXT_KEY]
    if NO_POOL_KEY in config.stash:
        return None
    plan = plan_for(config, early=early)
    if plan.topology is None:
        from .no_pool import NoCores

        config.stash[NO_POOL_KEY] = True
        require = plan.settings["require"]
        config.pluginmanager.register(NoCores(require.source if require.value else None), "neuron-no-pool")
        return None
    role = _role(config, early)
    if role is None:
        return None  # -n auto: decided in pytest_configure
    from .context import NeuronContext

    context = config.stash[CONTEXT_KEY] = NeuronContext(config, plan, role)
    from ..locks.lockdir import LockDirError

    try:
        context.manager.prepare()
        if os.path.isdir(plan.lock_root / NESTED):
            from ..locks.nested import sweep_nested

            sweep_nested(plan.lock_root)  # nested domains of holders that are gone
    except LockDirError as exc:
        raise pytest.UsageError(str(exc)) from None
    if role == "worker":
        from ..host.watchdog import watch_parent

        watch_parent(plan.controller)
    if role != "controller" and plan.scope == "worker" and runs_tests(_option(config, early)):
        if context.lazy:
            pass  # nested in a lease: the first test that asks for cores leases (plugins/marked.py)
        else:
            context.lease_process_slice()
    if role != "controller" and plan.scope == "test":
        from .test_scope import TestLeases

        # registered before conftests, so their own protocol wrappers run inside its lease
        config.pluginmanager.register(TestLeases(context), "neuron-test-scope")
    return context


def configure(config: pytest.Config) -> NeuronContext | None:
    """Once the role is known: per-test defaults, worker counts, and this role's plugins."""
    context = start(config, early=False)
    if context is None:  # no pool: only what was typed on this command line is checked
        from ..core.settings import TEST_SETTINGS, resolve

        try:
            for spec in TEST_SETTINGS:
                resolve(spec, cmdline=config.getoption(spec.dest), env={}, ini=None)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        return None
    try:
        context.resolve_test_defaults()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    plan, pm = context.plan, config.pluginmanager
    lnc = context.test_defaults["lnc"]
    if plan.topology is not None and lnc.value not in (None, plan.topology.lnc):
        from ..core.lnc import run_lnc_problem

        problem = run_lnc_problem(plan.topology, lnc.value, lnc.source, plan.scope)
        if problem is not None:
            raise pytest.UsageError(problem)
    from ..host.reaper import end_trees_on_signal

    end_trees_on_signal()  # SIGTERM/SIGINT (a cancelled CI job) end the tests' process trees first
    if plan.scope == "test" and context.role != "worker":
        from .reporting import Records

        pm.register(Records(), "neuron-records")  # read by the summary, which a worker does not print
    if context.role == "controller":
        _check_workers(context)
    else:
        from .collection import Collection

        pm.register(Collection(context), "neuron-collection")
    if context.role != "controller" and plan.scope == "worker":
        if context.state.error is not None:
            from .worker_scope import NoSlice, RunWithoutCores

            failed = RunWithoutCores if context.role == "single" else NoSlice
            pm.register(failed(context.state.error), "neuron-no-slice")
        elif context.state.lease is not None:
            context.export(context.default_env())
        elif context.lazy:
            from .marked import MarkedTests

            # registered up front: a nested run's first test that asks for cores leases the slice
            pm.register(MarkedTests(context), "neuron-marked")
    if plan.scope == "test":
        from .scheduler import pool_units, start_test_scope

        start_test_scope(config, plan, context.role, pool_units(context))  # durations, the xdist scheduler
    if plan.value("trace"):
        from .tracing import TracePlugin

        pm.register(TracePlugin(context), "neuron-trace")
    context.report_overrides()
    return context


def _check_workers(context: NeuronContext) -> None:
    from ..core.coreset import format_coreset
    from ..core.workers import count_workers

    workers = count_workers(context.config.getoption("tx", None))
    plan = context.plan
    topo = plan.topology
    if not workers or topo is None:
        return
    plan = context.plan = plan.with_workers(workers)
    if plan.scope != "worker" or plan.slice_size is None or context.lazy:
        return  # a nested run leases lazily: only a test that asks for cores needs a slice
    size = plan.slice_size
    fit = plan.slices_that_fit(size)
    if workers > fit:
        raise pytest.UsageError(
            f"{workers} workers need {workers} slices of {size} core{'s' if size != 1 else ''}, but pool "
            f"{format_coreset(topo.cores)} ({topo.source}) holds only {fit}; use -n {fit} (or -n auto)"
            + (", or a smaller --neuron-cores-per-worker" if size > 1 else "")
        )
