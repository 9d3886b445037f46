"""Who holds a lease: its holder record, and the lease it hands down to the processes below it.

**Holder records**, readable by anyone without a lock.

One small JSON file per *lease*, ``holders/<lease id>.json``, naming its
physical cores: written by the holder *after* it has locked every core of the
lease and removed *before* it unlocks them, always atomically (see
:func:`~pytest_neuron.locks.lockdir.atomic_write`), so a reader sees a whole record
or none.  A record whose cores are unlocked therefore means its holder died
without cleaning up; its lease id tells the next holder which processes may
still use the cores (see lease.py).

Records are untrusted input (the directory is shared and world-writable):
untrusted.py reads them, checking every field's type, range and size, so a
record of the wrong shape is no record; it is imported only when there is
another holder's record to read.  Writers bound every field (:data:`LIMITS`).

**Handing a lease down** (``PYTEST_NEURON_LEASE``, :func:`handoff_value`).

A process that holds a lease exports ``PYTEST_NEURON_LEASE`` (the lock domain,
the holder's pid and start time, the cores).  A pytest run that finds it, and
finds that holder among its own ancestors (or itself, for an in-process
pytester run), uses the cores of that lease without locking them again: it
coordinates with its siblings in a nested lock domain of its own, so it can
never wait on its own ancestor.  A value whose holder is not an ancestor (a
stale variable copied into another shell, a recycled pid) is ignored.

The value also carries ``ids``: the id of this lease after the ids of the
leases it was nested in.  Every process started below the holder inherits
it, which is how a taker finds the processes that may still use a dead
holder's cores (processes.lease_carriers, lease.py's invariants).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING

from ..core.coreset import format_coreset
from ..core.plan import HANDOFF_ENV
from ..core.record import record
from ..host.procinfo import inherited_lease_ids, is_running, my_starttime, pid_namespace
from .lockdir import atomic_write, io_error

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

#: the longest text of each string field; longer values are shortened when written
LIMITS = {"host": 255, "user": 256, "command": 1024, "lease_id": 64, "worker": 128, "test": 2048, "pidns": 64}
#: patterns, compiled by re on first use: a run that finds no other record reads none
LEASE_ID = r"[0-9a-f]{8,64}"
RECORD_NAME = r"([0-9a-f]{8,64})\.json"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping its start and end."""
    if len(text) <= limit:
        return text
    keep = limit - 3
    return text[: keep - keep // 3] + "..." + text[len(text) - keep // 3 :]


@record
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
    pidns: str = ""  # the holder's pid namespace ('' when unknown: written by an older version)

    def describe(self) -> str:
        """One line for error messages and the status table."""
        who = self.test or self.worker or "a process"
        age = max(0.0, time.time() - self.since)
        return f"pid {self.pid} ({self.user}@{self.host}, {who}, for {age:.1f}s): {self.command[:120]}"

    def is_local(self) -> bool:
        """Whether this record's pid can be checked here (same host name and pid namespace)."""
        if self.host != os.uname().nodename:
            return False
        return not self.pidns or not (mine := pid_namespace()) or self.pidns == mine

    def is_alive(self) -> bool:
        """True unless the holder is certainly gone; records from elsewhere count as alive."""
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
        host=shorten(os.uname().nodename, LIMITS["host"]),
        user=shorten(current_user(), LIMITS["user"]),
        command=shorten(command or " ".join(sys.argv) or sys.executable, LIMITS["command"]),
        since=time.time(),
        lease_id=lease_id,
        cores=cores,
        physical=physical,
        worker=None if worker is None else shorten(worker, LIMITS["worker"]),
        test=None if test is None else shorten(test, LIMITS["test"]),
        pidns=_my_pidns(),
    )


@functools.lru_cache(maxsize=1)
def _my_pidns() -> str:
    return shorten(pid_namespace(), LIMITS["pidns"])


def encode_holder(holder: Holder) -> bytes:
    return json.dumps(vars(holder), separators=(",", ":")).encode()  # no deep copy: fields are flat


class HolderRecords:
    """The ``holders/`` directory of one domain, with each record read once per process.

    A record is written once and never changed (its name is its lease's
    random id), so a listing plus the records not seen before is the whole
    state; the cost of a scan grows with the number of leases, not of cores.
    """

    def __init__(self, directory: Path, read: Callable[[Path], Holder | None]) -> None:
        self.directory = directory
        self._read = read  # untrusted.read_record, passed in: it imports this module
        self._seen: dict[str, Holder | None] = {}

    def path(self, lease_id: str) -> Path:
        return self.directory / f"{lease_id}.json"

    def scan(self) -> dict[str, Holder]:
        """Every valid record, by lease id."""
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise io_error("list", self.directory, exc) from None
        seen, fresh = self._seen, {}
        found: dict[str, Holder] = {}
        for name in names:
            match = re.fullmatch(RECORD_NAME, name)
            if match is None:
                continue
            lease_id = match.group(1)
            holder = seen[lease_id] if lease_id in seen else self._read(self.directory / name)
            fresh[lease_id] = holder
            if holder is not None:
                found[lease_id] = holder
        self._seen = fresh
        return found

    def exists(self, lease_id: str) -> bool:
        """Whether the record of ``lease_id`` is still there (read again, not from the cache)."""
        return self._read(self.path(lease_id)) is not None

    def write(self, holder: Holder) -> None:
        path = self.path(holder.lease_id)
        try:
            atomic_write(path, encode_holder(holder))
        except OSError as exc:
            raise io_error("write", path, exc) from None
        self._seen[holder.lease_id] = holder

    def remove(self, lease_id: str) -> None:
        path = self.path(lease_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise io_error("remove", path, exc) from None
        self._seen.pop(lease_id, None)


# -- handing a lease down ---------------------------------------------------------------------
MAX_CHAIN = 16  # lease ids kept from the enclosing runs


def handoff_value(
    root: Path,
    cores: tuple[int, ...],
    *,
    plugin_vars: tuple[str, ...] = (),
    lease_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The ``PYTEST_NEURON_LEASE`` value for a lease this process holds.

    ``plugin_vars`` names the variables the plugin set for the lease (the
    collective ports): a nested run derives its own instead of keeping them as
    if its user had set them.  ``lease_id`` joins the ids inherited from the
    environment ``env`` (default: this process's).
    """
    ids = [*inherited_ids(os.environ if env is None else env), *([lease_id] if lease_id else [])]
    data = {
        "dir": str(root),
        "pid": os.getpid(),
        "start": my_starttime(),
        "cores": format_coreset(cores),
        "vars": list(plugin_vars),
        "ids": ids[-MAX_CHAIN:],
    }
    return json.dumps(data, separators=(",", ":"))


def inherited_ids(env: Mapping[str, str]) -> list[str]:
    """The lease ids in an inherited ``PYTEST_NEURON_LEASE``, whoever its holder is."""
    raw = env.get(HANDOFF_ENV)
    return list(inherited_lease_ids(f"{HANDOFF_ENV}={raw}".encode())) if raw else []
