"""pytest11 entry point of pytest-neuron: hook functions only; plugins/bootstrap.py decides the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .plugins.bootstrap import configure, may_distribute, start
from .plugins.keys import CONTEXT_KEY, PLAN_KEY
from .plugins.options import MARKER_DOC, add_options

if TYPE_CHECKING:
    from pathlib import Path

    from .plugins.state import NeuronCores


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    start(early_config, early=True)
    pm = early_config.pluginmanager
    if not pm.has_plugin("neuron-xdist") and may_distribute(early_config):
        from .plugins.xdist import XdistHooks

        pm.register(XdistHooks(), "neuron-xdist")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_DOC)
    configure(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    context = config.stash.get(CONTEXT_KEY, None)
    if context is None:
        plan = config.stash.get(PLAN_KEY, None)
        if plan is None or plan.topology is not None:
            return []
        from .core.report import header_lines  # no pool: one line, and no context at all

        return header_lines(plan, "single", verbose=False)
    if context.role == "worker":
        return []  # nobody sees an xdist worker's header; its controller prints the run's
    from .plugins.reporting import header

    return header(context)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    context = session.config.stash.get(CONTEXT_KEY, None)
    if context is None or context.plan.topology is None:
        return
    context.report_overrides()
    output = getattr(session.config, "workeroutput", None)  # xdist's channel back to the controller
    if isinstance(output, dict):
        output["neuron"] = context.process_summary()
    if context.trace is not None and context.role != "worker":
        from .host.procinfo import open_devices
        from .plugins.trace import finish_run

        finish_run(context.trace, context.state.lease, open_devices(context.device_prefix))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    context = config.stash.get(CONTEXT_KEY, None)
    if context is None or context.role == "worker":  # a worker's summary travels to its controller
        return
    from .plugins.reporting import summary

    hooks = config.pluginmanager.get_plugin("neuron-xdist")
    lines = summary(context, getattr(hooks, "worker_summaries", {}), getattr(hooks, "notices", []))
    if lines:
        terminalreporter.ensure_newline()  # else a pending progress line ends in a blank line under the rule
        terminalreporter.section("neuron")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    context = config.stash.get(CONTEXT_KEY, None)
    if context is None or context.plan.topology is None:
        return
    context.release_process_slice()
    if context.trace is not None:
        context.trace.close()


@pytest.fixture
def neuron_cores(request: pytest.FixtureRequest) -> NeuronCores:
    """The NeuronCores this test runs with (skips when there are none)."""
    from .plugins.classify import need_of
    from .plugins.marked import lease_of
    from .plugins.state import cores_for

    context = request.config.stash.get(CONTEXT_KEY, None)
    cores = None
    if context is not None and context.plan.topology is not None:
        lnc = context.lnc_of(need_of(request.node, context.plan.pool_size))
        cores = cores_for(context, *lease_of(context, request.node), lnc=lnc)
    if cores is None:
        pytest.skip("no Neuron cores for this test: no pool (pass --neuron-cores to simulate one)")
    return cores


@pytest.fixture
def neuron_work_dir(neuron_cores: NeuronCores, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of this lease's own, unique across runs on the host (named after its key).

    Tests that share a lease (a worker's slice) share it, so compile artifacts are reused
    within the lease; another lease, of this run or another, never sees it.
    """
    path = tmp_path_factory.getbasetemp() / f"neuron-{neuron_cores.key}"
    path.mkdir(exist_ok=True)
    return path
