"""Registered instead of everything else when there is no pool: no per-test hook at all."""

from __future__ import annotations

import pytest

from .needs import MarkedNodes, asks_for_cores

NO_CORES = (
    "no Neuron cores: no device was found on this host and no pool was given "
    "(pass --neuron-cores=0-7 to simulate one, or run on a Neuron host)"
)


class NoCores:
    """Tests that ask for cores get a skip marker at collection (the report points at the test)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        skip = pytest.mark.skip(reason=NO_CORES)
        marked = MarkedNodes()
        for item in items:
            if marked.asks(item):
                item.add_marker(skip)


class NoCoresRequired:
    """:class:`NoCores` under ``--neuron-require``: tests that ask for cores fail at setup."""

    def __init__(self, source: str) -> None:
        self.source = source

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if asks_for_cores(item):
            pytest.fail(f"{NO_CORES}; failing because of --neuron-require ({self.source})", pytrace=False)
