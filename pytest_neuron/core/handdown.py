"""What a run inherits from the processes above it, as values: the lease handed down, the controller.

The variables that carry them are read and written by locks/handoff.py (the lease, whose holder
must be an ancestor), host/hostcache.py (the detected host) and host/watchdog.py (the controller);
the plan (core/plan.py) only holds the values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .record import record

if TYPE_CHECKING:
    from pathlib import Path

HANDOFF_ENV = "PYTEST_NEURON_LEASE"  # the lease a process holds, for the runs nested in it
HOST_ENV = "PYTEST_NEURON_HOST"  # what host detection found, for the runs nested in it
NESTED = "nested"  # under a lock domain: the domains its holders handed down to nested runs


def domain_name(pid: int, starttime: int | None) -> str:
    """The name of the nested domain a holder hands down (under ``NESTED``), from its identity."""
    return f"{pid}-{starttime}"


def holder_of(name: str) -> tuple[int, int | None] | None:
    """The (pid, start time) a nested domain's name stands for; None for any other name."""
    pid, sep, start = name.partition("-")
    if not sep or not pid.isdigit():
        return None
    if start == "None":
        return int(pid), None
    return (int(pid), int(start)) if start.isdigit() else None


@record
class Handoff:
    """A lease handed down by one of this process's ancestors (or this process itself)."""

    root: Path
    pid: int
    starttime: int | None
    cores: frozenset[int]
    plugin_vars: tuple[str, ...] = ()  # variables the holder's plugin set, not its user

    @property
    def nested_root(self) -> Path:
        return self.root / NESTED / domain_name(self.pid, self.starttime)


@record
class Controller:
    """The xdist controller as its workers know it (it travels in the plan)."""

    boot_id: str
    pid: int
    starttime: int | None
