"""Requests waiting for cores: their order, and how they are woken.

Every request that cannot be placed at once registers a *waiter*: a record
``waiters/<ticket>.json`` (tickets sort by arrival) and a doorbell FIFO
``waiters/<ticket>.fifo``.  Whoever releases cores rings the doorbells of the
waiters the freed cores serve (:func:`served_first`), so they retry at once
instead of on their next poll; a waiter that leaves rings them all.

Order, decided by :func:`available_to` for each placement attempt: **biggest
first**, and among equals oldest first.  Cores that free up go to the
biggest waiting request that fits them, as an ideal central scheduler would
do; a smaller or newer request takes only what is left over.  That alone
could starve a big request that never fits while small ones keep taking
freed cores, so:

* **Aged waiters reserve.**  A waiter that has waited ``fair_after`` seconds
  reserves the window that will drain soonest (avoiding the reservations of
  waiters ranked above it); no request ranked below it may take a core in
  that window.  Its wait is then bounded by the holders it found, however
  many small requests arrive behind it.  The top-ranked waiter is never
  blocked by a reservation, so some waiter always progresses.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..host.procinfo import is_running, my_starttime
from .holders import read_small_file
from .lockdir import FILE_MODE

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

Window = tuple[int, ...]


@dataclass(frozen=True)
class Waiter:
    ticket: str
    pid: int
    starttime: int | None
    k: int
    windows: tuple[Window, ...]  # the physical windows its pool admits
    reserved: Window  # the physical window it reserves once aged, else ()
    since: float
    what: str

    @property
    def rank(self) -> tuple[int, str]:
        """Lower ranks go first: bigger requests, then older tickets."""
        return (-self.k, self.ticket)


NEWEST = "~"  # sorts after every ticket: a request not yet waiting ranks last among its size


def available_to(k: int, ticket: str | None, free: Iterable[int], waiters: Sequence[Waiter]) -> set[int]:
    """The physical cores a request of ``k`` cores (``ticket``: its own, or None when new) may take.

    Every waiter ranked above the request keeps its reserved window, or else,
    in rank order, the first window of the free cores that fits it.
    """
    mine = (-k, ticket or NEWEST)
    above = sorted((w for w in waiters if w.ticket != ticket and w.rank < mine), key=lambda w: w.rank)
    left = set(free)
    for waiter in above:
        left.difference_update(waiter.reserved)
    for waiter in above:
        if waiter.reserved:
            continue
        for window in waiter.windows:
            if left.issuperset(window):
                left.difference_update(window)
                break
    return left


def served_first(free: Iterable[int], waiters: Sequence[Waiter]) -> list[str]:
    """Tickets of the waiters that ``free`` cores would serve, in the order of :func:`available_to`.

    A release rings only these, so a freed core wakes the waiter that will
    take it rather than every waiter (whose retries would then queue on
    ``alloc.lock`` for nothing).
    """
    left = set(free)
    served: list[str] = []
    for waiter in sorted(waiters, key=lambda w: w.rank):
        windows = (waiter.reserved,) if waiter.reserved else waiter.windows
        for window in windows:
            if window and left.issuperset(window):
                left.difference_update(window)
                served.append(waiter.ticket)
                break
        else:
            left.difference_update(waiter.reserved)
    return served


def new_ticket() -> str:
    return f"{time.time_ns():020d}-{os.getpid():08d}-{os.urandom(3).hex()}"


class WaiterBoard:
    """The ``waiters/`` directory of one lock domain."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def read(self) -> list[Waiter]:
        """Live waiters in ticket order; records of dead waiters are removed."""
        waiters: list[Waiter] = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return waiters
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                data = read_small_file(self.directory / name)
                if data is None:
                    continue
                raw = json.loads(data)
                waiter = Waiter(
                    ticket=name[:-5],
                    pid=int(raw["pid"]),
                    starttime=raw["starttime"],
                    k=int(raw["k"]),
                    windows=tuple(tuple(w) for w in raw["windows"]),
                    reserved=tuple(raw["reserved"]),
                    since=float(raw["since"]),
                    what=str(raw["what"]),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not is_running(waiter.pid, waiter.starttime):
                self._unlink(waiter.ticket)
                continue
            waiters.append(waiter)
        return waiters

    def write(self, waiter: Waiter) -> None:
        data = {
            "pid": waiter.pid,
            "starttime": waiter.starttime,
            "k": waiter.k,
            "windows": [list(w) for w in waiter.windows],
            "reserved": list(waiter.reserved),
            "since": waiter.since,
            "what": waiter.what,
        }
        path = self.directory / f"{waiter.ticket}.json"
        tmp = self.directory / f".{waiter.ticket}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        try:
            os.write(fd, json.dumps(data, separators=(",", ":")).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def register(
        self, ticket: str, k: int, windows: tuple[Window, ...], what: str
    ) -> tuple[Waiter, int | None]:
        """Record a new waiter and open its doorbell (``None`` where FIFOs are not supported)."""
        waiter = Waiter(ticket, os.getpid(), my_starttime(), k, windows, (), time.time(), what)
        fifo = self.directory / f"{ticket}.fifo"
        bell: int | None
        try:
            os.mkfifo(fifo, FILE_MODE)
            with contextlib.suppress(PermissionError):
                os.chmod(fifo, FILE_MODE)
            # Read and write: a writer of our own keeps select() from seeing EOF.
            bell = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        except OSError:
            bell = None
        self.write(waiter)
        return waiter, bell

    def wait(self, bell: int | None, timeout: float) -> None:
        """Sleep until the doorbell rings or ``timeout`` passes."""
        if timeout <= 0:
            return
        if bell is None:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([bell], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(bell, 4096):
                    pass

    def ring(self, tickets: Iterable[str] | None = None) -> None:
        """Wake these waiters (default: all of them, as when a waiter leaves)."""
        if tickets is None:
            try:
                names = [n for n in os.listdir(self.directory) if n.endswith(".fifo")]
            except FileNotFoundError:
                return
        else:
            names = [f"{ticket}.fifo" for ticket in tickets]
        for name in names:
            try:
                # never through a link: the directory is shared and world-writable
                fd = os.open(
                    self.directory / name, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
                )
            except OSError:
                continue  # ENXIO: nobody is listening (the waiter is gone); ELOOP: a link
            try:
                if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                    continue
                os.write(fd, b"!")
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EPIPE):
                    raise
            finally:
                os.close(fd)

    def remove(self, ticket: str, bell: int | None) -> None:
        if bell is not None:
            os.close(bell)
        self._unlink(ticket)
        self.ring()

    def _unlink(self, ticket: str) -> None:
        for suffix in (".json", ".fifo"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / f"{ticket}{suffix}")
