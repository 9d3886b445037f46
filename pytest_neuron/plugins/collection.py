"""Collection: what each test asks for, decided once, and the plugins that this calls for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ..core.need import UNMARKED
from .keys import CLASSIFIED_KEY, NEED_KEY
from .needs import MarkedNodes

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.need import Need
    from .context import NeuronContext


def physical_size(ctx: NeuronContext, need: Need) -> int:
    return need.cores * ctx.lnc_of(need)


def pool_units(ctx: NeuronContext) -> Callable[[pytest.Item], int]:
    """How many of the pool's cores an item's window takes (its cores at its own LNC, in the pool's
    numbering: a 2-core LNC=2 test takes 4 cores of an LNC=1 pool)."""
    topo = ctx.plan.topology
    per = 1 if topo is None else max(1, topo.lnc)

    def cores_of(item: pytest.Item) -> int:
        return -(-physical_size(ctx, item.stash.get(NEED_KEY, UNMARKED)) // per)

    return cores_of


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
        asking = MarkedNodes().asking(items)  # the others are unmarked: no stash entry
        if asking:
            from .classify import classify_item

            for item in asking:
                need = item.stash[NEED_KEY] = classify_item(item, pool_size, pool_lnc=pool_lnc)
                marked = marked or need.wants
        config.stash[CLASSIFIED_KEY] = True
        if ctx.plan.scope == "test":
            from .scheduler import order_items  # the order in effect (plugins/scheduler.py)

            # physical size: with per-test LNC a 2-core LNC=2 test is as big as a 4-core LNC=1 one
            order_items(config, ctx.plan, items, pool_units(ctx))
        if marked and not config.pluginmanager.has_plugin("neuron-marked"):
            from .marked import MarkedTests

            config.pluginmanager.register(MarkedTests(ctx), "neuron-marked")
        lease = ctx.state.lease
        if ctx.plan.scope == "worker" and lease is not None and getattr(config.option, "xmlpath", None):
            # JUnit properties of unmarked tests, only when a JUnit report is written
            visible = ctx.visible_in_effect(lease)[1]
            for item in items:
                if not item.stash.get(NEED_KEY, UNMARKED).wants:
                    item.user_properties.append(("neuron_cores", visible))
                    item.user_properties.append(("neuron_wait_seconds", round(lease.wait_seconds, 4)))
                    if ctx.worker:
                        item.user_properties.append(("neuron_worker", ctx.worker))

    def pytest_collection_finish(self) -> None:
        self.context.report_overrides()  # conftests below the rootdir have been imported by now
