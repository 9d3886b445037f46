"""Which NeuronCores exist on this host, and which this run may use.

A run's :class:`Topology` is found by a chain of providers, tried in order; the
first that answers wins and the result names it in ``source``:

1. ``--neuron-cores`` / ini ``neuron_cores``: an explicit pool, trusted as given
   (this is how a machine without Neuron devices simulates one);
2. an inherited ``NEURON_RT_VISIBLE_CORES``: that set is the pool;
3. an inherited ``NEURON_RT_NUM_CORES=N`` (N > 0): N of the detected cores;
4. ``neuron-ls --json-output`` (run by host/detect.py, parsed by detection.py);
5. ``/dev/neuron*`` devices times the cores per device of the instance family (host/detect.py);
6. nothing: no Neuron cores here.

Logical core indices are what ``NEURON_RT_VISIBLE_CORES`` names.  With a logical
NeuronCore config (LNC) of 2, logical core ``i`` covers physical cores ``2i`` and
``2i+1``; locks are always taken on physical cores, so runs at LNC=1 and LNC=2
on one host can never overlap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_neuron.core.coreset import CoreSetError, format_coreset, parse_coreset

from .record import field, record, replace

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

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


def _lnc_from_env(env: Mapping[str, str]) -> int | None:
    value = env.get(LNC_VARIABLE, "").strip()
    if value in ("", "1", "2"):
        return int(value) if value else None
    raise TopologyError(
        f"invalid logical NeuronCore config {value!r} from environment variable {LNC_VARIABLE}: "
        "expected 1 or 2"
    )


def _parse(value: str, source: str) -> frozenset[int]:
    try:
        return parse_coreset(value, source)
    except CoreSetError as exc:
        raise TopologyError(str(exc)) from exc


def _from_host(host: Host, cores: Collection[int], source: str, limit: int | None = None) -> Topology:
    ordered = tuple(sorted(cores))
    return Topology(
        cores=ordered,
        physical={core: host.physical[core] for core in ordered},
        source=source,
        lnc=host.lnc,
        device_of={core: host.device_of[core] for core in ordered if core in host.device_of},
        instance_type=host.instance_type,
        limit=limit,
    )


def resolve_topology(
    *,
    explicit: tuple[str, str] | None,
    env: Mapping[str, str],
    detect: Callable[[], Host | None],
) -> Topology | None:
    """Run the provider chain of the module docstring; ``None`` when no core is found.

    ``explicit`` is ``(value, source)`` from ``--neuron-cores`` or ini
    ``neuron_cores``; ``detect`` runs providers 4 and 5 and is called at most once.
    """
    visible = env.get(VISIBLE_CORES, "").strip()
    visible_source = f"environment variable {VISIBLE_CORES}"
    if explicit is not None:
        value, source = explicit
        pool = _parse(value, source)
        if visible:
            outer = _parse(visible, visible_source)
            if not pool <= outer:
                raise TopologyError(
                    f"{source} {value.strip()!r} names core {min(pool - outer)}, outside the inherited "
                    f"{VISIBLE_CORES}={visible!r}; name only cores within {format_coreset(outer)}"
                )
        return identity_topology(pool, f"{source}={value.strip()}", lnc=_lnc_from_env(env) or 1)

    if visible:
        pool = _parse(visible, visible_source)
        host = detect()
        if host is None:
            return identity_topology(pool, f"{VISIBLE_CORES}={visible}", lnc=_lnc_from_env(env) or 1)
        try:
            parse_coreset(
                visible, visible_source, within=host.cores, within_name=f"the cores of {host.source}"
            )
        except CoreSetError as exc:
            raise TopologyError(f"{exc}; to use it as given, pass --neuron-cores={visible}") from exc
        return _from_host(host, pool, f"{VISIBLE_CORES}={visible} of {host.source}")

    number = env.get(NUM_CORES, "").strip()
    if number and not (number.isascii() and number.isdigit()):
        raise TopologyError(
            f"invalid {NUM_CORES} {number!r} from the environment: expected a whole number of cores "
            "(0 means all)"
        )
    count = int(number) if number else 0
    host = detect()
    if count == 0:
        return None if host is None else replace(_from_host(host, host.cores, host.source), whole_host=True)
    if host is None:
        raise TopologyError(
            f"{NUM_CORES}={count} is set in the environment but no Neuron device was found; "
            "name the cores with --neuron-cores"
        )
    if count > len(host.cores):
        raise TopologyError(
            f"{NUM_CORES}={count} from the environment asks for more cores than {host.source} "
            f"has ({len(host.cores)}: {format_coreset(host.cores)}); expected at most {len(host.cores)}"
        )
    return _from_host(host, host.cores, f"{NUM_CORES}={count} of {host.source}", limit=count)
