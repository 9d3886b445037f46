"""What one collected test needs from the plugin, decided once at collection.

pytest's skipping plugin evaluates a test's xfail marks once into
``item.stash``; this module does the same for the ``neuron`` marker and the
``neuron_cores`` fixture.  Nothing after collection asks for the marker
again, and every test that asks for nothing shares the one :data:`UNMARKED`
value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .record import field, record

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .marker import Request


@record
class Need:
    """``wants``: the test asked for cores (a ``neuron`` marker or the ``neuron_cores`` fixture).

    ``cores``: how many it runs with (1 unless its marker says otherwise);
    ``settings``: the runtime settings its marker gave; ``error``: the one-line
    message of a bad marker (the test fails at setup with it).
    """

    wants: bool
    cores: int = 1
    settings: Mapping[str, object] = field(default_factory=dict)
    error: str | None = None

    @property
    def request(self) -> Request | None:
        if not self.wants or self.error is not None:
            return None
        from .marker import Request

        return Request(self.cores, self.settings)


UNMARKED = Need(wants=False)
FIXTURE_ONLY = Need(wants=True)


def classify(
    marker: tuple[Sequence[Any], Mapping[str, Any]] | None,
    uses_fixture: bool,
    *,
    nodeid: str,
    pool_size: int | None,
    params: Mapping[str, object] | None = None,
    pool_lnc: int = 1,
) -> Need:
    """The :class:`Need` of one test from its closest ``neuron`` marker (args, kwargs) and fixtures."""
    if marker is None:
        return FIXTURE_ONLY if uses_fixture else UNMARKED
    from .marker import MarkerError, parse_marker  # only for a test that has a marker

    args, kwargs = marker
    try:
        request = parse_marker(
            args, kwargs, nodeid=nodeid, pool_size=pool_size, params=params, pool_lnc=pool_lnc
        )
    except MarkerError as exc:
        return Need(wants=True, error=str(exc))
    return Need(wants=True, cores=request.cores, settings=request.settings)
