from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_neuron.core.placement import (
    candidate_windows,
    choose_window,
    count_disjoint,
    is_power_of_two,
    reservation_window,
)


def r(first: int, last: int) -> tuple[int, ...]:
    """The inclusive range ``first..last`` as a window."""
    return tuple(range(first, last + 1))


# -- candidate_windows --------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "k", "expected"),
    [
        # powers of two: only aligned windows
        (r(0, 7), 1, tuple((c,) for c in range(8))),
        (r(0, 7), 2, ((0, 1), (2, 3), (4, 5), (6, 7))),
        (r(0, 7), 4, (r(0, 3), r(4, 7))),
        (r(0, 7), 8, (r(0, 7),)),
        (r(0, 31), 32, (r(0, 31),)),
        (r(1, 4), 2, ((2, 3),)),  # (1,2) and (3,4) fit but are not aligned
        ((0, 1, 2, 4, 5, 6, 7), 4, (r(4, 7),)),  # the gap at 3 leaves one aligned window
        (r(4, 11), 8, (r(4, 11),)),  # no aligned window of 8: fall back to the unaligned one
        # fallback: the pool admits no aligned window at all
        ((1, 2), 2, ((1, 2),)),
        (r(1, 4), 4, (r(1, 4),)),
        (r(3, 6), 2, ((4, 5),)),
        (r(5, 7), 2, ((6, 7),)),
        ((1, 2, 5, 6), 2, ((1, 2), (5, 6))),
        # non-powers of two: every contiguous window, by ascending start
        (r(0, 5), 3, (r(0, 2), r(1, 3), r(2, 4), r(3, 5))),
        ((0, 1, 2, 4, 5, 6, 7), 3, (r(0, 2), r(4, 6), r(5, 7))),
        (r(2, 7), 6, (r(2, 7),)),
        (r(0, 6), 7, (r(0, 6),)),
        # nothing fits
        (r(0, 3), 5, ()),
        ((0, 2, 4, 6), 2, ()),
        (r(0, 3), 0, ()),
        ((), 1, ()),
    ],
)
def test_candidate_windows(pool: tuple[int, ...], k: int, expected: tuple[tuple[int, ...], ...]) -> None:
    assert candidate_windows(pool, k) == expected


# -- choose_window ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "k", "free", "expected"),
    [
        # an empty pool hands out the first aligned window
        (r(0, 7), 1, r(0, 7), (0,)),
        (r(0, 31), 8, r(0, 31), r(0, 7)),
        (r(0, 31), 32, r(0, 31), r(0, 31)),
        # best fit: the core whose buddy is busy, not one from an intact block
        (r(0, 7), 1, (0, 1, 2, 3, 5), (5,)),
        (r(0, 7), 1, (0, 1, 2, 3, 4, 5, 7), (7,)),
        (r(0, 7), 2, (0, 1, 2, 3, 6, 7), (6, 7)),
        (r(0, 15), 4, (*r(0, 7), *r(12, 15)), r(12, 15)),
        (r(0, 15), 2, (*r(0, 3), 6, 7, *r(8, 15)), (6, 7)),
        # only aligned windows count for powers of two
        (r(0, 7), 2, (1, 2, 5, 6), None),
        (r(0, 7), 4, r(2, 5), None),
        # non-power-of-two sizes take a tight unaligned run
        (r(0, 7), 3, (0, 1, 3, 4, 5, 7), (3, 4, 5)),
        # nothing fits
        (r(0, 7), 1, (), None),
        (r(0, 7), 2, (0, 2, 4, 6), None),
        (r(0, 7), 8, r(0, 6), None),
        (r(0, 3), 3, (0, 1, 3), None),
        # free cores outside the pool are never handed out
        (r(0, 3), 2, (4, 5), None),
    ],
)
def test_choose_window(
    pool: tuple[int, ...], k: int, free: tuple[int, ...], expected: tuple[int, ...] | None
) -> None:
    assert choose_window(pool, k, free) == expected


TWO_DEVICES = {c: c // 3 for c in range(6)}  # device 0: cores 0-2, device 1: cores 3-5


@pytest.mark.parametrize(
    ("k", "free", "without_devices", "with_devices"),
    [
        (2, r(2, 5), (2, 3), (4, 5)),  # (2,3) spans both devices
        (3, r(2, 5), (2, 3, 4), (3, 4, 5)),
        (3, r(0, 4), (0, 1, 2), (0, 1, 2)),  # (2,3,4) would straddle a 4-block
        (3, (1, 2, 3, 4, 5), (1, 2, 3), (3, 4, 5)),
        # a window across devices is still better than none
        (2, (1, 2, 3), (2, 3), (2, 3)),
    ],
)
def test_choose_window_prefers_one_device(
    k: int, free: tuple[int, ...], without_devices: tuple[int, ...], with_devices: tuple[int, ...]
) -> None:
    assert choose_window(r(0, 5), k, free) == without_devices
    assert choose_window(r(0, 5), k, free, device_of=TWO_DEVICES) == with_devices


def test_choose_window_three_cores_leaves_an_aligned_block() -> None:
    # 3 cores from an empty 8-core pool: (0,1,2) or (5,6,7) keep an aligned 4-block free
    # for the next 4-core request; (2,3,4), which choose_window returns, breaks both blocks.
    pool = r(0, 7)
    window = choose_window(pool, 3, pool)
    assert window is not None
    rest = set(pool) - set(window)
    assert choose_window(pool, 4, rest) is not None, (
        f"took {window}, leaving no 4-core window in {sorted(rest)}"
    )


# -- reservation_window -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "k", "busy", "forbidden", "expected"),
    [
        (r(0, 7), 4, (), (), r(0, 3)),
        (r(0, 7), 4, (0, 1, 4), (), r(4, 7)),  # fewest busy cores
        (r(0, 7), 4, (0, 4), (), r(0, 3)),  # a tie goes to the lowest start
        (r(0, 7), 4, (4,), (0,), r(4, 7)),  # never a core an older waiter reserved...
        (r(0, 7), 4, (), (1, 5), None),  # ...even when that leaves nothing
        (r(0, 7), 8, r(0, 7), (), r(0, 7)),  # every core busy: still the window to wait for
        (r(0, 7), 1, (0, 1, 2, 4, 5, 6, 7), (3,), (0,)),
        (r(0, 7), 1, (0, 1, 2, 4, 6, 7), (), (3,)),
        (r(0, 7), 2, (1, 2, 5), (), (6, 7)),
        (r(0, 3), 8, (), (), None),
    ],
)
def test_reservation_window(
    pool: tuple[int, ...],
    k: int,
    busy: tuple[int, ...],
    forbidden: tuple[int, ...],
    expected: tuple[int, ...] | None,
) -> None:
    assert reservation_window(pool, k, busy, forbidden) == expected


