"""The ``neuron`` marker: ``@pytest.mark.neuron(cores=1, *, log_level=None, ...)``.

Parsing is pure: :func:`parse_marker` turns a marker's arguments into a
:class:`Request` or raises :class:`MarkerError` naming the test and the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .record import field, record
from .settings import TEST_SETTINGS, SettingError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

KEYWORDS = ("cores", *(spec.name for spec in TEST_SETTINGS))


class MarkerError(ValueError):
    """A bad neuron marker; ``str()`` is the one-line message."""


@record
class Request:
    """What one test asks for: a core count and raw runtime settings (validated)."""

    cores: int
    settings: Mapping[str, object] = field(default_factory=dict)


def _from_parameter(
    name: str, params: Mapping[str, object] | None, where: str, *, keyword: str = "cores"
) -> tuple[object, str]:
    """``cores="tp_degree"``: the value of this test's parameter ``tp_degree``."""
    if not params:
        raise MarkerError(
            f"{where}: {keyword}={name!r} names a parameter, but this test is not parametrized; "
            "expected an int, or the name of one of its parametrize arguments"
        )
    if name not in params:
        raise MarkerError(
            f"{where}: {keyword}={name!r} is not a parameter of this test; its parameters: "
            + ", ".join(sorted(params))
        )
    value = params[name]
    return value, f"{keyword}={name!r} (the test's parameter {name}={value!r})"


def parse_marker(
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    nodeid: str,
    pool_size: int | None,
    params: Mapping[str, object] | None = None,
    pool_lnc: int = 1,
) -> Request:
    """Validate ``@pytest.mark.neuron(*args, **kwargs)`` of test ``nodeid``.

    ``cores`` may name a parameter of the test (``cores="tp_degree"``): ``params`` are
    the test's parametrize arguments (its call spec), and the count is that argument's
    value, resolved per item at collection.
    """
    where = f"@pytest.mark.neuron on {nodeid}"
    unknown = sorted(set(kwargs) - set(KEYWORDS))
    if unknown:
        raise MarkerError(f"{where}: unknown keyword {unknown[0]!r}; accepted: {', '.join(KEYWORDS)}")
    if len(args) > 1:
        raise MarkerError(f"{where}: takes at most one positional argument (cores), got {len(args)}")
    if args and "cores" in kwargs:
        raise MarkerError(f"{where}: cores given both positionally and as a keyword")
    cores = args[0] if args else kwargs.get("cores", 1)
    given = f"cores={cores!r}"
    if isinstance(cores, str):
        cores, given = _from_parameter(cores, params, where)
    if isinstance(cores, bool) or not isinstance(cores, int):
        raise MarkerError(
            f"{where}: {given} is not a whole number; expected an int >= 1, or the name of a parameter"
        )
    if cores < 1:
        raise MarkerError(f"{where}: {given} must be at least 1")

    settings: dict[str, object] = {}
    for spec in TEST_SETTINGS:
        value = kwargs.get(spec.name)
        if value is None:
            continue
        if spec.name == "lnc" and isinstance(value, str) and not value.strip().isdigit():
            value, _ = _from_parameter(value, params, where, keyword="lnc")
        try:
            settings[spec.name] = spec.parse(value, f"{where} ({spec.name}=)")
        except SettingError as exc:
            raise MarkerError(str(exc)) from None
    lnc = settings.get("lnc")
    if pool_size is not None:
        size = pool_size if lnc is None or lnc == pool_lnc else pool_size * pool_lnc // int(str(lnc))
        at = "" if lnc is None or lnc == pool_lnc else f" at lnc={lnc}"
        if cores > size:
            raise MarkerError(f"{where}: {given} is more than the pool's {size} cores{at}")
    return Request(cores=cores, settings=settings)


def call_params(item: object) -> Mapping[str, object] | None:
    """The parametrize arguments of a collected test (``item.callspec.params``), or None.

    ``pytest.Function.callspec`` is the one place pytest exposes them; tests/test_marker_params.py
    fails loudly if it goes away.
    """
    callspec = getattr(item, "callspec", None)
    params = getattr(callspec, "params", None)
    return dict(params) if isinstance(params, dict) else None
