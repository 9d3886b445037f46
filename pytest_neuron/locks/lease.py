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
* **Biggest first, and fair.**  A request that cannot be placed registers as
  a waiter; freed cores go to the biggest waiter they fit.  A waiter that has
  waited ``fair_after`` seconds reserves the window that will drain soonest,
  so a 32-core request waits at most for the holders it found, never for a
  stream of 1-core requests behind it (see waiters.py).
* **Takeover after a death.**  A holder record found on a core we just locked
  means its previous holder died without cleaning up; before returning we
  wait until that process has fully exited, because the kernel drops its
  flock a moment before its runtime closes the device.
* **Our own holdings are tracked here**, not through the lock objects'
  reentrancy: a core this process holds is busy to it like to anyone else.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..core.coreset import format_coreset
from ..core.placement import candidate_windows, choose_window, reservation_window
from .holders import Holder, new_holder, read_record, remove_record, write_record
from .lockdir import FILE_MODE, DomainMutex, LockDirError, check_lock_file, prepare_domain
from .waiters import Waiter, WaiterBoard, available_to, new_ticket, served_first

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from ..core.topology import Topology

TAKEOVER_WAIT = 10.0  # seconds to wait for a dead holder's process to be fully gone
FOREIGN_TAKEOVER_GRACE = 0.5  # the same, for a holder on another host name, whose exit we cannot watch


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
    released: bool = False

    @property
    def visible_cores(self) -> str:
        return format_coreset(self.cores)


def _sleep_interval(base: float, attempt: int, cap: float) -> float:
    """Backoff between attempts where no doorbell can wake a waiter (no FIFOs on this filesystem)."""
    return min(base * (1.5 ** min(attempt, 8)), cap) * random.uniform(0.8, 1.2)