def test_reservation_window_prefers_one_device_on_a_tie() -> None:
    devices = {c: c // 3 for c in range(9)}
    busy = (0, 2, 5, 6, 8)
    # (1,2,3), (2,3,4) and (3,4,5) have one busy core each; only (3,4,5) lies within one device.
    assert reservation_window(r(0, 8), 3, busy, (), device_of=devices) == (3, 4, 5)
    assert reservation_window(r(0, 8), 3, busy, ()) == (1, 2, 3)


# -- properties -----------------------------------------------------------------------


@st.composite
def placements(draw: st.DrawFn) -> tuple[tuple[int, ...], int, frozenset[int], dict[int, int]]:
    pool = tuple(sorted(draw(st.sets(st.integers(0, 40), min_size=1, max_size=41))))
    k = draw(st.integers(1, 16))
    free = frozenset(draw(st.sets(st.integers(0, 44))) | draw(st.sets(st.sampled_from(pool))))
    per_device = draw(st.sampled_from([0, 2, 4, 8]))
    devices = {c: c // per_device for c in pool} if per_device else {}
    return pool, k, free, devices


@settings(max_examples=250, deadline=None)
@given(placements())
def test_chosen_window_is_contiguous_in_the_pool_free_and_aligned(
    case: tuple[tuple[int, ...], int, frozenset[int], dict[int, int]],
) -> None:
    pool, k, free, devices = case
    window = choose_window(pool, k, free, device_of=devices)
    fits = [w for w in candidate_windows(pool, k) if set(w) <= free]
    if window is None:
        assert not fits, f"nothing chosen although {fits[0]} is free"
        return
    assert len(window) == k
    assert window == tuple(range(window[0], window[0] + k)), "not contiguous"
    assert set(window) <= set(pool), "outside the pool"
    assert set(window) <= free, "not entirely free"
    pool_has_aligned = any(all(s + i in pool for i in range(k)) for s in pool if s % k == 0)
    if is_power_of_two(k) and pool_has_aligned:
        assert window[0] % k == 0, f"{window} is not aligned to {k}"


@settings(max_examples=200, deadline=None)
@given(placements(), st.sets(st.integers(0, 40)))
def test_reserved_window_avoids_forbidden_and_has_fewest_busy(
    case: tuple[tuple[int, ...], int, frozenset[int], dict[int, int]], forbidden: set[int]
) -> None:
    pool, k, free, devices = case
    busy = set(pool) - free
    window = reservation_window(pool, k, busy, forbidden, device_of=devices)
    allowed = [w for w in candidate_windows(pool, k) if not forbidden.intersection(w)]
    if window is None:
        assert not allowed
        return
    assert window in allowed
    assert sum(c in busy for c in window) == min(sum(c in busy for c in w) for w in allowed)


@settings(max_examples=250, deadline=None)
@given(placements())
def test_a_request_of_the_whole_pool_is_placed_as_choose_window_would(
    case: tuple[tuple[int, ...], int, frozenset[int], dict[int, int]],
) -> None:
    """lease.py places a request of the whole pool without placement.py; it must agree with it."""
    from pytest_neuron.locks.lease import whole_pool_window

    pool, _, free, devices = case
    free_in_pool = [c for c in pool if c in free]
    assert whole_pool_window(pool, free_in_pool) == choose_window(pool, len(pool), free, device_of=devices)
    assert bool(candidate_windows(pool, len(pool))) == (whole_pool_window(pool, list(pool)) is not None)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40), st.integers(1, 41), st.integers(1, 20))
def test_disjoint_windows_counts_a_consecutive_pool_as_placement_does(start: int, n: int, size: int) -> None:
    """plan.disjoint_windows counts a consecutive pool's windows without placement.py (a gapped
    pool it hands to placement.count_disjoint itself): the two must agree, at any start."""
    from pytest_neuron.core.plan import disjoint_windows

    pool = tuple(range(start, start + n))
    assert disjoint_windows(pool, size) == count_disjoint(pool, size), (pool, size)


@settings(max_examples=200, deadline=None)
@given(placements())
def test_count_disjoint_is_zero_exactly_when_no_window_fits(
    case: tuple[tuple[int, ...], int, frozenset[int], dict[int, int]],
) -> None:
    """lease.py's check that a request can ever fit asks for a count above 0."""
    pool, k, _, _ = case
    count = count_disjoint(pool, k)
    windows = candidate_windows(pool, k)
    assert count * k <= len(pool)
    assert (count == 0) == (not windows)
