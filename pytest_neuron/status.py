"""``pytest-neuron status``: which physical NeuronCores are held, and by whom.

It reads a lock domain (see lockdir.py) *without taking any lock*, not even a
probe flock, which would make a concurrent non-blocking acquire fail.  Whether
a core is locked comes from ``/proc/locks``, matched by device and inode
against ``cores/core-NNNN.lock``; who holds it from ``holders/core-NNNN.json``.
``/proc/locks`` is read before and after the records: a holder writes its
record only while locked, so a record seen between the two reads is never
mistaken for a stale one because of a lease that began or ended meanwhile.

The pure part (:func:`classify`, :func:`render_text`, :func:`to_json`) turns
data into a table or a JSON document; :func:`collect` does the reading.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.coreset import format_coreset
from .host.procinfo import is_running
from .locks.holders import Holder, read_record, read_small_file
from .locks.lockdir import DEFAULT_LOCK_DIR, LOCK_DIR_ENV

if TYPE_CHECKING:
    from collections.abc import Mapping

HELD, HELD_NO_RECORD, FREE, STALE = "held", "held (no record)", "free", "stale record"
PROC_LOCKS = Path("/proc/locks")
MAX_NESTING = 16

_CORE_FILE = re.compile(r"core-(\d+)\.(lock|json)")
_NESTED_DIR = re.compile(r"(\d+)-(\d+|None)")

#: ``(major, minor, inode)`` of a flocked file -> pid that took the lock (0: not visible here).
LockTable = dict[tuple[int, int, int], int]


class StatusError(Exception):
    """The lock directory cannot be read; ``str()`` is the one-line reason."""


@dataclass(frozen=True)
class CoreStatus:
    core: int
    state: str
    holder: Holder | None = None
    lock_pid: int | None = None  # from /proc/locks; 0 when the locker is not visible here
    pid_gone: bool | None = None  # for a record: its pid has exited (None: another host, cannot tell)


@dataclass(frozen=True)
class WaiterStatus:
    ticket: str
    pid: int
    k: int
    reserved: tuple[int, ...]
    since: float
    what: str
    alive: bool


@dataclass(frozen=True)
class DomainStatus:
    root: Path
    cores: tuple[CoreStatus, ...]
    waiters: tuple[WaiterStatus, ...]
    nested: tuple[DomainStatus, ...] = ()
    owner_pid: int | None = None  # nested domains: the lease holder they belong to
    owner_start: int | None = None
    owner_alive: bool | None = None

    @property
    def used(self) -> bool:
        return bool(self.cores or self.waiters or self.nested)

    @property
    def has_stale(self) -> bool:
        return any(c.state == STALE for c in self.cores) or any(n.has_stale for n in self.nested)

    @property
    def busy(self) -> bool:
        return (
            bool(self.waiters) or any(c.state != FREE for c in self.cores) or any(n.busy for n in self.nested)
        )


@dataclass(frozen=True)
class Report:
    lock_dir: Path
    source: str
    domain: DomainStatus | None  # None: the directory does not exist
    locks_note: str | None = None  # set when /proc/locks could not be read


# -- pure ------------------------------------------------------------------------------------------------
def resolve_lock_dir(option: str | None, env: Mapping[str, str]) -> tuple[Path, str]:
    """The lock directory in effect and where it came from: --lock-dir > environment > default."""
    if option is not None:
        return Path(option), "--lock-dir"
    if env.get(LOCK_DIR_ENV, "").strip():
        return Path(env[LOCK_DIR_ENV]), f"environment variable {LOCK_DIR_ENV}"
    return Path(DEFAULT_LOCK_DIR), "default"


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


def classify(
    core: int, holder: Holder | None, lock_pid: int | None, pid_gone: bool | None, *, known: bool
) -> CoreStatus:
    """The state of one core from its lock (``known=False``: lock state unknown) and its record."""
    if not known:
        state = FREE if holder is None else STALE if pid_gone else HELD
    elif lock_pid is not None:
        if holder is not None and pid_gone and lock_pid not in (0, holder.pid):
            holder = None  # a new holder took over a dead one's core and has not replaced its record yet
        state = HELD if holder is not None else HELD_NO_RECORD
    else:
        state = FREE if holder is None else STALE
    return CoreStatus(core, state, holder, lock_pid, pid_gone if holder is not None else None)


def format_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{max(0.0, seconds):.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_since(since: float, now: float) -> str:
    """Local time of day, with the date when it was not today."""
    then, today = time.localtime(since), time.localtime(now)
    same_day = then[:3] == today[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", then)


def _table(rows: list[list[str]], indent: str) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _state_text(c: CoreStatus) -> str:
    if c.state != STALE:
        return c.state
    return STALE + {True: " (pid gone)", False: " (pid still running)", None: " (other host)"}[c.pid_gone]


def _core_row(c: CoreStatus, now: float) -> list[str]:
    h = c.holder
    if h is None:
        pid = "" if c.lock_pid is None else str(c.lock_pid or "?")
        return [str(c.core), _state_text(c), pid, "", "", "", "", "", ""]
    cells = [str(c.core), _state_text(c), str(h.pid), h.user, h.host, h.worker or "-"]
    return [*cells, format_since(h.since, now), format_age(now - h.since), h.test or h.command[:80]]


def _summary(domain: DomainStatus) -> str:
    counts: dict[str, int] = {}
    for c in domain.cores:
        counts[c.state] = counts.get(c.state, 0) + 1
    order = (HELD, HELD_NO_RECORD, STALE, FREE)
    parts = [
        f"{n} {state}{'s' if state == STALE and n > 1 else ''}" for state in order if (n := counts.get(state))
    ]
    return f"{len(domain.cores)} core{'s' if len(domain.cores) != 1 else ''}: " + (", ".join(parts) or "none")


def _render_domain(domain: DomainStatus, now: float, indent: str) -> list[str]:
    lines = [indent + _summary(domain)]
    if domain.cores:
        header = ["CORE", "STATE", "PID", "USER", "HOST", "WORKER", "SINCE", "AGE", "TEST"]
        lines += _table([header] + [_core_row(c, now) for c in domain.cores], indent)
    if domain.waiters:
        lines.append(f"{indent}waiters, oldest ticket first:")
        rows = [["PID", "WANTS", "RESERVED", "WAITING", "WHAT"]]
        for w in domain.waiters:
            reserved = format_coreset(w.reserved) if w.reserved else "-"
            pid = str(w.pid) if w.alive else f"{w.pid} (gone)"
            rows.append([pid, str(w.k), reserved, format_age(now - w.since), w.what])
        lines += _table(rows, indent + "  ")
    for sub in domain.nested:
        alive = "running" if sub.owner_alive else "gone"
        label = f"{indent}  nested domain of holder pid {sub.owner_pid} ({alive}), {sub.root}"
        if sub.busy:
            lines += [label + ":", *_render_domain(sub, now, indent + "    ")]
        else:
            n = len(sub.cores)
            lines.append(f"{label}: {n} core{'s' if n != 1 else ''}, all free" if n else f"{label}: no cores")
    return lines


def render_text(report: Report, now: float) -> str:
    where = f"lock directory {report.lock_dir} (from {report.source})"
    if report.domain is None or not report.domain.used:
        return f"no run has used {where} yet\n"
    lines = [where]
    if report.locks_note:
        lines.append(report.locks_note)
    lines += _render_domain(report.domain, now, "")
    if report.domain.has_stale:
        lines.append(
            "stale record: its holder exited without cleaning up; the next lease takes the core over"
        )
    return "\n".join(lines) + "\n"


def _domain_json(domain: DomainStatus | None, now: float) -> dict[str, Any]:
    if domain is None:
        return {"cores": [], "waiters": [], "nested": []}
    cores = [asdict(c) for c in domain.cores]  # holder: the record, or None
    waiters = [{**asdict(w), "waiting_seconds": round(now - w.since, 3)} for w in domain.waiters]
    nested = [
        {
            "lock_dir": str(n.root),
            "holder_pid": n.owner_pid,
            "holder_start": n.owner_start,
            "holder_alive": n.owner_alive,
            **_domain_json(n, now),
        }
        for n in domain.nested
    ]
    return {"cores": cores, "waiters": waiters, "nested": nested}


def to_json(report: Report, now: float) -> dict[str, Any]:
    return {
        "lock_dir": str(report.lock_dir),
        "source": report.source,
        "exists": report.domain is not None,
        "locks": "records only" if report.locks_note else str(PROC_LOCKS),
        **_domain_json(report.domain, now),
    }


# -- reading (no locks, no writes) -------------------------------------------------------------------------
def read_proc_locks(path: Path = PROC_LOCKS) -> LockTable | None:
    try:
        return parse_proc_locks(path.read_text())
    except (OSError, UnicodeDecodeError):
        return None


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise StatusError(f"cannot read {str(path)!r}: {exc.strerror}") from None


def _read_waiters(directory: Path) -> tuple[WaiterStatus, ...]:
    found: list[WaiterStatus] = []
    for name in _listdir(directory):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            data = read_small_file(directory / name)
            if data is None:
                continue
            raw = json.loads(data)
            pid, k, reserved, since = (
                int(raw["pid"]),
                int(raw["k"]),
                tuple(raw["reserved"]),
                float(raw["since"]),
            )
            alive = is_running(pid, raw["starttime"])
            found.append(WaiterStatus(name[:-5], pid, k, reserved, since, str(raw["what"]), alive))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return tuple(found)


@dataclass
class _Raw:
    """What one domain holds, before the lock state is known."""

    root: Path
    files: dict[int, tuple[int, int]]  # core -> (st_dev, st_ino) of its lock file
    records: dict[int, Holder]
    waiters: tuple[WaiterStatus, ...]
    nested: list[tuple[int, int | None, _Raw]]


def _scan(root: Path, depth: int = 0) -> _Raw:
    files: dict[int, tuple[int, int]] = {}
    for name in _listdir(root / "cores"):
        if (m := _CORE_FILE.fullmatch(name)) and m.group(2) == "lock":
            try:
                st = os.stat(root / "cores" / name)
            except OSError:
                continue
            files[int(m.group(1))] = (st.st_dev, st.st_ino)
    records: dict[int, Holder] = {}
    for name in _listdir(root / "holders"):
        if (m := _CORE_FILE.fullmatch(name)) and m.group(2) == "json":
            record = read_record(root / "holders" / name)
            if record is not None:
                records[int(m.group(1))] = record
    nested: list[tuple[int, int | None, _Raw]] = []
    for name in _listdir(root / "nested") if depth < MAX_NESTING else []:
        m = _NESTED_DIR.fullmatch(name)
        if m and (root / "nested" / name).is_dir():
            start = None if m.group(2) == "None" else int(m.group(2))
            nested.append((int(m.group(1)), start, _scan(root / "nested" / name, depth + 1)))
    return _Raw(root, files, records, _read_waiters(root / "waiters"), nested)


def _pid_gone(holder: Holder, here: str) -> bool | None:
    return None if holder.host != here else not is_running(holder.pid, holder.starttime)


def _build(raw: _Raw, table: LockTable | None, here: str) -> DomainStatus:
    cores = []
    for core in sorted(set(raw.files) | set(raw.records)):
        holder = raw.records.get(core)
        dev_ino = raw.files.get(core)
        lock_pid = None if table is None or dev_ino is None else find_lock(table, *dev_ino)
        gone = None if holder is None else _pid_gone(holder, here)
        cores.append(classify(core, holder, lock_pid, gone, known=table is not None))
    nested = tuple(
        replace(
            _build(sub, table, here), owner_pid=pid, owner_start=start, owner_alive=is_running(pid, start)
        )
        for pid, start, sub in raw.nested
    )
    return DomainStatus(raw.root, tuple(cores), raw.waiters, nested)


def collect(lock_dir: Path, source: str, *, proc_locks: Path = PROC_LOCKS) -> Report:
    """The state of ``lock_dir`` and its nested domains; :class:`StatusError` if it is not a directory."""
    try:
        st = os.stat(lock_dir)
    except FileNotFoundError:
        return Report(lock_dir, source, None)
    except OSError as exc:
        raise StatusError(f"lock directory {str(lock_dir)!r} (from {source}): {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StatusError(f"lock directory {str(lock_dir)!r} (from {source}) is not a directory")
    before = read_proc_locks(proc_locks)
    raw = _scan(lock_dir)
    after = read_proc_locks(proc_locks)
    table = None if before is None or after is None else {**after, **before}
    note = None
    if table is None:
        note = (
            f"note: {proc_locks} is unreadable; states come from holder records alone "
            "(a core locked without a record shows as free)"
        )
    return Report(lock_dir, source, _build(raw, table, os.uname().nodename), note)  # as Holder.is_local
