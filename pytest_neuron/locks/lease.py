"""Exclusive, crash-safe leases of NeuronCores across processes and runs.

(Longer than the package's other modules on purpose: placement under ``alloc.lock``, waiting,
takeover and release are one protocol whose invariants, below, hold only together; the pieces
that stand alone are in lockdir.py, holders.py and waiters.py.)

Invariants (each is tested with real processes in tests/test_lease*.py):

* **One flock per physical core, held exactly as long as the lease.**  The
  kernel drops a flock when its holder dies, so a SIGKILLed holder leaves no
  stale lease.  Lock files are never unlinked; each process opens them once
  and keeps the descriptors (lockdir.CoreLocks).
* **All or nothing, without hold-and-wait.**  A placement is decided under the
  domain's short ``alloc.lock``: the process picks a free window, takes each
  core's lock *without blocking*, and on any refusal gives back what it took.
  Nobody ever blocks on a core lock while holding another, so two requests
  cannot deadlock; ``alloc.lock`` is never held while waiting for cores.
* **No wait is unbounded.**  Waiting for cores ends at the request's bound;
  waiting for ``alloc.lock`` ends at that bound too (at least
  ``MUTEX_MIN_WAIT``), and the error names the process stuck inside it.
* **Biggest first, and fair.**  A request that cannot be placed registers as
  a waiter; freed cores go to the biggest waiter they fit.  A waiter that has
  waited ``fair_after`` seconds (on the host's shared clock, which a wall-clock
  step cannot move) reserves the window that will drain soonest, so a 32-core
  request waits at most for the holders it found, never for a stream of
  1-core requests behind it (see waiters.py).
* **A lease's cores are handed on only when no process that inherited the
  lease is alive.**  Who may still use a core: the holder, every process
  forked from it (they share its lock descriptors, so the kernel keeps the
  cores locked while any of them lives), and every process started below it
  with the lease's environment: the plugin exports the lease id in
  ``PYTEST_NEURON_LEASE`` (holders.py), which every ``exec`` inherits, and
  ``/proc/<pid>/environ`` shows it for the holder's user and root.  So:

  - **release** by a live holder hands the cores back only when none of its
    descendants carries the lease id; otherwise the lease *lingers* (locked,
    recorded) and is handed back by a later call once they have exited, or by
    the kernel when the holder exits (the record then stays for the next
    taker).  The holder makes itself a child subreaper on its first lease,
    so orphans of its descendants stay its descendants.
  - **takeover**: a record on cores we could lock means its holder died; the
    taker waits (``TAKEOVER_WAIT`` at most) for that pid to be gone, since the
    kernel drops the flock a moment before the runtime closes the device, and
    takes the cores only when no live process carries that lease's id.  While
    one does, those cores count as busy: the request waits, and its timeout
    message (like ``status``) names the survivors.
  - Limits: a survivor of *another user* whose environment this user cannot
    read is not seen (run as the same user or root); a record from another
    host name or pid namespace cannot be checked, so its cores are taken
    after ``FOREIGN_TAKEOVER_GRACE`` once its lock is free.
* **One holder record per lease** (holders.py), written after every core is
  locked and removed before any is unlocked; a failed write gives the cores
  back, so no record or lock is left half-written.
* **A replaced lock directory stops the run.**  If ``alloc.lock`` or a core's
  lock file was removed or replaced while this process used it (``rm -rf`` of
  the directory), leases from it are no longer exclusive: every later
  request fails with :class:`LockDirError` instead of handing out cores.
* **Every I/O error on the lock directory is a** :class:`LockDirError`
  whose ``str()`` is one line naming the path and the errno.
* **Our own holdings are tracked here**, not through the lock objects'
  reentrancy: a core this process holds is busy to it like to anyone else.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from ..core.coreset import format_coreset, is_contiguous
from ..core.plan import disjoint_windows
from ..core.record import mutable_record
from ..host.procinfo import become_subreaper, descendants, is_running, proc_state
from .holders import Holder, HolderRecords, new_holder
from .lockdir import (
    CoreLocks,
    DomainMutex,
    LockDirError,
    MutexTimeout,
    has_records,
    io_error,
    prepare_domain,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from ..core.topology import Topology
    from .waiters import Waiter, WaiterBoard

TAKEOVER_WAIT = 10.0  # seconds to wait for a dead holder's process to be fully gone
FOREIGN_TAKEOVER_GRACE = 0.5  # the same, for a holder on another host name, whose exit we cannot watch


class LeaseError(Exception):
    """A request that can never be granted from this pool."""


class LeaseTimeout(TimeoutError):
    """The wait bound passed; ``str()`` names the request, the pool and the holders."""

    def __init__(self, message: str, holders: list[Holder]) -> None:
        super().__init__(message)
        self.holders = holders


@mutable_record
class Lease:
    lease_id: str
    cores: tuple[int, ...]
    physical: tuple[int, ...]
    wait_seconds: float
    domain: Path
    acquired_at: float
    released: bool = False
    lingering: tuple[int, ...] = ()  # descendants that kept it from being handed back

    @property
    def visible_cores(self) -> str:
        return format_coreset(self.cores)


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
        adopt_orphans: bool = True,
    ) -> None:
        self.root = root
        self.topology = topology
        self.source = source
        self.poll_interval = poll_interval
        self.fair_after = fair_after
        self.fallback_poll = fallback_poll
        self.command = command
        self.adopt_orphans = adopt_orphans
        self._waiters: WaiterBoard | None = None
        self._prepared = False
        self._held: set[int] = set()  # physical cores this process holds
        self._locks = CoreLocks(root / "cores", source)
        self._records = HolderRecords(root / "holders", read_record)
        self._lingering: dict[str, Lease] = {}
        self._mutex = threading.Lock()
        self._alloc = DomainMutex(root / "alloc.lock")
        self._survivors: dict[str, list[int]] = {}  # dead leases still used, for the timeout message
        self._known_survivors: dict[str, list[tuple[int, int | None]]] = {}
        self._all_physical = frozenset(topology.physical_cores(topology.cores))

    @property
    def _board(self) -> WaiterBoard:
        """The waiters of this domain, read and written only when a request waits or others wait
        (so an uncontended lease never imports waiters.py)."""
        if self._waiters is None:
            from .waiters import WaiterBoard

            self._waiters = WaiterBoard(self.root / "waiters")
        return self._waiters

    def prepare(self) -> None:
        """Check and create the lock domain (once per manager); raises LockDirError."""
        self._prepare()

    def _prepare(self) -> None:
        if not self._prepared:
            prepare_domain(self.root, self.source)
            if self.adopt_orphans:
                become_subreaper()
            self._prepared = True

    # -- reading state without locks -------------------------------------------
    def holders(self, physical: Iterable[int]) -> dict[int, Holder]:
        """The recorded holder of each of ``physical`` that has one (a live one before a dead one)."""
        wanted = set(physical)
        found: dict[int, Holder] = {}
        for holder in self._records.scan().values():
            for phys in wanted.intersection(holder.physical):
                if phys not in found or (holder.is_alive() and not found[phys].is_alive()):
                    found[phys] = holder
        return found

    # -- placement ---------------------------------------------------------------
    def _logical_free(self, unavailable: set[int]) -> list[int]:
        topo = self.topology
        return [c for c in topo.cores if not unavailable.intersection(topo.physical[c])]

    def _choose(self, k: int, free: list[int]) -> tuple[int, ...] | None:
        """placement.choose_window; for the whole pool (a single run's slice, an xdist worker's, a
        controller's reservation) without importing placement.py: the pool is the only window."""
        topo = self.topology
        if k == len(topo.cores):
            return whole_pool_window(topo.cores, free)
        from ..core.placement import choose_window

        return choose_window(topo.cores, k, free, device_of=topo.device_of)

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
        everything = set(self._all_physical)
        records = self._records.scan()
        by_core: dict[int, list[Holder]] = {}
        for holder in records.values():
            for phys in holder.physical:
                by_core.setdefault(phys, []).append(holder)
        busy = set(by_core) | self._held
        allowed = _available_to(k, ticket, everything - busy, waiters)
        checked_records = False
        self._survivors = {}
        for _ in range(len(topo.cores) + 2):
            window = self._choose(k, self._logical_free(everything - allowed))
            if window is None:
                if checked_records:
                    break
                checked_records = True
                # A recorded core may be free: its holder died, or the record is not its holder's
                # (planted, or a recycled pid).  Let the core's lock decide, except for the cores
                # of dead leases that processes which inherited them still use.
                survivors = self._survivors_of([h for h in records.values() if not h.is_alive()])
                still_used = {p for h in records.values() if h.lease_id in survivors for p in h.physical}
                maybe = {p for p in by_core if p not in self._held and p not in still_used}
                if not maybe:
                    break
                busy -= maybe
                allowed = _available_to(k, ticket, everything - busy, waiters)
                continue
            physical = topo.physical_cores(window)
            taken: list[int] = []
            refused: int | None = None
            try:
                for phys in physical:
                    if not self._locks.try_lock(phys):
                        refused = phys
                        break
                    taken.append(phys)
            except BaseException:
                self._unlock(taken)
                raise
            if refused is not None:
                self._unlock(taken)
                busy.add(refused)
                allowed.discard(refused)
                continue
            window_set = set(physical)
            # our snapshot is from before the locks: a holder may have released since (it removes
            # its record before it unlocks), so only a record still there is a previous holder's
            previous = [
                h
                for h in records.values()
                if h.lease_id != lease_id
                and window_set.intersection(h.physical)
                and self._records.exists(h.lease_id)
            ]
            survivors = self._survivors_of(previous)
            if survivors:
                self._unlock(taken)
                used = {p for h in previous if h.lease_id in survivors for p in h.physical}
                busy |= used
                allowed -= used
                continue
            holder = new_holder(lease_id, window, physical, worker=who[0], test=who[1], command=self.command)
            try:
                self._records.write(holder)
            except BaseException:
                self._unlock(taken)
                raise
            self._held.update(physical)
            return window, previous, set()
        return None, [], busy

    def _survivors_of(self, dead: list[Holder]) -> dict[str, list[int]]:
        """The live processes that inherited each of these leases (by lease id), if any.

        A lease whose known survivors all still run is still used, without a new
        scan of /proc: waiters retrying behind a long-lived survivor stay cheap.
        """
        ids = {h.lease_id for h in dead if h.is_local()}
        found: dict[str, list[int]] = {}
        for lease_id in list(ids):
            known = self._known_survivors.get(lease_id)
            if known and all(is_running(pid, start) for pid, start in known):
                found[lease_id] = [pid for pid, _ in known]
                ids.discard(lease_id)
        if ids:
            from ..host.processes import lease_carriers

            scanned = lease_carriers(ids)
            found.update(scanned)
            for lease_id, pids in scanned.items():
                self._known_survivors[lease_id] = [(pid, proc_state(pid).starttime) for pid in pids]
        for lease_id in ids - set(found):
            self._known_survivors.pop(lease_id, None)
        self._survivors.update(found)
        return found

    def _unlock(self, physical: Iterable[int]) -> None:
        for phys in physical:
            self._locks.unlock(phys)

    def check_request(self, k: int) -> None:
        """Raise :class:`LeaseError` for a request this pool can never grant (no wait)."""
        topo = self.topology
        pool = f"pool {format_coreset(topo.cores)} ({topo.source})"
        if k < 1 or k > topo.size:
            raise LeaseError(f"cannot lease {k} cores from a pool of {topo.size} ({topo.source})")
        if not disjoint_windows(topo.cores, k):
            raise LeaseError(
                f"cannot lease {k} core{'s' if k != 1 else ''} from {pool}: it has no {k} consecutive "
                "cores, and the runtime needs a contiguous range"
            )

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
        :class:`LeaseTimeout` when the bound passes (also when ``alloc.lock``
        stays held that long), :class:`LockDirError` when the lock directory
        is unusable.
        """
        topo = self.topology
        self.check_request(k)
        self._prepare()
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        lease_id = os.urandom(8).hex()
        waiter: Waiter | None = None
        bell: int | None = None
        attempt = 0
        try:
            while True:
                self._settle_lingering()
                with self._mutex:
                    try:
                        self._alloc.acquire(deadline - time.monotonic())
                    except MutexTimeout as exc:
                        raise LeaseTimeout(
                            f"{k} core{'s' if k != 1 else ''} of pool {format_coreset(topo.cores)}: {exc}", []
                        ) from None
                    try:
                        waiters = self._board.read() if waiter is not None or self._has_waiters() else []
                        ticket = None if waiter is None else waiter.ticket
                        placed, previous, busy = self._try_place(
                            k, lease_id, ticket, waiters, who=(worker, test)
                        )
                        if placed is None and timeout > 0:
                            from .contention import update_waiter

                            waiter, bell = update_waiter(
                                self,
                                self._board,
                                k,
                                waiter,
                                bell,
                                waiters=waiters,
                                busy=busy,
                                what=test or worker,
                            )
                    finally:
                        self._alloc.release()
                if placed is not None:
                    if previous:
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
                from .contention import sleep_interval, timeout_message  # the request waits

                if now >= deadline or (cancel is not None and cancel()):
                    reserved = () if waiter is None else waiter.reserved
                    message, holders = timeout_message(
                        self, k, reserved, now - start, lingering=self._lingering, survivors=self._survivors
                    )
                    raise LeaseTimeout(message, holders)
                # a doorbell wakes us when cores free up; the poll only catches holders that died
                pause = (
                    self.fallback_poll
                    if bell is not None
                    else sleep_interval(self.poll_interval, attempt, self.fallback_poll)
                )
                self._board.wait(bell, min(deadline - now, pause))
                attempt += 1
        finally:
            if waiter is not None:
                self._board.remove(waiter.ticket, bell)

    def _has_waiters(self) -> bool:
        try:
            return has_records(self.root / "waiters")
        except OSError as exc:
            raise io_error("list", self.root / "waiters", exc, self.source) from None

    def _await_takeover(self, previous: list[Holder]) -> None:
        """Wait for the dead holders' pids to be gone, then drop their records."""
        deadline = time.monotonic() + TAKEOVER_WAIT
        for holder in {h.pid: h for h in previous}.values():
            if holder.pid == os.getpid():
                continue
            if not holder.is_local():
                time.sleep(FOREIGN_TAKEOVER_GRACE)  # its exit cannot be watched from here
                continue
            while holder.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
        for holder in previous:
            self._records.remove(holder.lease_id)

    def release(self, lease: Lease) -> None:
        """Give the cores back: remove the record first, then unlock.

        When a descendant of this process still carries the lease (a test's
        subprocess left running), the lease lingers instead: cores locked,
        record kept, ``lease.lingering`` naming the pids; a later call to
        :meth:`acquire` or :meth:`release` hands it back once they have exited.
        """
        if lease.released:
            return
        self._settle_lingering()
        survivors = self._descendants_carrying(lease.lease_id)
        if survivors:
            lease.lingering = tuple(survivors)
            self._lingering[lease.lease_id] = lease
            return
        self._hand_back(lease)

    def _hand_back(self, lease: Lease) -> None:
        lease.released = True
        self._lingering.pop(lease.lease_id, None)
        try:
            self._records.remove(lease.lease_id)
        finally:
            with self._mutex:
                self._held.difference_update(lease.physical)
                self._unlock(lease.physical)
        self._wake_waiters()

    def _settle_lingering(self) -> None:
        for lease in list(self._lingering.values()):
            survivors = self._descendants_carrying(lease.lease_id)
            if survivors:
                lease.lingering = tuple(survivors)
            else:
                lease.lingering = ()
                self._hand_back(lease)

    def lingering(self) -> list[Lease]:
        """Leases released while a descendant still used them, not yet handed back."""
        self._settle_lingering()
        return list(self._lingering.values())

    @staticmethod
    def _descendants_carrying(lease_id: str) -> list[int]:
        mine = descendants(os.getpid())
        if not mine:
            return []
        from ..host.processes import lease_carriers

        found = lease_carriers({lease_id}, pids=mine)  # live ones: it skips zombies itself
        return found.get(lease_id, [])

    def _wake_waiters(self) -> None:
        """Ring the doorbells of the waiters the freed cores can serve now, in their order."""
        if not self._has_waiters():
            return
        waiters = self._board.read()
        known = set(self._all_physical)
        for waiter in waiters:
            known.update(p for window in waiter.windows for p in window)
        recorded = {p for h in self._records.scan().values() for p in h.physical}
        from .waiters import served_first

        self._board.ring(served_first(known - recorded, waiters))


__all__ = ["Lease", "LeaseError", "LeaseManager", "LeaseTimeout", "LockDirError"]


def read_record(path: Path) -> Holder | None:
    """untrusted.read_record, imported when a lease first finds a record it has not written."""
    from .untrusted import read_record as read

    return read(path)


def whole_pool_window(pool: tuple[int, ...], free: list[int]) -> tuple[int, ...] | None:
    """What placement.choose_window returns for a request of the whole ``pool``: the pool itself
    when every core is free and it is one consecutive range (the runtime rejects gaps), else
    nothing (tests/test_placement.py checks the two agree)."""
    return pool if len(free) == len(pool) and is_contiguous(pool) else None


def _available_to(k: int, ticket: str | None, free: set[int], waiters: list[Waiter]) -> set[int]:
    """waiters.available_to, without importing waiters.py when nobody waits (then it is ``free``)."""
    if not waiters:
        return set(free)
    from .waiters import available_to

    return available_to(k, ticket, free, waiters)
