"""pytest11 entry point of pytest-neuron: wires hooks to the modules that do the work."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .bootstrap import SESSION_KEY, start
from .marker import MARKER_DOC
from .options import add_options

if TYPE_CHECKING:
    from .state import NeuronCores


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    if early_config.pluginmanager.hasplugin("xdist") and not early_config.pluginmanager.has_plugin(
        "neuron-xdist"
    ):
        from .xdist_hooks import XdistHooks

        early_config.pluginmanager.register(XdistHooks(), "neuron-xdist")
    start(early_config, early=True)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_DOC)
    session = start(config, early=False)
    session.configure()


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(SESSION_KEY, None)
    return [] if session is None else session.header()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    neuron = session.config.stash.get(SESSION_KEY, None)
    if neuron is not None:
        neuron.finish()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    neuron = config.stash.get(SESSION_KEY, None)
    if neuron is None:
        return
    lines = neuron.summary()
    if lines:
        terminalreporter.ensure_newline()  # else a pending progress line ends in a blank line under the rule
        terminalreporter.section("neuron")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def neuron_cores(request: pytest.FixtureRequest) -> NeuronCores:
    """The NeuronCores this test runs with (skips when there are none)."""
    session = request.config.stash.get(SESSION_KEY, None)
    cores = None if session is None else session.cores_for(request.node)
    if cores is None:
        pytest.skip("no Neuron cores for this test: no pool (pass --neuron-cores to simulate one)")
    return cores