class LeaseManager:
    """Hands out leases from ``topology``'s pool, coordinated through the lock domain ``root``."""

    def __init__(
        self,
        root: Path,
        topology: Topology,
        *,
        source: str = "the lock directory",
        poll_interval: float = 0.005,
        fair_after: float = 1.0,
        fallback_poll: float = 0.1,
        command: str | None = None,
    ) -> None:
        self.root = root
        self.topology = topology
        self.source = source
        self.poll_interval = poll_interval
        self.fair_after = fair_after
        self.fallback_poll = fallback_poll
        self.command = command
        self._board = WaiterBoard(root / "waiters")
        self._prepared = False
        self._held: set[int] = set()  # physical cores this process holds
        self._locks: dict[int, Any] = {}
        self._records: dict[int, Path] = {}
        self._mutex = threading.Lock()
        self._alloc = DomainMutex(root / "alloc.lock")
        self._timeout_exc: type[BaseException] = TimeoutError

    # -- paths -----------------------------------------------------------------
    def _lock_path(self, phys: int) -> Path:
        return self.root / "cores" / f"core-{phys:04d}.lock"

    def _record_path(self, phys: int) -> Path:
        path = self._records.get(phys)
        if path is None:
            path = self._records[phys] = self.root / "holders" / f"core-{phys:04d}.json"
        return path

    def prepare(self) -> None:
        """Check and create the lock domain (once per manager); raises LockDirError."""
        self._prepare()

    def _prepare(self) -> None:
        if not self._prepared:
            prepare_domain(self.root, self.source)
            from filelock import Timeout

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

    # -- placement ---------------------------------------------------------------
    def _logical_free(self, unavailable: set[int]) -> list[int]:
        topo = self.topology
        return [c for c in topo.cores if not unavailable.intersection(topo.physical[c])]

    def _try_place(
        self,
        k: int,
        lease_id: str,
        ticket: str | None,
        waiters: list[Waiter],
        *,
        who: tuple[str | None, str | None],
    ) -> tuple[tuple[int, ...] | None, list[Holder], set[int]]:
        """Under ``alloc.lock``: lock a window this request may take (see waiters.py for the order).

        Returns the window and the records of dead previous holders found on
        it, or ``None`` and the physical cores found busy.
        """
        topo = self.topology
        everything = set(topo.physical_cores(topo.cores))
        busy = self._recorded() | self._held
        allowed = available_to(k, ticket, everything - busy, waiters)
        checked_liveness = False
        for _ in range(len(topo.cores) + 2):
            window = choose_window(
                topo.cores, k, self._logical_free(everything - allowed), device_of=topo.device_of
            )
            if window is None:
                if checked_liveness:
                    break
                checked_liveness = True
                # A record whose holder is gone, cannot be checked from here (another
                # host name: a container sharing the lock directory), or that is not a
                # readable record at all, may be stale: let the core's lock decide.
                records = self.holders(busy - self._held)
                stale = {
                    p
                    for p in busy - self._held
                    if p not in records or not records[p].is_local() or not records[p].is_alive()
                }
                if not stale:
                    break
                busy -= stale
                allowed = available_to(k, ticket, everything - busy, waiters)
                continue
            physical = topo.physical_cores(window)
            taken: list[Any] = []
            refused: int | None = None
            for phys in physical:
                try:
                    lock = self._core_lock(phys)
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
                allowed.discard(refused)
                continue
            previous = [h for h in self.holders(physical).values() if h.lease_id != lease_id]
            holder = new_holder(lease_id, window, physical, worker=who[0], test=who[1], command=self.command)
            for phys in physical:
                write_record(self._record_path(phys), holder)
            self._held.update(physical)
            return window, previous, set()
        return None, [], busy

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
        lease_id = os.urandom(8).hex()
        board = self._board
        waiter: Waiter | None = None
        bell: int | None = None
        attempt = 0
        try:
            while True:
                with self._mutex, self._alloc:
                    waiters = board.read() if waiter is not None or self._has_waiters() else []
                    ticket = None if waiter is None else waiter.ticket
                    placed, previous, busy = self._try_place(k, lease_id, ticket, waiters, who=(worker, test))
                    if placed is None and timeout > 0:
                        waiter, bell = self._update_waiter(
                            k, waiter, bell, waiters=waiters, busy=busy, what=test or worker
                        )
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
                    )
                now = time.monotonic()
                if now >= deadline or (cancel is not None and cancel()):
                    raise self._timeout_error(k, () if waiter is None else waiter.reserved, now - start)
                # a doorbell wakes us when cores free up; the poll only catches holders that died
                pause = (
                    self.fallback_poll
                    if bell is not None
                    else _sleep_interval(self.poll_interval, attempt, self.fallback_poll)
                )
                board.wait(bell, min(deadline - now, pause))
                attempt += 1
        finally:
            if waiter is not None:
                board.remove(waiter.ticket, bell)

    def _has_waiters(self) -> bool:
        try:
            return any(name.endswith(".json") for name in os.listdir(self.root / "waiters"))
        except FileNotFoundError:
            return False

    def _update_waiter(
        self,
        k: int,
        waiter: Waiter | None,
        bell: int | None,
        *,
        waiters: list[Waiter],
        busy: set[int],
        what: str | None,
    ) -> tuple[Waiter, int | None]:
        """Register this request as a waiter, and reserve a window once it has aged."""
        topo = self.topology
        if waiter is None:
            windows = tuple(topo.physical_cores(w) for w in candidate_windows(topo.cores, k))
            return self._board.register(new_ticket(), k, windows, what or f"pid {os.getpid()}")
        if time.time() - waiter.since < self.fair_after:
            return waiter, bell
        above = {p for w in waiters if w.ticket != waiter.ticket and w.rank < waiter.rank for p in w.reserved}
        reserved = self._reserve(k, busy - set(waiter.reserved), above)
        if reserved != waiter.reserved:
            waiter = replace(waiter, reserved=reserved)
            self._board.write(waiter)
        return waiter, bell

    def _await_takeover(self, previous: list[Holder]) -> None:
        deadline = time.monotonic() + TAKEOVER_WAIT
        for holder in {h.pid: h for h in previous}.values():
            if holder.pid == os.getpid():
                continue
            if not holder.is_local():
                time.sleep(FOREIGN_TAKEOVER_GRACE)  # its exit cannot be watched from here
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
            named = "no holder is recorded (the cores may be reserved for bigger or older waiters)"
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
            for phys in lease.physical:
                self._held.discard(phys)
                self._locks[phys].release(force=True)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Ring the doorbells of the waiters the freed cores can serve now, in their order."""
        if not self._has_waiters():
            return
        waiters = self._board.read()
        known = set(self.topology.physical_cores(self.topology.cores))
        for waiter in waiters:
            known.update(p for window in waiter.windows for p in window)
        self._board.ring(served_first(known - self._recorded(), waiters))


__all__ = ["Lease", "LeaseError", "LeaseManager", "LeaseTimeout", "LockDirError"]
