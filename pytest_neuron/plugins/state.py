"""What a test and a process hold: the fixture's value and the process's leases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..host.envpatch import EnvPatch
    from ..locks.lease import Lease


class NeuronWarning(pytest.PytestWarning):
    """A pytest-neuron warning (pinned cores, an overridden variable, a short pytest-timeout)."""


@dataclass(frozen=True)
class NeuronCores:
    """What the ``neuron_cores`` fixture returns: the cores this test runs with."""

    cores: tuple[int, ...]
    visible_cores: str
    env: dict[str, str]
    wait_seconds: float


@dataclass
class TestCores:
    """One test's lease in test scope (``shared``: the process's pinned lease, not released after it)."""

    lease: Lease | None
    patch: EnvPatch | None
    error: str | None = None
    shared: bool = False


@dataclass
class ProcessState:
    lease: Lease | None = None  # the slice (worker scope), or the controller's run reservation
    patches: list[EnvPatch] = field(default_factory=list)  # process-wide exports, restored in reverse
    error: str | None = None
    failed_wait: tuple[float, float, int] | None = None  # start, end, cores of a wait that got none
    pinned: list[Lease] = field(default_factory=list)
