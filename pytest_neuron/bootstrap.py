"""Starting pytest-neuron in a process: which role it plays, and its plan.

Roles: ``worker`` (an xdist worker: its plan comes from the controller),
``controller`` (an xdist controller: holds no cores), ``single`` (pytest
without distribution: one process leases for the run).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from .lockdir import LockDirError, prepare_domain
from .plan import PLAN_ENV, RunPlan, build_plan, plan_from_json
from .session import NeuronSession, NoCores, NoCoresRequired

if TYPE_CHECKING:
    from collections.abc import Callable

SESSION_KEY = pytest.StashKey[NeuronSession]()
PLAN_KEY = pytest.StashKey[RunPlan]()


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


def plan_for(config: pytest.Config, *, early: bool = False) -> RunPlan:
    """The run's plan, built once per config (a usage error for bad input)."""
    if PLAN_KEY in config.stash:
        return config.stash[PLAN_KEY]
    inherited = os.environ.pop(PLAN_ENV, None)
    try:
        if inherited is not None:
            plan = plan_from_json(inherited)
        else:
            cmdline = early_cmdline(config) if early else (lambda dest: config.getoption(dest, None))
            plan = build_plan(cmdline, _ini(config), os.environ)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[PLAN_KEY] = plan
    config.stash[ROLE_KEY] = "worker" if inherited is not None else ""
    return plan


ROLE_KEY = pytest.StashKey[str]()


def _distributing(option: Callable[[str], Any]) -> bool | None:
    """Whether xdist will distribute this run: True, False, or None when not yet known."""
    numprocesses, tx = option("numprocesses"), option("tx")
    if not numprocesses and not tx:
        return False
    if numprocesses in ("auto", "logical"):
        return None
    return True


INFO_ONLY = ("help", "version", "markers", "showfixtures", "show_fixtures_per_test", "collectonly")


def _runs_tests(option: Callable[[str], Any]) -> bool:
    """False for --help, --markers, --fixtures, --collect-only and the like.

    They run no test, and must not wait for cores a busy host may not free for minutes.
    """
    return not any(option(dest) for dest in INFO_ONLY)


def start(config: pytest.Config, *, early: bool) -> NeuronSession:
    """Create (once) and register this process's session; lease early when the role is certain."""
    if SESSION_KEY in config.stash:
        session = config.stash[SESSION_KEY]
    else:
        plan = plan_for(config, early=early)
        role = config.stash[ROLE_KEY] or "undecided"
        session = NeuronSession(config, plan, role)
        config.stash[SESSION_KEY] = session
        if plan.topology is not None:
            config.pluginmanager.register(session, "neuron-session")
        else:  # nothing to lease: no per-test hooks at all
            hooks = NoCoresRequired(session) if plan.value("require") else NoCores()
            config.pluginmanager.register(hooks, "neuron-session")
    option = early_cmdline(config) if early else (lambda dest: config.getoption(dest, None))
    if session.role == "undecided":
        distributing = _distributing(option) if config.pluginmanager.hasplugin("xdist") else False
        if early and distributing is not False:
            return session
        if not early:
            dist = config.getoption("dist", "no") if config.pluginmanager.hasplugin("xdist") else "no"
            distributing = dist != "no" and bool(config.getoption("tx", None))
        session.role = "controller" if distributing else "single"
    if session.plan.topology is not None:
        try:
            prepare_domain(session.plan.lock_root, session.plan.lock_source)
        except LockDirError as exc:
            raise pytest.UsageError(str(exc)) from None
    if session.role in ("single", "worker") and session.plan.scope == "worker" and _runs_tests(option):
        session.lease_process_slice()
    return session
