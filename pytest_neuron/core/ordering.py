"""The order tests are handed out in (test scope): pure functions, no pytest.

Three rules, chosen by ``--neuron-order``:

* ``collection``: pytest's order.
* ``biggest-first``: the tests asking for more cores first (a stable sort, so
  equal requests keep their order).  A 32-core test started while the pool is
  empty waits for nothing; started late, it waits for every core to drain.
* ``durations``: the durations recorded by the last run.  First the tests that
  cannot share the pool with a test of their own size (more than half the
  pool): they run one after another while the pool is empty, where they drain
  no core.  Then everything else by core-seconds (cores x seconds), largest
  first: the long tests and the wide ones start early, and the tail is made of
  short, narrow tests that fill the gaps (a wide test in the tail makes cores
  drain for it; a long one ends the run late).  Ties go to the test asking for
  more cores.  In the simulations of bench/packing_model.py, longest-first did
  as well on average, but left the short wide tests for the tail, which real
  runs pay for.

A test without a recorded duration counts as the median recorded duration of
tests of its size (of all recorded tests if none of its size was recorded; 1 s
if nothing was).  With nothing recorded, ``durations`` is ``biggest-first``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

UNKNOWN_SECONDS = 1.0


@dataclass(frozen=True)
class Record:
    """What one run measured of one test: the cores it held and for how long."""

    cores: int
    seconds: float  # setup + call + teardown: the time it held its cores
    call: float  # the call phase alone
    wait: float  # seconds it waited for its cores before setup


def estimates(cores: Sequence[int], known: Sequence[float | None]) -> list[float]:
    """Each test's expected seconds: its record, else the median of its size, else of all."""
    by_size: dict[int, list[float]] = {}
    for k, seconds in zip(cores, known, strict=True):
        if seconds is not None:
            by_size.setdefault(k, []).append(seconds)
    everything = [s for values in by_size.values() for s in values]
    overall = statistics.median(everything) if everything else UNKNOWN_SECONDS
    medians = {k: statistics.median(values) for k, values in by_size.items()}
    return [
        seconds if seconds is not None else medians.get(k, overall)
        for k, seconds in zip(cores, known, strict=True)
    ]


def ranking(
    order: str,
    cores: Sequence[int],
    known: Sequence[float | None] | None = None,
    *,
    pool: int,
) -> list[int]:
    """The indices of ``cores`` in the order they should start, best first."""
    n = len(cores)
    if order == "collection":
        return list(range(n))
    if order == "biggest-first" or not known or all(s is None for s in known):
        return sorted(range(n), key=lambda i: (-cores[i], i))
    if order != "durations":
        raise ValueError(f"unknown order {order!r}")
    seconds = estimates(cores, known)

    def key(i: int) -> tuple[int, float, int, int]:
        alone = cores[i] * 2 > pool  # cannot run next to another test of its size
        return (0 if alone else 1, -cores[i] * seconds[i], -cores[i], i)

    return sorted(range(n), key=key)


def records_from(raw: object) -> dict[str, Record]:
    """The records in a cache value; entries of another shape (a planted or older file) are skipped."""
    if not isinstance(raw, dict):
        return {}
    records: dict[str, Record] = {}
    for nodeid, entry in raw.items():
        if not isinstance(nodeid, str) or not isinstance(entry, list) or len(entry) != 4:
            continue
        cores, seconds, call, wait = entry
        if not isinstance(cores, int) or isinstance(cores, bool) or cores < 0:
            continue
        numbers = (seconds, call, wait)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1e9 for x in numbers):
            continue
        records[nodeid] = Record(cores, float(seconds), float(call), float(wait))
    return records


def records_to(records: Mapping[str, Record]) -> dict[str, list[float | int]]:
    """The cache value of ``records`` (JSON: lists, not objects, to keep it small)."""
    return {
        nodeid: [r.cores, round(r.seconds, 4), round(r.call, 4), round(r.wait, 4)]
        for nodeid, r in sorted(records.items())
    }
