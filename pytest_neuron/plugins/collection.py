"""Collection: what each test asks for, decided once, and the plugins that this calls for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .keys import NEED_KEY
from .needs import MarkedNodes, classify_item

if TYPE_CHECKING:
    from .context import NeuronContext


class Collection:
    """Classifies every item once; sorts test scope biggest-first; registers what the items call for."""

    def __init__(self, context: NeuronContext) -> None:
        self.context = context

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        ctx = self.context
        pool_size = ctx.plan.pool_size
        marked = False
        nodes = MarkedNodes()
        for item in items:
            need = item.stash[NEED_KEY] = classify_item(item, pool_size, nodes)
            marked = marked or need.wants
        if ctx.plan.scope == "test" and ctx.plan.value("order") == "biggest-first":
            # Big requests first, while the pool is empty: a 32-core test started late waits for
            # every core to drain.  A stable sort, identical in every xdist worker.
            items.sort(key=lambda item: item.stash[NEED_KEY].cores, reverse=True)
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
