"""The pool of a run and the host it is on: the values, and the names the runtime reads.

Logical core indices are what ``NEURON_RT_VISIBLE_CORES`` names.  With a logical
NeuronCore config (LNC) of 2, logical core ``i`` covers physical cores ``2i`` and
``2i+1``; locks are always taken on physical cores, so runs at LNC=1 and LNC=2
on one host can never overlap.  Which cores a run may use is found by planning.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .record import field, record

if TYPE_CHECKING:
    from collections.abc import Mapping

VISIBLE_CORES = "NEURON_RT_VISIBLE_CORES"
NUM_CORES = "NEURON_RT_NUM_CORES"
LNC_VARIABLE = "NEURON_LOGICAL_NC_CONFIG"
#: Families where a logical NeuronCore config applies (default 2); elsewhere LNC is 1.
LNC_FAMILIES = frozenset({"trn2", "trn2u", "trn3"})


@record
class Topology:
    """The pool of one run.

    ``cores``: the logical core indices this run may hand out, ascending.
    ``physical``: for each of them, the physical cores it covers.
    ``device_of``: for each of them, its Neuron device (empty when unknown,
    as for a simulated pool).
    ``limit``: at most this many cores may be in use by the run at once
    (``NEURON_RT_NUM_CORES``), or ``None``.
    ``whole_host``: the pool is every core detection found on this host (no
    explicit pool, no inherited ``NEURON_RT_VISIBLE_CORES``/``NEURON_RT_NUM_CORES``),
    so the runtime's own default, all cores, is exactly the pool.
    """

    cores: tuple[int, ...]
    physical: Mapping[int, tuple[int, ...]]
    source: str
    lnc: int = 1
    device_of: Mapping[int, int] = field(default_factory=dict)
    instance_type: str | None = None
    limit: int | None = None
    whole_host: bool = False

    @property
    def size(self) -> int:
        """How many cores the run may use at once."""
        return len(self.cores) if self.limit is None else min(self.limit, len(self.cores))

    def physical_cores(self, logical: tuple[int, ...] | frozenset[int]) -> tuple[int, ...]:
        return tuple(sorted(p for core in logical for p in self.physical[core]))


def identity_topology(cores: frozenset[int] | tuple[int, ...], source: str, *, lnc: int = 1) -> Topology:
    """A pool with no detected device: logical core ``i`` covers ``i*lnc .. i*lnc+lnc-1``."""
    ordered = tuple(sorted(cores))
    return Topology(
        cores=ordered,
        physical={c: tuple(range(c * lnc, c * lnc + lnc)) for c in ordered},
        source=source,
        lnc=lnc,
    )


class TopologyError(ValueError):
    """Unusable topology input; ``str()`` is one line that quotes the value and names its source."""


@record
class Host:
    """What detection found on this host (providers 4 and 5).

    ``cores``: every logical core index of the host, ascending; ``physical``
    maps each to its host-global physical cores and ``device_of`` to its device.
    """

    cores: tuple[int, ...]
    physical: Mapping[int, tuple[int, ...]]
    device_of: Mapping[int, int]
    lnc: int
    source: str
    instance_type: str | None = None
