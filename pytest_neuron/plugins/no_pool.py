"""Registered instead of everything else when there is no pool: one collection hook, and a per-test
hook only for a ``--neuron-require`` run that has tests asking for cores."""

from __future__ import annotations

import pytest

from .collection import MarkedNodes

NO_CORES = (
    "no Neuron cores: no device was found on this host and no pool was given "
    "(pass --neuron-cores=0-7 to simulate one, or run on a Neuron host)"
)


class NoCores:
    """Tests that ask for cores are found once, at collection: they get a skip marker (the report
    points at the test), or under ``--neuron-require`` (``require``: its source) they fail at setup
    through :class:`FailAsking`, registered only if there are any."""

    def __init__(self, require: str | None = None) -> None:
        self.require = require

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        asking = MarkedNodes().asking(items)
        if not asking:
            return
        if self.require is None:
            skip = pytest.mark.skip(reason=NO_CORES)
            for item in asking:
                item.add_marker(skip)
        elif not config.pluginmanager.has_plugin("neuron-no-pool-fail"):
            config.pluginmanager.register(FailAsking(asking, self.require), "neuron-no-pool-fail")


class FailAsking:
    """Under ``--neuron-require`` without a pool: the tests that ask for cores fail at setup."""

    def __init__(self, items: list[pytest.Item], source: str) -> None:
        self.items = set(items)
        self.message = f"{NO_CORES}; failing because of --neuron-require ({source})"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item in self.items:
            pytest.fail(self.message, pytrace=False)
