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
        return self.root / "nested" / f"{self.pid}-{self.starttime}"


@record
class Controller:
    """The xdist controller as its workers know it (it travels in the plan)."""

    boot_id: str
    pid: int
    starttime: int | None
