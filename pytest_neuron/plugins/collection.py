"""Collection: what each test asks for, decided once, and the plugins that this calls for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ..core.marker import call_params
from ..core.need import UNMARKED, Need, classify
from .keys import NEED_KEY

if TYPE_CHECKING:
    from .context import NeuronContext

FIXTURE = "neuron_cores"


def asks_for_cores(item: pytest.Item) -> bool:
    return item.get_closest_marker("neuron") is not None or FIXTURE in getattr(item, "fixturenames", ())


def classify_item(item: pytest.Item, pool_size: int | None, pool_lnc: int = 1) -> Need:
    marker = item.get_closest_marker("neuron")
    uses_fixture = FIXTURE in getattr(item, "fixturenames", ())
    if marker is None and not uses_fixture:
        return UNMARKED
    return classify(
        None if marker is None else (marker.args, marker.kwargs),
        uses_fixture,
        nodeid=item.nodeid,
        pool_size=pool_size,
        params=call_params(item),  # cores="tp_degree": the count from this item's parameters
        pool_lnc=pool_lnc,
    )


def need_of(item: pytest.Item, pool_size: int | None) -> Need:
    """The item's :class:`Need`; classified now if it never went through collection here."""
    need = item.stash.get(NEED_KEY, None)
    if need is None:
        need = item.stash[NEED_KEY] = classify_item(item, pool_size)
    return need


class Collection:
    """Classifies every item once; sorts test scope biggest-first; registers what the items call for."""

    def __init__(self, context: NeuronContext) -> None:
        self.context = context

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        ctx = self.context
        pool_size = ctx.plan.pool_size
        pool_lnc = 1 if ctx.plan.topology is None else ctx.plan.topology.lnc
        marked = False
        for item in items:
            need = item.stash[NEED_KEY] = classify_item(item, pool_size, pool_lnc)
            marked = marked or need.wants
        if ctx.plan.scope == "test" and ctx.plan.value("order") == "biggest-first":
            # Big requests first, while the pool is empty: a 32-core test started late waits for
            # every core to drain.  A stable sort, identical in every xdist worker.
            # Physical cores: with per-test LNC a 2-core LNC=2 test is as big as a 4-core LNC=1 one.
            items.sort(
                key=lambda item: item.stash[NEED_KEY].cores * ctx.lnc_of(item.stash[NEED_KEY]), reverse=True
            )
        if marked and not config.pluginmanager.has_plugin("neuron-marked"):
            from .marked import MarkedTests

            config.pluginmanager.register(MarkedTests(ctx), "neuron-marked")
        lease = ctx.state.lease
        if ctx.plan.scope == "worker" and lease is not None and getattr(config.option, "xmlpath", None):
            # JUnit properties of unmarked tests, only when a JUnit report is written
            visible = ctx.visible_in_effect(lease)[1]
            for item in items:
                if not item.stash[NEED_KEY].wants:
                    item.user_properties.append(("neuron_cores", visible))
                    item.user_properties.append(("neuron_wait_seconds", round(lease.wait_seconds, 4)))
                    if ctx.worker:
                        item.user_properties.append(("neuron_worker", ctx.worker))

    def pytest_collection_finish(self) -> None:
        # conftests below the rootdir have been imported by now
        from .reporting import report_overrides

        report_overrides(self.context)
