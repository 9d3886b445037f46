"""The order rules (pytest_neuron/ordering.py): tables and properties, no pytest runs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_neuron.core.ordering import Record, estimates, ranking, records_from, records_to
from pytest_neuron.core.settings import SettingError, parse_order

sizes = st.sampled_from([0, 1, 2, 4, 8, 16, 32])
seconds = st.one_of(st.none(), st.floats(min_value=0, max_value=1e4, allow_nan=False))


@pytest.mark.parametrize(
    ("order", "cores", "known", "expected"),
    [
        ("collection", [1, 8, 2], None, [0, 1, 2]),
        ("biggest-first", [1, 8, 2, 8], None, [1, 3, 2, 0]),
        # no durations recorded: durations is biggest-first
        ("durations", [1, 8, 2, 8], [None, None, None, None], [1, 3, 2, 0]),
        ("durations", [1, 8, 2, 8], None, [1, 3, 2, 0]),
        # more than half the pool runs first (it cannot share the pool), then most core-seconds first
        ("durations", [1, 32, 2, 8], [9.0, 1.0, 3.0, 0.5], [1, 0, 2, 3]),
        ("durations", [1, 32, 2, 8], [5.0, 1.0, 2.0, 1.0], [1, 3, 0, 2]),
        ("durations", [20, 16, 1], [0.1, 5.0, 1.0], [0, 1, 2]),
        # equal core-seconds: more cores first, then collection order
        ("durations", [1, 4, 4, 2], [8.0, 2.0, 2.0, 4.0], [1, 2, 3, 0]),
        # an unknown 8-core test counts as the median of the 8-core tests (3.0 s: 24 core-seconds)
        ("durations", [8, 8, 8, 1, 8], [1.0, 3.0, 5.0, 20.0, None], [2, 1, 4, 3, 0]),
    ],
)
def test_ranking_table(
    order: str, cores: list[int], known: list[float | None] | None, expected: list[int]
) -> None:
    assert ranking(order, cores, known, pool=32) == expected


@pytest.mark.parametrize(
    ("cores", "known", "expected"),
    [
        ([1, 1, 1], [1.0, 3.0, None], [1.0, 3.0, 2.0]),  # median of its size
        ([1, 4, 4], [1.0, None, None], [1.0, 1.0, 1.0]),  # none of its size: median of all
        ([1, 4], [None, None], [1.0, 1.0]),  # nothing recorded: 1 s
        ([2, 2, 2, 2], [1.0, 2.0, 10.0, None], [1.0, 2.0, 10.0, 2.0]),
    ],
)
def test_unknown_tests_get_the_median_of_their_size(
    cores: list[int], known: list[float | None], expected: list[float]
) -> None:
    assert estimates(cores, known) == expected


@given(
    st.lists(st.tuples(sizes, seconds), max_size=40),
    st.sampled_from(["collection", "biggest-first", "durations"]),
)
def test_every_rule_is_a_permutation(tests: list[tuple[int, float | None]], order: str) -> None:
    cores = [k for k, _ in tests]
    ranked = ranking(order, cores, [s for _, s in tests], pool=32)
    assert sorted(ranked) == list(range(len(tests)))


@given(st.lists(st.tuples(sizes, seconds), min_size=1, max_size=40))
def test_durations_puts_the_tests_that_cannot_share_the_pool_first_then_most_core_seconds_first(
    tests: list[tuple[int, float | None]],
) -> None:
    cores = [k for k, _ in tests]
    known = [s for _, s in tests]
    expected = estimates(cores, known)
    ranked = ranking("durations", cores, known, pool=32)
    alone = [2 * cores[i] > 32 for i in ranked]
    assert alone == sorted(alone, reverse=True)  # all of them before any other
    rest = [i for i in ranked if 2 * cores[i] <= 32]
    if any(s is not None for s in known):
        work = [cores[i] * expected[i] for i in rest]
        assert work == sorted(work, reverse=True)


@given(st.lists(sizes, max_size=40))
def test_biggest_first_is_a_stable_sort_by_cores(cores: list[int]) -> None:
    ranked = ranking("biggest-first", cores, None, pool=32)
    assert [(-cores[i], i) for i in ranked] == sorted((-k, i) for i, k in enumerate(cores))


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown order 'fastest'"):
        ranking("fastest", [1], [1.0], pool=32)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("durations", "durations"),
        (" Biggest-First ", "biggest-first"),
        ("collection", "collection"),
        ("collected", "collection"),  # the name 0.1 used
    ],
)
def test_parse_order_accepts(value: str, expected: str) -> None:
    assert parse_order(value, "--neuron-order") == expected


def test_parse_order_names_value_source_and_choices() -> None:
    with pytest.raises(SettingError) as info:
        parse_order("random", "environment variable PYTEST_NEURON_ORDER")
    assert str(info.value) == (
        "invalid value 'random' from environment variable PYTEST_NEURON_ORDER: "
        "expected biggest-first, durations or collection"
    )


records = st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.builds(
        Record,
        cores=st.integers(0, 128),
        seconds=st.floats(0, 1e6, allow_nan=False),
        call=st.floats(0, 1e6, allow_nan=False),
        wait=st.floats(0, 1e6, allow_nan=False),
    ),
    max_size=10,
)


@given(records)
def test_records_survive_the_cache_round_trip_to_four_decimals(value: dict[str, Record]) -> None:
    back = records_from(records_to(value))
    assert back.keys() == value.keys()
    for nodeid, record in value.items():
        assert back[nodeid].cores == record.cores
        assert back[nodeid].seconds == pytest.approx(record.seconds, abs=1e-4)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        "text",
        {"t": [1, 2.0, 1.0]},  # three fields
        {"t": {"cores": 1}},
        {"t": [True, 1.0, 1.0, 0.0]},
        {"t": [-1, 1.0, 1.0, 0.0]},
        {"t": [1, -1.0, 1.0, 0.0]},
        {"t": [1, "1", 1.0, 0.0]},
        {"t": [1, float("nan"), 1.0, 0.0]},
        {"t": [1, float("inf"), 1.0, 0.0]},
        {1: [1, 1.0, 1.0, 0.0]},
    ],
)
def test_cache_values_of_another_shape_are_ignored(raw: object) -> None:
    assert records_from(raw) == {}


def test_good_entries_survive_next_to_bad_ones() -> None:
    raw = {"good": [4, 2.5, 2.0, 0.1], "bad": [4, "x", 2.0, 0.1]}
    assert records_from(raw) == {"good": Record(4, 2.5, 2.0, 0.1)}
