"""What an item asks for: its ``neuron`` marker and the ``neuron_cores`` fixture, read once per item.

Imported only when some item may ask for cores (collection.py finds them) or a per-test hook asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.need import UNMARKED, Need, classify
from .keys import CLASSIFIED_KEY, FIXTURE, MARKER, NEED_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pytest


def classify_item(item: pytest.Item, pool_size: int | None, *, pool_lnc: int = 1) -> Need:
    """The :class:`Need` of ``item`` (collection asks only for the items MarkedNodes finds)."""
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
