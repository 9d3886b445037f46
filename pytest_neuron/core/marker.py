"""The ``neuron`` marker: ``@pytest.mark.neuron(cores=1, *, log_level=None, ...)``.

Parsing is pure: :func:`parse_marker` turns a marker's arguments into a
:class:`Request` or raises :class:`MarkerError` naming the test and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .settings import TEST_SETTINGS, SettingError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

MARKER_DOC = (
    "neuron(cores=1, *, log_level=None, log_location=None, exec_timeout=None, validate_hash=None): "
    "run this test with `cores` NeuronCores of its own (a contiguous window; @pytest.mark.neuron(4) "
    "means 4 cores) and, when given, these NEURON_RT_* runtime settings. See pytest-neuron's docs."
)
KEYWORDS = ("cores", *(spec.name for spec in TEST_SETTINGS))


class MarkerError(ValueError):
    """A bad neuron marker; ``str()`` is the one-line message."""


@dataclass(frozen=True)
class Request:
    """What one test asks for: a core count and raw runtime settings (validated)."""

    cores: int
    settings: Mapping[str, object] = field(default_factory=dict)


def parse_marker(
    args: Sequence[Any], kwargs: Mapping[str, Any], *, nodeid: str, pool_size: int | None
) -> Request:
    """Validate ``@pytest.mark.neuron(*args, **kwargs)`` of test ``nodeid``."""
    where = f"@pytest.mark.neuron on {nodeid}"
    unknown = sorted(set(kwargs) - set(KEYWORDS))
    if unknown:
        raise MarkerError(f"{where}: unknown keyword {unknown[0]!r}; accepted: {', '.join(KEYWORDS)}")
    if len(args) > 1:
        raise MarkerError(f"{where}: takes at most one positional argument (cores), got {len(args)}")
    if args and "cores" in kwargs:
        raise MarkerError(f"{where}: cores given both positionally and as a keyword")
    cores = args[0] if args else kwargs.get("cores", 1)
    if isinstance(cores, bool) or not isinstance(cores, int):
        raise MarkerError(f"{where}: cores={cores!r} is not a whole number; expected an int >= 1")
    if cores < 1:
        raise MarkerError(f"{where}: cores={cores!r} must be at least 1")
    if pool_size is not None and cores > pool_size:
        raise MarkerError(f"{where}: cores={cores} is more than the pool's {pool_size} cores")
    settings: dict[str, object] = {}
    for spec in TEST_SETTINGS:
        value = kwargs.get(spec.name)
        if value is None:
            continue
        try:
            settings[spec.name] = spec.parse(value, f"{where} ({spec.name}=)")
        except SettingError as exc:
            raise MarkerError(str(exc)) from None
    return Request(cores=cores, settings=settings)
