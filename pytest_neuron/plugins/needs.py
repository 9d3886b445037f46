"""What an item asks for: the ``neuron`` marker and the ``neuron_cores`` fixture, read once per item."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..core.need import UNMARKED, Need, classify
from .keys import CLASSIFIED_KEY, NEED_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pytest

FIXTURE = "neuron_cores"
MARKER = "neuron"


class _Node(Protocol):  # what this module reads of a pytest node (pytest does not export Node)
    @property
    def own_markers(self) -> list[pytest.Mark]: ...

    @property
    def parent(self) -> _Node | None: ...


class MarkedNodes:
    """Which items may ask for cores: a ``neuron`` mark on the item or a parent, or the fixture.

    Reads ``Node.own_markers`` (public), each parent's once: for the thousands of unmarked items of
    a suite this is a few attribute reads per item inside one comprehension, where
    ``get_closest_marker`` walks every parent of every item.  Only an item found here pays for
    ``get_closest_marker`` (:func:`classify_item`).
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

        The one loop over every item of collection, written for the common answer (no): the
        parents are judged once each, then each item costs an empty ``own_markers``, one set
        membership test and one list membership test.
        """
        parents = {id(item.parent): item.parent for item in items}
        marked = {key for key, parent in parents.items() if self._chain(parent)}
        own = self._own
        return [
            item
            for item in items
            if (item.own_markers and own(item))
            or id(item.parent) in marked
            or FIXTURE in getattr(item, "fixturenames", ())
        ]


def asks_for_cores(item: pytest.Item) -> bool:
    return item.get_closest_marker(MARKER) is not None or FIXTURE in getattr(item, "fixturenames", ())


def classify_item(item: pytest.Item, pool_size: int | None, *, pool_lnc: int = 1) -> Need:
    """The :class:`Need` of ``item`` (collection asks only for the items :meth:`MarkedNodes.asks`)."""
    uses_fixture = FIXTURE in getattr(item, "fixturenames", ())
    marker = item.get_closest_marker(MARKER)
    if marker is None and not uses_fixture:
        return UNMARKED
    own = [m for m in item.own_markers if m.name == MARKER]
    if len({(m.args, tuple(sorted(m.kwargs.items(), key=str))) for m in own}) > 1:
        # stacked markers on one test (a marker nearer the test overriding one on its class or
        # module is fine): which one was meant is not ours to guess
        given = ", ".join(_shown(m) for m in own)
        return Need(
            wants=True,
            error=f"@pytest.mark.neuron on {item.nodeid}: given {len(own)} times ({given}); give it once",
        )
    return classify(
        None if marker is None else (marker.args, marker.kwargs),
        uses_fixture,
        nodeid=item.nodeid,
        pool_size=pool_size,
        params=_call_params(item),  # cores="tp_degree": the count from this item's parameters
        pool_lnc=pool_lnc,
    )


def _shown(mark: pytest.Mark) -> str:
    parts = [repr(a) for a in mark.args] + [f"{k}={v!r}" for k, v in mark.kwargs.items()]
    return f"neuron({', '.join(parts)})"


def need_of(item: pytest.Item, pool_size: int | None) -> Need:
    """The item's :class:`Need`: collection stashes it for the items that may ask for cores, and
    an item collected here without one is unmarked; one that never went through collection here is
    classified now."""
    need = item.stash.get(NEED_KEY, None)
    if need is None:
        if item.config.stash.get(CLASSIFIED_KEY, False):
            return UNMARKED
        need = item.stash[NEED_KEY] = classify_item(item, pool_size)
    return need


def _call_params(item: pytest.Item) -> Mapping[str, object] | None:
    from ..core.marker import call_params  # only for a test that has a marker

    return call_params(item)
