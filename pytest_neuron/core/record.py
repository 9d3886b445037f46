"""Value classes built without ``exec``: ``@record`` is this package's ``@dataclass(frozen=True)``.

Why not dataclasses: they compile each generated method from source when a class is created.
On CPython 3.11 that is about four million instructions per frozen class, and the classes on the
plugin's start-up path cost a 2,000-test run about 1 % that way (docs/performance.md).
``record`` builds the same methods from closures over the field list, for a small part of it.

Kept from ``@dataclass(frozen=True)`` (tests/test_record.py checks each against dataclasses):

* the fields are the class's own annotations, in order (``ClassVar`` excluded); a class
  attribute is the field's default, ``field(default_factory=f)`` a fresh one per instance;
* construction by position or keyword, with dataclasses' errors for a missing, unknown or
  doubled argument; a non-default field after a default one, or a list, dict or set as a
  default, is refused when the class is defined;
* no assignment or deletion (``dataclasses.FrozenInstanceError``);
* ``==`` by the fields, between instances of the same class only; ``hash`` of the fields;
* dataclasses' ``repr`` (``field(repr=False)`` leaves a field out);
* :func:`replace`, :func:`asdict` (records, lists, tuples and dicts inside converted; other
  values kept, not copied) and :func:`fields` (the names, in order).

``@mutable_record`` is the same without freezing, and unhashable (a dataclass with ``eq``).
Not provided: ``__post_init__``, ``InitVar``, ``kw_only``, slots, ordering, inheritance between
records.  mypy sees a dataclass (PEP 681's ``dataclass_transform``).
"""

from __future__ import annotations

import inspect
from dataclasses import FrozenInstanceError
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        return lambda decorator: decorator


_R = TypeVar("_R")
_MISSING: Any = object()
FIELDS = "__record_fields__"


class _Field:
    __slots__ = ("default", "factory", "repr")

    def __init__(self, default: object, factory: Callable[[], object] | None, repr: bool) -> None:
        self.default, self.factory, self.repr = default, factory, repr


def field(
    *, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None, repr: bool = True
) -> Any:
    """A field's default (``default`` or ``default_factory``) and whether ``repr`` shows it."""
    if default is not _MISSING and default_factory is not None:
        raise ValueError("cannot specify both default and default_factory")
    return _Field(default, default_factory, repr)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_R]) -> type[_R]:
    """A frozen value class of ``cls``'s annotated fields (see the module's docstring)."""
    return _build(cls, frozen=True)


@dataclass_transform(field_specifiers=(field,))
def mutable_record(cls: type[_R]) -> type[_R]:
    """A value class of ``cls``'s annotated fields that may be assigned to; unhashable."""
    return _build(cls, frozen=False)


def fields(obj: object) -> tuple[str, ...]:
    """The field names of a record (class or instance), in order."""
    names = getattr(obj, FIELDS, None)
    if names is None:
        raise TypeError(f"{obj!r} is not a record")
    return tuple(names)


def replace(obj: _R, /, **changes: Any) -> _R:
    """A copy of the record ``obj`` with ``changes``; unknown names raise TypeError."""
    for name in fields(obj):
        if name not in changes:
            changes[name] = getattr(obj, name)
    return type(obj)(**changes)


def asdict(obj: object) -> dict[str, Any]:
    """The fields of the record ``obj`` as a dict, records inside it converted too."""
    return {name: _plain(getattr(obj, name)) for name in fields(obj)}


def _plain(value: object) -> object:
    if hasattr(type(value), FIELDS):
        return asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar", "t.ClassVar"))


#: what a record writes; a class that defines one itself would lose it (dataclasses keep it)
GENERATED = ("__init__", "__eq__", "__repr__", "__setattr__", "__delattr__")


def _build(cls: type[_R], *, frozen: bool) -> type[_R]:
    if any(hasattr(base, FIELDS) for base in cls.__mro__[1:]):
        raise TypeError(f"record {cls.__name__}: inheritance between records is not supported")
    own = [name for name in GENERATED if name in cls.__dict__]
    if own or cls.__dict__.get("__hash__") is not None:
        raise TypeError(f"record {cls.__name__} defines {', '.join(own) or '__hash__'}: use a dataclass")
    names: list[str] = []
    defaults: dict[str, object] = {}
    factories: dict[str, Callable[[], object]] = {}
    shown: list[str] = []
    for name, annotation in inspect.get_annotations(cls).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        show = True
        if isinstance(value, _Field):
            show = value.repr
            if value.factory is not None:
                factories[name] = value.factory
            value = value.default
            if value is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, value)
        if isinstance(value, (list, dict, set)):
            raise ValueError(
                f"mutable default {type(value)} for field {name} is not allowed: use default_factory"
            )
        if value is not _MISSING:
            defaults[name] = value
        elif name not in factories and any(n in defaults or n in factories for n in names):
            raise TypeError(f"non-default argument {name!r} follows default argument")
        names.append(name)
        if show:
            shown.append(name)
    _add_methods(cls, names, defaults, factories, shown, frozen=frozen)
    return cls


def _add_methods(
    cls: type[Any],
    names: list[str],
    defaults: dict[str, object],
    factories: dict[str, Callable[[], object]],
    shown: list[str],
    *,
    frozen: bool,
) -> None:
    count, known, title = len(names), frozenset(names), cls.__qualname__
    setter = object.__setattr__
    key: Callable[[Any], tuple[Any, ...]]
    if count == 0:
        key = lambda obj: ()  # noqa: E731
    elif count == 1:
        single = attrgetter(names[0])
        key = lambda obj: (single(obj),)  # noqa: E731
    else:
        key = attrgetter(*names)

    def __init__(self: Any, *args: object, **kwargs: object) -> None:
        if len(args) > count:
            raise TypeError(
                f"{title}.__init__() takes {count + 1} positional arguments but {len(args) + 1} were given"
            )
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name not in known:
                raise TypeError(f"{title}.__init__() got an unexpected keyword argument {name!r}")
            if name in values:
                raise TypeError(f"{title}.__init__() got multiple values for argument {name!r}")
            values[name] = value
        for name in names:
            if name in values:
                value = values[name]
            elif name in factories:
                value = factories[name]()
            elif name in defaults:
                value = defaults[name]
            else:
                missing = [n for n in names if n not in values and n not in defaults and n not in factories]
                listed = " and ".join(repr(n) for n in missing)
                plural = "s" if len(missing) > 1 else ""
                raise TypeError(
                    f"{title}.__init__() missing {len(missing)} required argument{plural}: {listed}"
                )
            setter(self, name, value)

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(key(self) == key(other))

    def __repr__(self: Any) -> str:
        return f"{self.__class__.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in shown)})"

    methods: dict[str, Any] = {"__init__": __init__, "__eq__": __eq__, "__repr__": __repr__}
    if frozen:

        def __hash__(self: Any) -> int:
            return hash(key(self))

        def __setattr__(self: Any, name: str, value: object) -> None:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self: Any, name: str) -> None:
            raise FrozenInstanceError(f"cannot delete field {name!r}")

        methods.update(__hash__=__hash__, __setattr__=__setattr__, __delattr__=__delattr__)
    else:
        methods["__hash__"] = None
    for name, method in methods.items():
        if method is not None:
            method.__qualname__ = f"{title}.{name}"
        setattr(cls, name, method)
    setattr(cls, FIELDS, tuple(names))
