"""What this host knows about a process, read from /proc without side effects."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcState:
    exists: bool
    zombie: bool = False
    starttime: int | None = None
    ppid: int | None = None


def proc_state(pid: int, proc: Path = Path("/proc")) -> ProcState:
    """State of ``pid``: gone, a zombie, or running, with its start time in clock ticks.

    The start time tells a live process from a new one that reused the pid.
    """
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return ProcState(exists=False)
    except OSError:
        return ProcState(exists=True)
    # The command name (field 2) may hold blanks and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    return ProcState(
        exists=True,
        zombie=fields[0] in ("Z", "X"),
        ppid=int(fields[1]),
        starttime=int(fields[19]),
    )


def is_running(pid: int, starttime: int | None) -> bool:
    """``pid`` is alive, not a zombie, and (when ``starttime`` is known) the same process."""
    state = proc_state(pid)
    if not state.exists or state.zombie:
        return False
    return starttime is None or state.starttime is None or state.starttime == starttime


def ancestors(pid: int | None = None) -> list[tuple[int, int | None]]:
    """``(pid, starttime)`` of ``pid`` (default: this process) and each of its ancestors."""
    chain: list[tuple[int, int | None]] = []
    current: int | None = os.getpid() if pid is None else pid
    while current and current > 0 and len(chain) < 256:
        state = proc_state(current)
        if not state.exists:
            break
        chain.append((current, state.starttime))
        current = state.ppid
    return chain


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
