from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_neuron.core.coreset import (
    ACCEPTED_FORMS,
    MAX_CORE,
    CoreSetError,
    format_coreset,
    is_contiguous,
    parse_coreset,
    runs,
)

SOURCE = "--neuron-cores"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4", {4}),
        ("0", {0}),
        ("4-7", {4, 5, 6, 7}),
        ("3-5,6", {3, 4, 5, 6}),
        (" 0 - 3 , 8 ", {0, 1, 2, 3, 8}),
        ("8,0-3", {0, 1, 2, 3, 8}),
        ("5-5", {5}),
        ("007", {7}),
        (f"{MAX_CORE}", {MAX_CORE}),
    ],
)
def test_parse_accepts(text: str, expected: set[int]) -> None:
    assert parse_coreset(text, SOURCE) == frozenset(expected)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "it is empty"),
        (" ", "it is empty"),
        ("0,,1", "empty part"),
        (",1", "empty part"),
        ("1,", "empty part"),
        ("abc", "'abc' is not an index or a range"),
        ("-1", "negative index '-1'"),
        ("3-1", "range '3-1' is reversed"),
        ("0-", "'0-' is not an index or a range"),
        ("1,1", "repeats core 1"),
        ("0-3,2", "'2' repeats core 2"),
        ("1.5", "'1.5' is not an index or a range"),
        ("1 2", "'1 2' is not an index or a range"),
        ("+1", "'+1' is not an index or a range"),
        ("\u0663", "is not an index or a range"),  # ARABIC-INDIC DIGIT THREE: the runtime reads ASCII only
        (f"0-{MAX_CORE + 1}", f"index {MAX_CORE + 1} is larger than {MAX_CORE}"),
        ("0-99999999999", f"larger than {MAX_CORE}"),
    ],
)
def test_parse_rejects(text: str, why: str) -> None:
    with pytest.raises(CoreSetError) as info:
        parse_coreset(text, SOURCE)
    message = str(info.value)
    assert "\n" not in message
    assert repr(text) in message
    assert f"from {SOURCE}" in message
    assert why in message
    assert message.endswith(f"expected {ACCEPTED_FORMS}")


@pytest.mark.parametrize(
    ("text", "within", "within_name", "why"),
    [
        ("64", range(32), "the host", "core 64 is outside the host (0-31)"),
        ("30-33", range(32), "the host", "core 32 is outside the host (0-31)"),
        ("2", {0, 1, 4}, "the pool", "core 2 is outside the pool (0-1,4)"),
        ("0", (), "the pool", "core 0 is outside the pool (no cores)"),
    ],
)
def test_parse_rejects_cores_outside_within(
    text: str, within: range | set[int] | tuple[int, ...], within_name: str, why: str
) -> None:
    source = "environment variable NEURON_RT_VISIBLE_CORES"
    with pytest.raises(CoreSetError) as info:
        parse_coreset(text, source, within=within, within_name=within_name)
    message = str(info.value)
    assert repr(text) in message
    assert source in message
    assert why in message
    assert ACCEPTED_FORMS in message


def test_parse_accepts_cores_within() -> None:
    assert parse_coreset("0-31", SOURCE, within=range(32)) == frozenset(range(32))


@pytest.mark.parametrize(
    ("cores", "text"),
    [
        ({4}, "4"),
        ({0}, "0"),
        ({3, 4, 5, 6}, "3-6"),
        ({0, 2}, "0,2"),
        ({8, 0, 1, 2, 3}, "0-3,8"),
        ([5, 5, 6], "5-6"),
        ({0, 1, 3, 5, 6, 7}, "0-1,3,5-7"),
    ],
)
def test_format(cores: set[int] | list[int], text: str) -> None:
    assert format_coreset(cores) == text


def test_format_rejects_an_empty_set() -> None:
    with pytest.raises(ValueError, match="empty core set"):
        format_coreset([])


@pytest.mark.parametrize(
    ("cores", "expected_runs", "contiguous"),
    [
        ([], [], False),
        ([7], [(7, 7)], True),
        ([3, 1, 2], [(1, 3)], True),
        ([0, 1, 3], [(0, 1), (3, 3)], False),
        ([9, 0, 8, 0], [(0, 0), (8, 9)], False),
    ],
)
def test_runs_and_is_contiguous(
    cores: list[int], expected_runs: list[tuple[int, int]], contiguous: bool
) -> None:
    assert runs(cores) == expected_runs
    assert is_contiguous(cores) is contiguous


@settings(database=None)
@given(st.frozensets(st.integers(min_value=0, max_value=300), min_size=1))
def test_parse_inverts_format(cores: frozenset[int]) -> None:
    assert parse_coreset(format_coreset(cores), SOURCE) == cores


@settings(database=None)
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=300))
def test_format_of_a_contiguous_set_has_no_comma(first: int, length: int) -> None:
    cores = range(first, first + length + 1)
    text = format_coreset(cores)
    assert re.fullmatch(r"[0-9]+(-[0-9]+)?", text)
    assert text == (str(first) if length == 0 else f"{first}-{first + length}")
    assert is_contiguous(cores)
