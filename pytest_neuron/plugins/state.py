"""What a test and a process hold: the fixture's value and the session's state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..host.envpatch import EnvPatch
    from ..locks.lease import Lease


class NeuronWarning(pytest.PytestWarning):
    """A pytest-neuron warning (pinned cores, a pytest-timeout shorter than the runtime's)."""


@dataclass(frozen=True)
class NeuronCores:
    """What the ``neuron_cores`` fixture returns: the cores this test runs with."""

    cores: tuple[int, ...]
    visible_cores: str
    env: dict[str, str]
    wait_seconds: float


@dataclass
class TestCores:
    lease: Lease | None
    patch: EnvPatch | None
    error: str | None = None


@dataclass
class ProcessState:
    lease: Lease | None = None
    patch: EnvPatch | None = None
    error: str | None = None
    failed_wait: tuple[float, float, int] | None = None  # start, end, cores of a wait that got none
    pinned: list[Lease] = field(default_factory=list)
