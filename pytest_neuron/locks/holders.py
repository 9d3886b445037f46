"""Holder records: who holds a core, readable by anyone without taking a lock.

A record is a small JSON file per physical core, written by the holder *after*
it has locked the core and removed *before* it unlocks it, always by
write-to-temporary-then-rename, so a reader sees a whole record or none.  A
record whose core is unlocked therefore means its holder died without cleaning
up; its pid tells the next holder which process to wait for.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..host.procinfo import is_running, my_starttime

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class Holder:
    pid: int
    starttime: int | None
    host: str
    user: str
    command: str
    since: float
    lease_id: str
    cores: tuple[int, ...] = ()
    physical: tuple[int, ...] = ()
    worker: str | None = None
    test: str | None = None

    def describe(self) -> str:
        """One line for error messages and the status table."""
        who = self.test or self.worker or "a process"
        age = max(0.0, time.time() - self.since)
        return f"pid {self.pid} ({self.user}@{self.host}, {who}, for {age:.1f}s): {self.command[:120]}"

    def is_local(self) -> bool:
        """Whether this record's pid can be checked here (same host name, so same pid space)."""
        return self.host == os.uname().nodename

    def is_alive(self) -> bool:
        """True unless the holder is certainly gone; records from another host count as alive."""
        if not self.is_local():
            return True
        return is_running(self.pid, self.starttime)


@functools.lru_cache(maxsize=1)
def current_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def new_holder(
    lease_id: str,
    cores: tuple[int, ...],
    physical: tuple[int, ...],
    *,
    worker: str | None,
    test: str | None,
    command: str | None = None,
) -> Holder:
    return Holder(
        pid=os.getpid(),
        starttime=my_starttime(),
        host=os.uname().nodename,
        user=current_user(),
        command=command or " ".join(sys.argv) or sys.executable,
        since=time.time(),
        lease_id=lease_id,
        cores=cores,
        physical=physical,
        worker=worker,
        test=test,
    )


def write_record(path: Path, holder: Holder) -> None:
    """Write ``holder`` to ``path`` atomically (temporary file, then rename)."""
    data = json.dumps(vars(holder), separators=(",", ":")).encode()  # no deep copy: fields are flat
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


MAX_RECORD = 64 * 1024


def read_small_file(path: Path) -> bytes | None:
    """The bytes of a record file, or ``None`` unless it is a regular file (not a link).

    The lock directory is shared and world-writable: a planted link to a FIFO
    or /dev/zero must not block or flood a reader.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, MAX_RECORD)
    finally:
        os.close(fd)


def read_record(path: Path) -> Holder | None:
    """The record at ``path``, or ``None`` when there is none or it is not ours to read."""
    data = read_small_file(path)
    if data is None:
        return None
    try:
        raw = json.loads(data)
        raw["cores"] = tuple(raw.get("cores", ()))
        raw["physical"] = tuple(raw.get("physical", ()))
        holder = Holder(**raw)
    except (ValueError, TypeError, AttributeError):
        return None
    # the directory is shared and world-writable: a record of the wrong shape is no record
    fields = (holder.pid, holder.since, holder.command, holder.host, holder.user)
    if not (
        isinstance(fields[0], int)
        and isinstance(fields[1], (int, float))
        and all(isinstance(f, str) for f in fields[2:])
    ):
        return None
    return holder


def remove_record(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
