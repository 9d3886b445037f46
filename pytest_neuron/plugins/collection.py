"""Collection: which tests may ask for cores (found once), what they ask for, and the plugins it calls for."""

from __future__ import annotations

from itertools import chain, groupby
from operator import attrgetter
from typing import TYPE_CHECKING

import pytest

from .keys import CLASSIFIED_KEY, FIXTURE, MARKER, NEED_KEY

if TYPE_CHECKING:
    from typing import Protocol

    from .context import NeuronContext

    class _Node(Protocol):  # what this module reads of a pytest node (pytest does not export Node)
        @property
        def own_markers(self) -> list[pytest.Mark]: ...

        @property
        def parent(self) -> _Node | None: ...


class MarkedNodes:
    """Which items may ask for cores: a ``neuron`` mark on the item or a parent, or the fixture.

    Reads ``Node.own_markers`` and ``fixturenames`` (public), each parent's marks once: for the
    thousands of unmarked items of a suite this is a few attribute reads per item in C loops,
    where ``get_closest_marker`` walks every parent of every item.  Only an item found here pays
    for ``get_closest_marker`` (classify.py's ``classify_item``).
    """

    def __init__(self) -> None:
        self._parents: dict[int, bool] = {}

    def _own(self, node: _Node) -> bool:
        return any(mark.name == MARKER for mark in node.own_markers)

    def _chain(self, node: _Node | None) -> bool:
        if node is None:
            return False
        key = id(node)
        known = self._parents.get(key)
        if known is None:
            known = self._parents[key] = self._own(node) or self._chain(node.parent)
        return known

    def asking(self, items: list[pytest.Item]) -> list[pytest.Item]:
        """The items that may ask for cores, in order.

        The one pass over every item of collection, written for the common answer (none): items
        are read in C loops (``groupby``, ``map``, ``chain``), about half of what a Python loop
        over them costs, and each parent is judged once.  Only a session where some item or
        parent has a ``neuron`` mark, or an item the fixture, looks at its items one by one.
        """
        if any(self._chain(parent) for parent, _ in groupby(items, _PARENT)):  # siblings are consecutive
            return self._one_by_one(items)
        if any(mark.name == MARKER for mark in chain.from_iterable(map(_OWN_MARKERS, items))):
            return self._one_by_one(items)
        try:
            names = chain.from_iterable(map(_FIXTURENAMES, items))
            return [] if FIXTURE not in names else self._one_by_one(items)
        except AttributeError:  # an item type without fixtures (not a pytest.Function)
            return self._one_by_one(items)

    def _one_by_one(self, items: list[pytest.Item]) -> list[pytest.Item]:
        own = self._own
        return [
            item
            for item in items
            if (item.own_markers and own(item))
            or self._chain(item.parent)
            or FIXTURE in getattr(item, "fixturenames", ())
        ]


_PARENT = attrgetter("parent")
_OWN_MARKERS = attrgetter("own_markers")
_FIXTURENAMES = attrgetter("fixturenames")


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
            from .scheduler import order_items, pool_units  # the order in effect (plugins/scheduler.py)

            # physical size: with per-test LNC a 2-core LNC=2 test is as big as a 4-core LNC=1 one
            order_items(config, ctx.plan, items, pool_units(ctx))
        if marked and not config.pluginmanager.has_plugin("neuron-marked"):
            from .marked import MarkedTests

            config.pluginmanager.register(MarkedTests(ctx), "neuron-marked")
        lease = ctx.state.lease
        if ctx.plan.scope == "worker" and lease is not None and getattr(config.option, "xmlpath", None):
            # JUnit properties of unmarked tests, only when a JUnit report is written
            from ..core.need import UNMARKED

            visible = ctx.visible_in_effect(lease)[1]
            for item in items:
                if not item.stash.get(NEED_KEY, UNMARKED).wants:
                    item.user_properties.append(("neuron_cores", visible))
                    item.user_properties.append(("neuron_wait_seconds", round(lease.wait_seconds, 4)))
                    if ctx.worker:
                        item.user_properties.append(("neuron_worker", ctx.worker))

    def pytest_collection_finish(self) -> None:
        self.context.report_overrides()  # conftests below the rootdir have been imported by now
