"""Where a request for ``k`` cores goes: pure window placement.

A window is ``k`` consecutive logical core indices, all in the pool (the runtime
rejects gaps).  When ``k`` is a power of two the window starts at a multiple of
``k`` (collectives need it); a pool that has no aligned window of that size at
all (say ``1-2`` for two cores) falls back to unaligned windows rather than
refusing a request that plainly fits.

Among the free windows, :func:`choose_window` is best-fit: it prefers a window
inside one device, then the one whose surrounding free space is smallest, so
that large aligned windows stay available for large requests.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

Window = tuple[int, ...]


def is_power_of_two(k: int) -> bool:
    return k > 0 and k & (k - 1) == 0


@lru_cache(maxsize=256)
def candidate_windows(pool: tuple[int, ...], k: int) -> tuple[Window, ...]:
    """Every window of ``k`` cores the pool admits, by ascending start."""
    if k <= 0:
        return ()
    members = set(pool)
    windows = [
        tuple(range(start, start + k))
        for start in sorted(members)
        if all(start + i in members for i in range(k))
    ]
    if is_power_of_two(k):
        aligned = [w for w in windows if w[0] % k == 0]
        if aligned:
            return tuple(aligned)
    return tuple(windows)


def count_disjoint(pool: tuple[int, ...], k: int) -> int:
    """How many disjoint windows of ``k`` cores the pool holds at once (taken by ascending start)."""
    taken: set[int] = set()
    count = 0
    for window in candidate_windows(pool, k):
        if not taken.intersection(window):
            taken.update(window)
            count += 1
    return count


class _FreeMap:
    """Prefix counts of free cores, so "is this block all free" costs O(1)."""

    def __init__(self, free: frozenset[int]) -> None:
        self.free = free
        top = max(free, default=-1) + 2
        self.prefix = [0] * (top + 1)
        for i in range(top):
            self.prefix[i + 1] = self.prefix[i] + (i in free)

    def all_free(self, start: int, stop: int) -> bool:
        if start < 0 or stop >= len(self.prefix):
            return False
        return self.prefix[stop] - self.prefix[start] == stop - start

    def free_block(self, window: Window) -> int:
        """The largest aligned power-of-two block around ``window`` that is all free."""
        size = len(window)
        block = 1
        while block < size:
            block *= 2
        best = size
        while True:
            start = (window[0] // block) * block
            if start + block < window[-1] + 1 or not self.all_free(start, start + block):
                return best
            best = block
            block *= 2

    def free_run(self, window: Window) -> int:
        """The length of the maximal contiguous free run that holds ``window``."""
        lo, hi = window[0], window[-1]
        while lo - 1 in self.free:
            lo -= 1
        while hi + 1 in self.free:
            hi += 1
        return hi - lo + 1


def _enclosing_block(window: Window) -> int:
    """The smallest aligned power-of-two block that holds the whole window.

    An odd-sized window that straddles a block boundary splits two blocks;
    preferring small enclosing blocks keeps large aligned windows whole.
    """
    block = 1
    while block < len(window) or window[0] // block != window[-1] // block:
        block *= 2
    return block


def _crosses_device(window: Window, device_of: Mapping[int, int]) -> bool:
    if not device_of:
        return False
    return len({device_of.get(c, -1) for c in window}) > 1


def choose_window(
    pool: Sequence[int],
    k: int,
    free: Collection[int],
    *,
    device_of: Mapping[int, int] | None = None,
) -> Window | None:
    """The best free window of ``k`` cores, or ``None`` when none is free.

    ``free`` is the set of logical cores that may be taken now (free and not
    reserved for a waiter ranked above this request).
    """
    free_set = frozenset(free)
    if len(free_set) < k:
        return None
    devices = tuple(sorted(device_of.items())) if device_of else ()
    return _choose(tuple(sorted(pool)), k, free_set, devices)


@lru_cache(maxsize=1024)
def _choose(
    pool: tuple[int, ...], k: int, free_set: frozenset[int], device_items: tuple[tuple[int, int], ...]
) -> Window | None:
    """:func:`choose_window`, cached: a pool's free sets repeat (an idle pool, every time)."""
    devices = dict(device_items)
    fmap = _FreeMap(free_set)
    smallest = 1 << (k - 1).bit_length()
    tightest = (0, smallest, k, k)
    best: tuple[tuple[int, int, int, int, int], Window] | None = None
    for window in candidate_windows(pool, k):
        if not fmap.all_free(window[0], window[-1] + 1):
            continue
        score = (
            int(_crosses_device(window, devices)),
            _enclosing_block(window),
            fmap.free_block(window),
            fmap.free_run(window),
            window[0],
        )
        if best is None or score < best[0]:
            best = (score, window)
            if score[:4] == tightest:
                break  # nothing can score better: one device, smallest block, no free neighbours
    return None if best is None else best[1]


def reservation_window(
    pool: Sequence[int],
    k: int,
    busy: Collection[int],
    forbidden: Collection[int],
    *,
    device_of: Mapping[int, int] | None = None,
) -> Window | None:
    """The window a waiting request should reserve: it drains soonest.

    Chooses, among windows that avoid ``forbidden`` (what waiters ranked
    above it reserved), the one with the fewest ``busy`` cores.  Once reserved, no newer
    request may take a core in it, so its busy count only falls and the waiter
    gets it as soon as its current holders finish: this bounds the wait of a
    large request behind a stream of small ones.
    """
    busy_set, forbidden_set = frozenset(busy), frozenset(forbidden)
    devices = device_of or {}
    best: tuple[tuple[int, int, int], Window] | None = None
    for window in candidate_windows(tuple(sorted(pool)), k):
        if forbidden_set.intersection(window):
            continue
        score = (sum(c in busy_set for c in window), int(_crosses_device(window, devices)), window[0])
        if best is None or score < best[0]:
            best = (score, window)
    return None if best is None else best[1]
