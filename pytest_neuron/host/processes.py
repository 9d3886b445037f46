"""Other processes, read from /proc: which carry a lease, what they run, whose children they are.

:func:`lease_carriers` finds the processes that inherited a lease (see locks/holders.py): the
lease's id travels in ``PYTEST_NEURON_LEASE`` through every ``exec``, and
``/proc/<pid>/environ`` shows the environment a process was started with.  A run imports this
module only when it has something to find: descendants at release, a dead holder's lease, a
nested lease's holder, a message naming a process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .procinfo import HANDOFF_MARK, PROC, all_pids, inherited_lease_ids, proc_state

if TYPE_CHECKING:
    from pathlib import Path


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


def command_line(pid: int, proc: Path = PROC, limit: int = 200) -> str:
    """``pid``'s command line, blanks for NULs, at most ``limit`` characters ('' if unreadable)."""
    try:
        with open(proc / str(pid) / "cmdline", "rb") as handle:
            raw = handle.read(limit * 4)
    except OSError:
        return ""
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    return text[:limit]


def describe_process(pid: int, proc: Path = PROC) -> str:
    """``pid 123 (stopped): python -m pytest ...`` for messages that name a process."""
    state = proc_state(pid, proc)
    if not state.exists:
        return f"pid {pid} (gone)"
    command = command_line(pid, proc) or (f"[{state.comm}]" if state.comm else "?")
    return f"pid {pid} ({state.state_name}): {command}"


MAX_ENVIRON = 1 << 20


def lease_carriers(
    lease_ids: set[str], proc: Path = PROC, *, exclude: int | None = None, pids: list[int] | None = None
) -> dict[str, list[int]]:
    """Live processes (of ``pids``, default all) whose start environment carries one of ``lease_ids``.

    Only processes whose environment this user may read are seen (the same
    user, or root): see lease.py for what that means across users.
    """
    found: dict[str, list[int]] = {}
    if not lease_ids:
        return found
    me = os.getpid() if exclude is None else exclude
    for pid in all_pids(proc) if pids is None else pids:
        if pid == me:
            continue
        try:
            with open(proc / str(pid) / "environ", "rb") as handle:
                raw = handle.read(MAX_ENVIRON)
        except OSError:
            continue
        if HANDOFF_MARK not in raw:
            continue
        hits = lease_ids.intersection(inherited_lease_ids(raw))
        if hits and not proc_state(pid, proc).zombie:
            for lease_id in hits:
                found.setdefault(lease_id, []).append(pid)
    return found
