"""Which items may ask for cores (the ``neuron`` marker, the ``neuron_cores`` fixture), found once.

classify.py decides what the items found here ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Protocol

    import pytest

    class _Node(Protocol):  # what this module reads of a pytest node (pytest does not export Node)
        @property
        def own_markers(self) -> list[pytest.Mark]: ...

        @property
        def parent(self) -> _Node | None: ...


FIXTURE = "neuron_cores"
MARKER = "neuron"


class MarkedNodes:
    """Which items may ask for cores: a ``neuron`` mark on the item or a parent, or the fixture.

    Reads ``Node.own_markers`` (public), each parent's once: for the thousands of unmarked items of
    a suite this is a few attribute reads per item inside one comprehension, where
    ``get_closest_marker`` walks every parent of every item.  Only an item found here pays for
    ``get_closest_marker`` (classify.py's ``classify_item``).
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
