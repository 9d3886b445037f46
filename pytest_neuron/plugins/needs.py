"""What an item asks for: the ``neuron`` marker and the ``neuron_cores`` fixture, read once per item."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.need import UNMARKED, Need, classify
from .keys import NEED_KEY

if TYPE_CHECKING:
    import pytest

FIXTURE = "neuron_cores"


def asks_for_cores(item: pytest.Item) -> bool:
    return item.get_closest_marker("neuron") is not None or FIXTURE in getattr(item, "fixturenames", ())


def classify_item(item: pytest.Item, pool_size: int | None) -> Need:
    marker = item.get_closest_marker("neuron")
    uses_fixture = FIXTURE in getattr(item, "fixturenames", ())
    if marker is None and not uses_fixture:
        return UNMARKED
    return classify(
        None if marker is None else (marker.args, marker.kwargs),
        uses_fixture,
        nodeid=item.nodeid,
        pool_size=pool_size,
    )


def need_of(item: pytest.Item, pool_size: int | None) -> Need:
    """The item's :class:`Need`; classified now if it never went through collection here."""
    need = item.stash.get(NEED_KEY, None)
    if need is None:
        need = item.stash[NEED_KEY] = classify_item(item, pool_size)
    return need
