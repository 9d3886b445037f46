"""What this host knows about a process, read from /proc without side effects.

The one parser of ``/proc/<pid>/stat`` (:func:`parse_stat`) lives here; every
other module asks :func:`proc_state`.  What a run needs of other processes only when
it reports, waits or takes over (their command lines, ancestry, which of them carry
a lease) is in processes.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.plan import Controller
from ..core.record import record

if TYPE_CHECKING:
    from collections.abc import Callable

PROC = Path("/proc")

#: one-letter process states of /proc/<pid>/stat, as ``ps`` spells them out
STATE_NAMES = {
    "R": "running",
    "S": "sleeping",
    "D": "in uninterruptible I/O",
    "T": "stopped",
    "t": "stopped by a debugger",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
    "P": "parked",
}


@record
class ProcState:
    exists: bool
    zombie: bool = False
    starttime: int | None = None
    ppid: int | None = None
    state: str = "?"
    comm: str = ""

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, self.state)


def parse_stat(raw: str) -> ProcState | None:
    """A ``/proc/<pid>/stat`` line; ``None`` if it is not one.

    The command name (field 2) may hold blanks and parentheses: split after the last ``)``.
    """
    close = raw.rfind(")")
    fields = raw[close + 2 :].split()
    if close < 0 or len(fields) < 20:
        return None
    try:
        return ProcState(
            exists=True,
            zombie=fields[0] in ("Z", "X"),
            ppid=int(fields[1]),
            starttime=int(fields[19]),
            state=fields[0],
            comm=raw[raw.find("(") + 1 : close],
        )
    except ValueError:
        return None


def proc_state(pid: int, proc: Path = PROC) -> ProcState:
    """State of ``pid``: gone, a zombie, or running, with its start time in clock ticks.

    The start time tells a live process from a new one that reused the pid.
    """
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return ProcState(exists=False)
    except OSError:
        return ProcState(exists=True)
    return parse_stat(raw) or ProcState(exists=True)


def is_running(pid: int, starttime: int | None) -> bool:
    """``pid`` is alive, not a zombie, and (when ``starttime`` is known) the same process."""
    state = proc_state(pid)
    if not state.exists or state.zombie:
        return False
    return starttime is None or state.starttime is None or state.starttime == starttime


def all_pids(proc: Path = PROC) -> list[int]:
    try:
        return [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []


def children_of(pid: int, proc: Path = PROC) -> list[int]:
    """Direct children of ``pid`` (from its threads' ``children`` files, else a scan of /proc)."""
    found: list[int] = []
    try:
        tids = os.listdir(proc / str(pid) / "task")
        for tid in tids:
            found += [int(c) for c in (proc / str(pid) / "task" / tid / "children").read_text().split()]
        return found
    except (OSError, ValueError):
        pass
    for other in all_pids(proc):
        if proc_state(other, proc).ppid == pid:
            found.append(other)
    return found


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """Every live descendant of ``pid``, parents before children."""
    found: list[int] = []
    stack = [pid]
    while stack and len(found) < 100_000:
        for child in children_of(stack.pop(), proc):
            found.append(child)
            stack.append(child)
    return found


HANDOFF_MARK = b"PYTEST_NEURON_LEASE="


def inherited_lease_ids(environ: bytes) -> tuple[str, ...]:
    """The lease ids in the ``PYTEST_NEURON_LEASE`` entry of a raw ``/proc/<pid>/environ``."""
    for entry in environ.split(b"\0"):
        if entry.startswith(HANDOFF_MARK):
            with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
                data = json.loads(entry[len(HANDOFF_MARK) :])
                ids = data.get("ids", ()) if isinstance(data, dict) else ()
                if isinstance(ids, list):
                    return tuple(i for i in ids[:64] if isinstance(i, str))
            return ()
    return ()


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_PRCTL: list[Callable[..., int] | None] = []  # libc's prctl, looked up once per process


def prctl(option: int, arg: int) -> bool:
    """``prctl(option, arg, 0, 0, 0)`` through libc: whether it returned 0 (False where there is none)."""
    if not _PRCTL:
        _PRCTL.append(_prctl_from_ctypes_core() or _prctl_from_ctypes())
    function = _PRCTL[0]
    return function is not None and int(function(option, arg, 0, 0, 0)) == 0


def _prctl_from_ctypes_core() -> Callable[..., int] | None:
    """libc's ``prctl``, typed as ctypes would type it, from ``_ctypes`` (CPython's C half of ctypes).

    ``import ctypes`` builds its whole type system in Python, which cost every process with a pool
    about 5.3 M instructions (docs/performance.md); this needs two types and one function pointer.
    ``_ctypes`` is not a public module, so this is the one place that touches it, and
    tests/test_lease_survivors.py fails if it stops working on CPython (:func:`_prctl_from_ctypes`
    is the fallback elsewhere, e.g. on PyPy).
    """
    try:
        import _ctypes

        class Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "i"

        class ULong(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "L"

        class Prctl(_ctypes.CFuncPtr):
            _argtypes_ = (Int, ULong, ULong, ULong, ULong)
            _restype_ = Int
            _flags_ = _ctypes.FUNCFLAG_CDECL

        function: Callable[..., int] = Prctl(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))  # type: ignore[arg-type]
    except (ImportError, AttributeError, OSError, TypeError):
        return None
    return function


def _prctl_from_ctypes() -> Callable[..., int] | None:
    try:
        import ctypes

        function = ctypes.CDLL(None).prctl
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    function.restype = ctypes.c_int
    return function


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux 3.4+); False where it cannot.

    An orphan below this process is then re-parented to it rather than to
    init, so :func:`descendants` still finds a test's grandchild whose parent
    exited.  Such orphans are not reaped here: one that exits stays a zombie
    (which uses no device and counts as gone) until this process exits.
    """
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def pid_namespace() -> str:
    """This process's pid namespace (``pid:[4026531836]``), '' where it cannot be read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def shared_clock() -> float:
    """Seconds on a clock every process of this host shares and the wall clock cannot move.

    CLOCK_BOOTTIME is system-wide (also across pid namespaces) and keeps
    counting through a suspend; CLOCK_MONOTONIC where it does not exist.
    """
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return time.clock_gettime(clock)


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def this_process() -> Controller:
    """This process as its xdist workers' watchdog knows it (host/watchdog.py)."""
    return Controller(boot_id(), os.getpid(), my_starttime())


_MINE: dict[int, int | None] = {}


def my_starttime() -> int | None:
    """This process's start time (cached per pid: a forked child reads its own)."""
    pid = os.getpid()
    if pid not in _MINE:
        _MINE[pid] = proc_state(pid).starttime
    return _MINE[pid]


def open_devices(prefix: str) -> list[str]:
    """Paths starting with ``prefix`` that this process has open (from /proc/self/fd)."""
    found: list[str] = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return sorted(set(found))
