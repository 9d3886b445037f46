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
import math
import os
import re
import select
import stat
import time
from typing import TYPE_CHECKING, TypeGuard

from ..core.record import record
from ..host.procinfo import is_running, my_starttime, pid_namespace, shared_clock
from .holders import shorten
from .lockdir import FILE_MODE, atomic_write, io_error
from .untrusted import MAX_CORE, MAX_CORES, MAX_PID, MAX_SINCE, decode_json, read_small_file

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

Window = tuple[int, ...]
TICKET = re.compile(r"[0-9]{20}-[0-9]{8,10}-[0-9a-f]{6}")
MAX_WHAT = 1024
MAX_WINDOWS = 4096


@record
class Waiter:
    ticket: str
    pid: int
    starttime: int | None
    k: int
    windows: tuple[Window, ...]  # the physical windows its pool admits
    reserved: Window  # the physical window it reserves once aged, else ()
    since: float  # wall clock, for display only
    what: str
    host: str = ""
    pidns: str = ""
    mono: float | None = None  # registration time on the host's shared clock (procinfo.shared_clock)

    @property
    def rank(self) -> tuple[int, str]:
        """Lower ranks go first: bigger requests, then older tickets."""
        return (-self.k, self.ticket)

    def is_local(self) -> bool:
        """Whether its pid can be checked here (same host name and pid namespace)."""
        if self.host and self.host != os.uname().nodename:
            return False
        return not self.pidns or not (mine := pid_namespace()) or self.pidns == mine

    def waited(self) -> float:
        """Seconds since it registered, on the shared clock when the record has it."""
        if self.mono is not None:
            return max(0.0, shared_clock() - self.mono)
        return max(0.0, time.time() - self.since)


def _ints(value: object, limit: int) -> tuple[int, ...] | None:
    if not isinstance(value, list) or len(value) > limit:
        return None
    if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < MAX_CORE for c in value):
        return None
    return tuple(value)


def decode_waiter(ticket: str, raw: object) -> Waiter | None:
    """A :class:`Waiter` from a record's decoded JSON, or ``None`` unless every field is valid.

    The one decoder of waiter records (the lease and ``status`` both use it):
    records are untrusted input in a shared, world-writable directory.
    """
    if not TICKET.fullmatch(ticket) or not isinstance(raw, dict):
        return None
    pid, k, since, what = raw.get("pid"), raw.get("k"), raw.get("since"), raw.get("what")
    starttime, mono = raw.get("starttime"), raw.get("mono")
    host, pidns = raw.get("host", ""), raw.get("pidns", "")
    windows_raw = raw.get("windows")
    if not isinstance(windows_raw, list) or len(windows_raw) > MAX_WINDOWS:
        return None
    windows = [_ints(w, MAX_CORES) for w in windows_raw]
    reserved = _ints(raw.get("reserved"), MAX_CORES)
    if (
        reserved is None
        or not _number(since, 0, MAX_SINCE)
        or (mono is not None and not _number(mono, 0, math.inf))
    ):
        return None
    if not (_whole(pid) and 0 < pid < MAX_PID and _whole(k) and 0 < k <= MAX_CORES):
        return None
    if starttime is not None and not _whole(starttime):
        return None
    if not (_text(what, MAX_WHAT) and _text(host, 255) and _text(pidns, 64)):
        return None
    if not all(w is not None and len(w) == k for w in windows):
        return None
    return Waiter(
        ticket=ticket,
        pid=pid,
        starttime=starttime,
        k=k,
        windows=tuple(w for w in windows if w is not None),
        reserved=reserved,
        since=float(since),
        what=what,
        host=host,
        pidns=pidns,
        mono=None if mono is None else float(mono),
    )


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object, low: float, high: float) -> TypeGuard[float]:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return math.isfinite(value) and low <= value < high


def _text(value: object, limit: int) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= limit


def read_waiters(directory: Path) -> list[Waiter]:
    """Every valid waiter record in ``directory``, in ticket order (dead or alive)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise io_error("list", directory, exc) from None
    found: list[Waiter] = []
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            waiter = decode_waiter(name[:-5], decode_json(read_small_file(directory / name)))
            if waiter is not None:
                found.append(waiter)
    return found


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
    """Tickets sort by arrival on the host's shared clock, which a wall-clock step cannot move."""
    return f"{int(shared_clock() * 1e9):020d}-{os.getpid():08d}-{os.urandom(3).hex()}"


class WaiterBoard:
    """The ``waiters/`` directory of one lock domain."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def read(self) -> list[Waiter]:
        """Live waiters in ticket order; records of dead waiters are removed.

        A waiter in another pid namespace (or on another host name) cannot be
        looked up by pid: it is alive while its doorbell has a reader.
        """
        waiters: list[Waiter] = []
        for waiter in read_waiters(self.directory):
            alive = is_running(waiter.pid, waiter.starttime) if waiter.is_local() else self._listening(waiter)
            if not alive:
                self._unlink(waiter.ticket)
                continue
            waiters.append(waiter)
        return waiters

    def _listening(self, waiter: Waiter) -> bool:
        try:
            fd = os.open(
                self.directory / f"{waiter.ticket}.fifo",
                os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
            )
        except OSError as exc:
            return exc.errno not in (errno.ENXIO, errno.ENOENT)
        os.close(fd)
        return True

    def write(self, waiter: Waiter) -> None:
        data = {
            "pid": waiter.pid,
            "starttime": waiter.starttime,
            "k": waiter.k,
            "windows": [list(w) for w in waiter.windows],
            "reserved": list(waiter.reserved),
            "since": waiter.since,
            "what": waiter.what,
            "host": waiter.host,
            "pidns": waiter.pidns,
            "mono": waiter.mono,
        }
        path = self.directory / f"{waiter.ticket}.json"
        try:
            atomic_write(path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as exc:
            raise io_error("write", path, exc) from None

    def register(
        self, ticket: str, k: int, windows: tuple[Window, ...], what: str
    ) -> tuple[Waiter, int | None]:
        """Record a new waiter and open its doorbell (``None`` where FIFOs are not supported)."""
        waiter = Waiter(
            ticket,
            os.getpid(),
            my_starttime(),
            k,
            windows,
            (),
            time.time(),
            shorten(what, MAX_WHAT),
            host=os.uname().nodename,
            pidns=pid_namespace(),
            mono=shared_clock(),
        )
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
