"""Exclusive, crash-safe leases of NeuronCores across processes and runs.

Invariants (each is tested with real processes in tests/test_lease*.py):

* **One flock per physical core, held exactly as long as the lease.**  The
  kernel drops a flock when its holder dies, so a SIGKILLed holder leaves no
  stale lease.  Lock files are never unlinked.
* **All or nothing, without hold-and-wait.**  A placement is decided under the
  domain's short ``alloc.lock``: the process picks a free window, takes each
  core's lock *without blocking*, and on any refusal gives back what it took.
  Nobody ever blocks on a core lock while holding another, so two requests
  cannot deadlock; the only blocking lock, ``alloc.lock``, is never held
  while waiting for cores.
* **Fair.**  A request that cannot be placed registers as a waiter and
  reserves the window that will drain soonest; newer requests may not take
  cores reserved by older waiters, so a 32-core request waits at most for the
  holders it found, never for a stream of 1-core requests behind it.
* **Takeover after a death.**  A holder record found on a core we just locked
  means its previous holder died without cleaning up; before returning we
  wait until that process has fully exited, because the kernel drops its
  flock a moment before its runtime closes the device.
* **Our own holdings are tracked here**, not through the lock objects'
  reentrancy: a core this process holds is busy to it like to anyone else.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .coreset import format_coreset
from .holders import Holder, new_holder, read_record, remove_record, write_record
from .lockdir import FILE_MODE, LockDirError, check_lock_file, prepare_domain
from .placement import choose_window, reservation_window
from .procinfo import is_running, my_starttime

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from .topology import Topology

TAKEOVER_WAIT = 10.0  # seconds to wait for a dead holder's process to be fully gone


class LeaseError(Exception):
    """A request that can never be granted from this pool."""


class LeaseTimeout(TimeoutError):
    """The wait bound passed; ``str()`` names the request, the pool and the holders."""

    def __init__(self, message: str, holders: list[Holder]) -> None:
        super().__init__(message)
        self.holders = holders


@dataclass
class Lease:
    lease_id: str
    cores: tuple[int, ...]
    physical: tuple[int, ...]
    wait_seconds: float
    domain: Path
    acquired_at: float
    locks: list[Any] = field(default_factory=list, repr=False)
    released: bool = False

    @property
    def visible_cores(self) -> str:
        return format_coreset(self.cores)


@dataclass(frozen=True)
class Waiter:
    ticket: str
    pid: int
    starttime: int | None
    k: int
    reserved: tuple[int, ...]
    since: float
    what: str


def _sleep_interval(base: float, attempt: int) -> float:
    return min(base * (1.5 ** min(attempt, 8)), 0.1) * random.uniform(0.8, 1.2)


class LeaseManager:
    """Hands out leases from ``topology``'s pool, coordinated through the lock domain ``root``."""

    def __init__(
        self,
        root: Path,
        topology: Topology,
        *,
        source: str = "the lock directory",
        poll_interval: float = 0.005,
    ) -> None:
        self.root = root
        self.topology = topology
        self.source = source
        self.poll_interval = poll_interval
        self._prepared = False
        self._held: set[int] = set()  # physical cores this process holds
        self._locks: dict[int, Any] = {}
        self._mutex = threading.Lock()
        self._alloc: Any = None
        self._timeout_exc: type[BaseException] = TimeoutError

    # -- paths -----------------------------------------------------------------
    def _lock_path(self, phys: int) -> Path:
        return self.root / "cores" / f"core-{phys:04d}.lock"

    def _record_path(self, phys: int) -> Path:
        return self.root / "holders" / f"core-{phys:04d}.json"

    def _prepare(self) -> None:
        if not self._prepared:
            prepare_domain(self.root, self.source)
            from filelock import Timeout, UnixFileLock

            self._alloc = UnixFileLock(self.root / "alloc.lock", mode=FILE_MODE, thread_local=False)
            self._timeout_exc = Timeout
            self._prepared = True

    def _core_lock(self, phys: int) -> Any:
        lock = self._locks.get(phys)
        if lock is None:
            from filelock import UnixFileLock

            path = self._lock_path(phys)
            check_lock_file(path, self.source)
            lock = UnixFileLock(path, mode=FILE_MODE, thread_local=False, timeout=0)
            self._locks[phys] = lock
        return lock

    # -- reading state without locks -------------------------------------------
    def _recorded(self) -> set[int]:
        busy: set[int] = set()
        for name in os.listdir(self.root / "holders"):
            if name.startswith("core-") and name.endswith(".json"):
                with contextlib.suppress(ValueError):
                    busy.add(int(name[5:-5]))
        return busy

    def holders(self, physical: Iterable[int]) -> dict[int, Holder]:
        """The recorded holder of each of ``physical`` that has one."""
        found: dict[int, Holder] = {}
        for phys in physical:
            record = read_record(self._record_path(phys))
            if record is not None:
                found[phys] = record
        return found

    def _waiters(self) -> list[Waiter]:
        waiters: list[Waiter] = []
        directory = self.root / "waiters"
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            try:
                raw = json.loads((directory / name).read_bytes())
                waiter = Waiter(
                    ticket=name[:-5],
                    pid=raw["pid"],
                    starttime=raw["starttime"],
                    k=raw["k"],
                    reserved=tuple(raw["reserved"]),
                    since=raw["since"],
                    what=raw["what"],
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not is_running(waiter.pid, waiter.starttime):
                remove_record(directory / name)
                continue
            waiters.append(waiter)
        return waiters

    def _write_waiter(self, ticket: str, k: int, reserved: tuple[int, ...], since: float, what: str) -> None:
        path = self.root / "waiters" / f"{ticket}.json"
        data = {
            "pid": os.getpid(),
            "starttime": my_starttime(),
            "k": k,
            "reserved": list(reserved),
            "since": since,
            "what": what,
        }
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    # -- placement ---------------------------------------------------------------
    def _logical_free(self, unavailable: set[int]) -> list[int]:
        topo = self.topology
        return [c for c in topo.cores if not unavailable.intersection(topo.physical[c])]

    def _try_place(
        self, k: int, lease_id: str, ticket: str | None, worker: str | None, test: str | None
    ) -> tuple[tuple[int, ...] | None, list[Holder], set[int], set[int]]:
        """Under ``alloc.lock``: lock a window.

        Returns the window and the records of dead previous holders found on
        it, or ``None`` with the busy cores and those reserved by older waiters.
        """
        topo = self.topology
        waiters = self._waiters()
        forbidden: set[int] = set()
        for waiter in waiters:
            if ticket is not None and waiter.ticket >= ticket:
                continue
            forbidden.update(waiter.reserved)
        busy = self._recorded() | self._held
        checked_liveness = False
        for _ in range(len(topo.cores) + 2):
            window = choose_window(
                topo.cores, k, self._logical_free(busy | forbidden), device_of=topo.device_of
            )
            if window is None:
                if checked_liveness:
                    break
                checked_liveness = True
                stale = {p for p, h in self.holders(busy - self._held).items() if not h.is_alive()}
                if not stale:
                    break
                busy -= stale
                continue
            physical = topo.physical_cores(window)
            taken: list[Any] = []
            refused: int | None = None
            for phys in physical:
                lock = self._core_lock(phys)
                try:
                    lock.acquire(timeout=0)
                except self._timeout_exc:
                    refused = phys
                    break
                except BaseException:
                    for got in taken:
                        got.release(force=True)
                    raise
                taken.append(lock)
            if refused is not None:
                for got in taken:
                    got.release(force=True)
                busy.add(refused)
                continue
            previous = [h for h in self.holders(physical).values() if h.lease_id != lease_id]
            holder = new_holder(lease_id, window, physical, worker=worker, test=test)
            for phys in physical:
                write_record(self._record_path(phys), holder)
            self._held.update(physical)
            return window, previous, set(), set()
        return None, [], busy, forbidden

    def _reserve(self, k: int, busy: set[int], forbidden: set[int]) -> tuple[int, ...]:
        topo = self.topology
        busy_logical = [c for c in topo.cores if busy.intersection(topo.physical[c])]
        forbidden_logical = [c for c in topo.cores if forbidden.intersection(topo.physical[c])]
        window = reservation_window(topo.cores, k, busy_logical, forbidden_logical, device_of=topo.device_of)
        return () if window is None else topo.physical_cores(window)

    def acquire(
        self,
        k: int,
        *,
        timeout: float,
        worker: str | None = None,
        test: str | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Lease:
        """Lease ``k`` cores, waiting at most ``timeout`` seconds (0: one attempt).

        Raises :class:`LeaseError` when the request can never fit the pool,
        :class:`LeaseTimeout` when the bound passes, :class:`LockDirError`
        when the lock directory is unusable.
        """
        topo = self.topology
        if k < 1 or k > topo.size:
            raise LeaseError(f"cannot lease {k} cores from a pool of {topo.size} ({topo.source})")
        self._prepare()
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        lease_id = uuid.uuid4().hex[:16]
        what = test or worker or f"pid {os.getpid()}"
        ticket: str | None = None
        reserved: tuple[int, ...] = ()
        attempt = 0
        try:
            while True:
                with self._mutex:
                    self._alloc.acquire(
                        timeout=max(1.0, deadline - time.monotonic() + 1.0), poll_interval=0.0005
                    )
                    try:
                        placed, previous, busy, forbidden = self._try_place(k, lease_id, ticket, worker, test)
                        if placed is None:
                            if ticket is None:
                                ticket = f"{time.time_ns():020d}-{os.getpid():08d}-{uuid.uuid4().hex[:6]}"
                            wanted = self._reserve(k, busy, forbidden)
                            if wanted != reserved or attempt == 0:
                                reserved = wanted
                                self._write_waiter(ticket, k, reserved, time.time(), what)
                    finally:
                        self._alloc.release()
                if placed is not None:
                    self._await_takeover(previous)
                    physical = topo.physical_cores(placed)
                    return Lease(
                        lease_id=lease_id,
                        cores=placed,
                        physical=physical,
                        wait_seconds=time.monotonic() - start,
                        domain=self.root,
                        acquired_at=time.time(),
                        locks=[self._locks[p] for p in physical],
                    )
                now = time.monotonic()
                if now >= deadline or (cancel is not None and cancel()):
                    raise self._timeout_error(k, reserved, now - start)
                time.sleep(min(_sleep_interval(self.poll_interval, attempt), max(0.0, deadline - now)))
                attempt += 1
        finally:
            if ticket is not None:
                remove_record(self.root / "waiters" / f"{ticket}.json")

    def _await_takeover(self, previous: list[Holder]) -> None:
        deadline = time.monotonic() + TAKEOVER_WAIT
        for holder in {h.pid: h for h in previous}.values():
            if holder.pid == os.getpid():
                continue
            while holder.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)

    def _timeout_error(self, k: int, reserved: tuple[int, ...], waited: float) -> LeaseTimeout:
        topo = self.topology
        wanted = reserved or topo.physical_cores(topo.cores)
        holders = list({h.lease_id: h for h in self.holders(wanted).values()}.values())
        pool = format_coreset(topo.cores)
        if holders:
            named = "; ".join(f"cores {format_coreset(h.cores)} held by {h.describe()}" for h in holders)
        else:
            named = "no holder is recorded (the cores may be reserved for older waiters)"
        return LeaseTimeout(
            f"gave up after {waited:.1f}s waiting for {k} core{'s' if k != 1 else ''} "
            f"of pool {pool} ({topo.source}): {named}",
            holders,
        )

    def release(self, lease: Lease) -> None:
        """Give the cores back: remove the records first, then unlock."""
        if lease.released:
            return
        lease.released = True
        for phys in lease.physical:
            remove_record(self._record_path(phys))
        with self._mutex:
            for phys, lock in zip(lease.physical, lease.locks, strict=False):
                self._held.discard(phys)
                lock.release(force=True)


__all__ = ["Lease", "LeaseError", "LeaseManager", "LeaseTimeout", "LockDirError"]
