"""The order in which waiting requests are served (pytest_neuron/locks/waiters.py), as a pure table."""

from __future__ import annotations

from pytest_neuron.locks.waiters import Waiter, available_to, served_first

ALL = set(range(8))


def waiter(ticket: str, k: int, reserved: tuple[int, ...] = ()) -> Waiter:
    windows = tuple(tuple(range(s, s + k)) for s in range(0, 8, k))
    return Waiter(ticket, 1, None, k, windows, reserved, 0.0, ticket)


def test_a_bigger_waiter_goes_before_an_older_smaller_one() -> None:
    small_old, big_new = waiter("001", 1), waiter("002", 4)
    # four free cores: the 4-core waiter takes them although it came second
    assert served_first({0, 1, 2, 3}, [small_old, big_new]) == ["002"]
    assert available_to(1, "001", {0, 1, 2, 3}, [small_old, big_new]) == set()
    # with more room, the smaller one gets what is left over
    assert served_first({0, 1, 2, 3, 4}, [small_old, big_new]) == ["002", "001"]
    assert available_to(1, "001", {0, 1, 2, 3, 4}, [small_old, big_new]) == {4}


def test_a_new_request_ranks_after_waiters_of_its_size() -> None:
    assert available_to(2, None, {0, 1}, [waiter("001", 2)]) == set()
    assert available_to(2, None, {0, 1, 2, 3}, [waiter("001", 2)]) == {2, 3}
    # a bigger new request outranks a smaller waiter
    assert available_to(4, None, {0, 1, 2, 3}, [waiter("001", 2)]) == {0, 1, 2, 3}


def test_a_big_waiter_that_does_not_fit_lets_smaller_ones_take_free_cores() -> None:
    big = waiter("001", 8)
    assert available_to(1, None, {0, 1}, [big]) == {0, 1}
    assert served_first({0, 1}, [big]) == []


def test_a_reservation_holds_against_everyone_ranked_below() -> None:
    aged_big = waiter("001", 4, reserved=(0, 1, 2, 3))
    assert available_to(1, None, ALL, [aged_big]) == {4, 5, 6, 7}
    assert available_to(2, "009", {0, 1, 4, 5}, [aged_big]) == {4, 5}
    # the reserving waiter itself may take its window
    assert available_to(4, "001", ALL, [aged_big]) == ALL
    # and is served first once its window is free
    assert served_first(ALL, [waiter("000", 1), aged_big]) == ["001", "000"]
