"""The plan of one run: its pool, its settings, where its locks live, and what it inherits.

Built once per process, from the command line, the environment and the ini
file (planning.py's ``build_plan``), or in an xdist worker from the controller's plan
(plan_wire.py), so every worker works from the same pool.

What a run inherits from the processes above it, as values (the lease handed down, the
controller), is defined here too, since every run loads it with its plan: the variables that
carry them are written by locks/holders.py and read by locks/untrusted.py (the lease, whose
holder must be an ancestor), host/hostcache.py (the detected host); host/procinfo.py names a
controller and host/watchdog.py watches it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .coreset import is_contiguous
from .record import field, record, replace

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .settings import Resolved
    from .topology import Host, Topology

PLAN_ENV = "PYTEST_NEURON_PLAN"
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


@record
class RunPlan:
    topology: Topology | None
    settings: Mapping[str, Resolved[Any]]
    user_env: Mapping[str, str]
    handoff: Handoff | None = None
    slice_size: int | None = None
    run_id: str = field(default_factory=lambda: os.urandom(6).hex())
    command: str = ""  # as typed: `python -m pytest -n 2`
    run_pool: int | None = None  # the whole pool's size, when ``topology`` is a worker's slice of it
    controller: Controller | None = None  # in an xdist worker: the controller that started it
    #: what host detection found, and whether it ran here (else it was handed down)
    host: Host | None = None
    detected_here: bool = False

    def value(self, name: str) -> Any:
        return self.settings[name].value

    @property
    def nested(self) -> bool:
        """A run nested in a lease it inherited (not a worker of a run's reservation): it leases
        only when a test asks for cores."""
        return self.handoff is not None and self.run_pool is None and self.scope == "worker"

    @property
    def pool_size(self) -> int | None:
        """How many cores the run's whole pool has (what a marker may ask for at most)."""
        if self.run_pool is not None:
            return self.run_pool
        return None if self.topology is None else self.topology.size

    @property
    def scope(self) -> str:
        return str(self.value("scope"))

    @property
    def lock_root(self) -> Path:
        """Where this run's locks live: the lock directory, or the nested domain of a handed-down lease."""
        if self.handoff is not None:
            return self.handoff.nested_root
        return Path(str(self.value("lock_dir")))

    @property
    def lock_source(self) -> str:
        if self.handoff is not None:
            return f"the lease handed down by pid {self.handoff.pid} (nested domain)"
        return self.settings["lock_dir"].source

    def with_workers(self, workers: int) -> RunPlan:
        """This plan for ``workers`` xdist workers: fixes each worker's slice size."""
        size = self.value("cores_per_worker")
        if size is None and self.topology is not None:
            size = max(1, self.topology.size // max(1, workers))
        return replace(self, slice_size=size)

    def slices_that_fit(self, size: int) -> int:
        """How many disjoint windows of ``size`` cores the pool holds at once."""
        if self.topology is None:
            return 0
        count = disjoint_windows(self.topology.cores, size)
        limit = self.topology.limit
        return count if limit is None else min(count, limit // size)


def disjoint_windows(pool: tuple[int, ...], size: int) -> int:
    """placement.count_disjoint: how many disjoint windows of ``size`` cores ``pool`` holds at once.

    For a pool of consecutive cores, counted without importing placement.py: a controller
    checks its workers' slices with this and a lease checks that a request can ever fit, and
    neither needs anything else of placement (tests/test_placement.py checks the two agree).
    """
    if size <= 0 or not pool:
        return 0
    if is_contiguous(pool):
        first, n = min(pool), len(pool)
        if size & (size - 1) == 0:  # a power of two: windows start at multiples of it, if any does
            aligned = (first + n) // size - -(-first // size)
            if aligned > 0:
                return aligned
        return n // size
    from .placement import count_disjoint

    return count_disjoint(pool, size)
