"""core/record.py behaves as @dataclass(frozen=True) where this package relies on it: each case
runs on a record and on its dataclass twin and compares."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_neuron.core.record import asdict, field, fields, mutable_record, record, replace


@record
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    notes: dict[str, int] = field(default_factory=dict)
    secret: str = field(default="", repr=False)
    KIND: ClassVar[str] = "point"


@dataclasses.dataclass(frozen=True)
class DPoint:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    notes: dict[str, int] = dataclasses.field(default_factory=dict)
    secret: str = dataclasses.field(default="", repr=False)
    KIND: ClassVar[str] = "point"


@record
class Box:
    corner: Point
    points: list[Point] = field(default_factory=list)


@record
class Pair:
    a: int
    b: int = 0


@dataclasses.dataclass(frozen=True)
class DPair:
    a: int
    b: int = 0


@mutable_record
class Counter:
    n: int = 0


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1,), {}),
    ((1, 2), {}),
    ((), {"x": 3, "y": 4}),
    ((1,), {"tags": ("a",), "secret": "s"}),
    ((1, 2, ("t",), {"k": 1}, "z"), {}),
]
BAD_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),  # x missing
    ((1, 2, (), {}, "", 6), {}),  # too many
    ((1,), {"x": 2}),  # x twice
    ((1,), {"z": 2}),  # unknown
]


def _normal(text: str) -> str:
    return text.replace("DPoint", "Point")


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_construction_repr_and_fields_match_dataclasses(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    mine, theirs = Point(*args, **kwargs), DPoint(*args, **kwargs)
    assert repr(mine) == _normal(repr(theirs))
    assert asdict(mine) == dataclasses.asdict(theirs)
    assert fields(Point) == tuple(f.name for f in dataclasses.fields(DPoint))
    assert mine.KIND == "point"
    assert "KIND" not in fields(Point)


@pytest.mark.parametrize(("args", "kwargs"), BAD_CALLS)
def test_bad_construction_raises_type_error_as_dataclasses_do(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        DPoint(*args, **kwargs)
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


@given(st.integers(), st.integers(), st.integers(), st.integers())
def test_equality_and_hash_follow_the_fields(a: int, b: int, c: int, d: int) -> None:
    assert (Pair(a, b) == Pair(c, d)) == (DPair(a, b) == DPair(c, d))
    if Pair(a, b) == Pair(c, d):
        assert hash(Pair(a, b)) == hash(Pair(c, d))
    assert hash(Pair(a, b)) == hash(DPair(a, b))  # both hash the tuple of the fields
    other: object = DPair(a, b)
    assert Pair(a, b) != other  # another class is never equal
    assert Pair(a, b).__eq__((a, b)) is NotImplemented


def test_frozen_refuses_assignment_and_deletion() -> None:
    point = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del point.x


def test_default_factory_gives_each_instance_its_own_value() -> None:
    first, second = Point(1), Point(2)
    assert first.notes == {}
    assert first.notes is not second.notes


def test_replace_and_asdict_go_into_nested_records() -> None:
    box = Box(Point(1), [Point(2, 3)])
    assert replace(box, corner=Point(5)).corner == Point(5)
    assert replace(box, corner=Point(5)).points == [Point(2, 3)]
    assert asdict(box) == {
        "corner": {"x": 1, "y": 0, "tags": (), "notes": {}, "secret": ""},
        "points": [{"x": 2, "y": 3, "tags": (), "notes": {}, "secret": ""}],
    }
    with pytest.raises(TypeError):
        replace(box, nothing=1)


def test_mutable_record_assigns_and_is_unhashable() -> None:
    counter = Counter()
    counter.n += 1
    assert counter == Counter(1)
    with pytest.raises(TypeError):
        hash(counter)


def test_definition_errors_are_those_of_dataclasses() -> None:
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):

        @record
        class Bad:
            a: int = 0
            b: int  # type: ignore[misc]

    with pytest.raises(ValueError, match="mutable default"):

        @record
        class Shared:
            a: list[int] = []  # noqa: RUF012

    with pytest.raises(TypeError, match="inheritance"):

        @record
        class Child(Point):
            z: int = 0


def test_fields_of_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a record"):
        fields(object())


def test_a_method_the_record_would_overwrite_is_refused() -> None:
    with pytest.raises(TypeError, match="defines __repr__: use a dataclass"):

        @record
        class Shown:
            a: int

            def __repr__(self) -> str:
                return "mine"
