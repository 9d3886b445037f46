"""Who holds a flock, read from ``/proc/locks``: for ``status`` and a stuck ``alloc.lock``'s message.

Nothing on a lease's path reads it: a run imports this module only when it reports.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..host.processes import describe_process

if TYPE_CHECKING:
    from collections.abc import Mapping

PROC_LOCKS = Path("/proc/locks")

#: ``(major, minor, inode)`` of a flocked file -> pid that took the lock (0: not visible here).
LockTable = dict[tuple[int, int, int], int]


def parse_proc_locks(text: str) -> LockTable:
    """The granted flocks in ``/proc/locks`` text (blocked requests, ``->``, and POSIX/OFD locks skipped)."""
    table: LockTable = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            table.setdefault((int(major, 16), int(minor, 16), int(inode)), max(0, int(fields[4])))
        except ValueError:
            continue
    return table


def find_lock(table: Mapping[tuple[int, int, int], int], dev: int, ino: int) -> int | None:
    """The pid locking the file ``(dev, ino)``, 0 if not visible, ``None`` if it is not locked.

    Some filesystems (overlayfs, btrfs) report another device in /proc/locks
    than stat() does: when the device never appears there, match the inode alone.
    """
    major, minor = os.major(dev), os.minor(dev)
    if (major, minor, ino) in table:
        return table[(major, minor, ino)]
    if any(key[:2] == (major, minor) for key in table):
        return None
    return next((pid for key, pid in table.items() if key[2] == ino), None)


def read_proc_locks(path: Path = PROC_LOCKS) -> LockTable | None:
    try:
        return parse_proc_locks(path.read_text())
    except (OSError, UnicodeDecodeError):
        return None


def flock_holder(st: os.stat_result) -> int | None:
    """The pid holding a flock on the file ``st`` describes, from /proc/locks (0: not visible here)."""
    table = read_proc_locks()
    return None if table is None else find_lock(table, st.st_dev, st.st_ino)


def stuck_message(path: Path, waited: float) -> str:
    """Why a wait for ``alloc.lock`` at ``path`` gave up, naming the process stuck inside it."""
    who = "an unknown process"
    with contextlib.suppress(OSError):
        pid = flock_holder(os.stat(path))
        if pid:
            who = describe_process(pid)
        elif pid == 0:
            who = "a process not visible here (another pid namespace)"
    return (
        f"gave up after {waited:.1f}s waiting for {str(path)!r}, held by {who}; a process "
        "stopped inside the allocation blocks every run sharing this lock directory: resume it "
        "(kill -CONT) or end it"
    )
