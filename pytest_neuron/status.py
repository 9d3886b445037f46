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

import os
import re
import stat
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.coreset import format_coreset
from .host.procinfo import describe_process, is_running, lease_carriers
from .locks.holders import RECORD_NAME, Holder, read_record
from .locks.lockdir import (
    DEFAULT_LOCK_DIR,
    LOCK_DIR_ENV,
    PROC_LOCKS,
    LockTable,
    find_lock,
    read_proc_locks,
)
from .locks.waiters import read_waiters

if TYPE_CHECKING:
    from collections.abc import Mapping

HELD, HELD_NO_RECORD, FREE, STALE = "held", "held (no record)", "free", "stale record"
MAX_NESTING = 16

_CORE_FILE = re.compile(r"core-(\d+)\.(lock|json)")
_NESTED_DIR = re.compile(r"(\d+)-(\d+|None)")


class StatusError(Exception):
    """The lock directory cannot be read; ``str()`` is the one-line reason."""


@dataclass(frozen=True)
class CoreStatus:
    core: int
    state: str
    holder: Holder | None = None
    lock_pid: int | None = None  # from /proc/locks; 0 when the locker is not visible here
    pid_gone: bool | None = None  # for a record: its pid has exited (None: another host, cannot tell)
    survivors: tuple[int, ...] = ()  # stale record: live processes that inherited its lease


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
    alloc_holder: str | None = None  # who holds alloc.lock right now (pid, state, command)

    @property
    def used(self) -> bool:
        return bool(self.cores or self.waiters or self.nested or self.alloc_holder)

    @property
    def has_stale(self) -> bool:
        return any(c.state == STALE for c in self.cores) or any(n.has_stale for n in self.nested)

    @property
    def busy(self) -> bool:
        return (
            bool(self.waiters) or any(c.state != FREE for c in self.cores) or any(n.busy for n in self.nested)
        )


@dataclass(frozen=True)
class LeaseStatus:
    """One lease of a domain, from its (validated) holder record and the lock state of its cores."""

    holder: Holder
    state: str  # HELD or STALE (a record whose cores are all free): see classify()
    cores: tuple[int, ...]  # the physical cores of the record that are in this state
    pid_gone: bool | None  # the holder's pid has exited (None: another host or pid namespace)
    survivors: tuple[int, ...] = ()  # stale: live processes started under the lease, which keep it


def lease_rows(domain: DomainStatus) -> list[LeaseStatus]:
    """The domain's per-core rows grouped into one row per lease and state, in core order.

    Cores locked without any record (``HELD_NO_RECORD``) and free cores have no
    lease; they stay in ``domain.cores``.
    """
    rows: dict[tuple[str, str], list[CoreStatus]] = {}
    for core in domain.cores:
        if core.holder is not None and core.state in (HELD, STALE):
            rows.setdefault((core.holder.lease_id, core.state), []).append(core)
    return [
        LeaseStatus(cs[0].holder, state, tuple(c.core for c in cs), cs[0].pid_gone, cs[0].survivors)  # type: ignore[arg-type]
        for (_, state), cs in rows.items()
    ]


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
        if not option.strip():
            raise StatusError(f"--lock-dir {option!r} is empty: give the directory a run uses")
        return Path(option), "--lock-dir"
    if env.get(LOCK_DIR_ENV, "").strip():
        return Path(env[LOCK_DIR_ENV]), f"environment variable {LOCK_DIR_ENV}"
    return Path(DEFAULT_LOCK_DIR), "default"


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
    if c.survivors:
        return f"{STALE} (pid gone, still used by pid {', '.join(map(str, c.survivors[:3]))})"
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


STALE_NOTE = (
    "stale record: its holder no longer holds the core's lock (it exited without cleaning up); the next "
    "lease waits for the processes started under that lease to exit (and, if the recorded pid still runs, "
    "up to 10s for it), then takes the core over"
)


def render_text(report: Report, now: float) -> str:
    where = f"lock directory {report.lock_dir} (from {report.source})"
    if report.domain is None or not report.domain.used:
        return f"no run has used {where} yet\n"
    lines = [where]
    if report.locks_note:
        lines.append(report.locks_note)
    if report.domain.alloc_holder:
        lines.append(f"alloc.lock is held by {report.domain.alloc_holder}")
    lines += _render_domain(report.domain, now, "")
    if report.domain.has_stale:
        lines.append(STALE_NOTE)
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
def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise StatusError(f"cannot read {str(path)!r}: {exc.strerror}") from None


def _read_waiters(directory: Path) -> tuple[WaiterStatus, ...]:
    """Validated waiter records (waiters.decode_waiter), each with whether its pid runs."""
    try:
        waiters = read_waiters(directory)
    except OSError as exc:
        raise StatusError(str(exc)) from None
    return tuple(
        WaiterStatus(
            w.ticket,
            w.pid,
            w.k,
            w.reserved,
            w.since,
            w.what,
            is_running(w.pid, w.starttime) if w.is_local() else True,
        )
        for w in waiters
    )


def read_leases(root: Path) -> dict[str, Holder]:
    """Every valid holder record of the domain ``root``, by lease id: one per lease (holders.py).

    Each field of each record is validated (holders.decode_holder); records
    of the wrong shape, size or name are left out.  No lock is taken.
    """
    leases: dict[str, Holder] = {}
    for name in _listdir(root / "holders"):
        if RECORD_NAME.fullmatch(name):
            record = read_record(root / "holders" / name)
            if record is not None:
                leases[record.lease_id] = record
    return leases


@dataclass
class _Raw:
    """What one domain holds, before the lock state is known."""

    root: Path
    files: dict[int, tuple[int, int]]  # core -> (st_dev, st_ino) of its lock file
    records: dict[int, list[Holder]]  # core -> the records naming it (two while one takes a dead one over)
    waiters: tuple[WaiterStatus, ...]
    nested: list[tuple[int, int | None, _Raw]]
    alloc: tuple[int, int] | None = None  # (st_dev, st_ino) of alloc.lock


def _scan(root: Path, depth: int = 0) -> _Raw:
    files: dict[int, tuple[int, int]] = {}
    for name in _listdir(root / "cores"):
        if (m := _CORE_FILE.fullmatch(name)) and m.group(2) == "lock":
            try:
                st = os.stat(root / "cores" / name)
            except OSError:
                continue
            files[int(m.group(1))] = (st.st_dev, st.st_ino)
    leases = read_leases(root)
    records: dict[int, list[Holder]] = {}
    for record in leases.values():
        for phys in record.physical:
            records.setdefault(phys, []).append(record)
    nested: list[tuple[int, int | None, _Raw]] = []
    for name in _listdir(root / "nested") if depth < MAX_NESTING else []:
        m = _NESTED_DIR.fullmatch(name)
        if m and (root / "nested" / name).is_dir():
            start = None if m.group(2) == "None" else int(m.group(2))
            nested.append((int(m.group(1)), start, _scan(root / "nested" / name, depth + 1)))
    alloc = None
    try:
        st = os.stat(root / "alloc.lock")
        alloc = (st.st_dev, st.st_ino)
    except OSError:
        pass
    return _Raw(root, files, records, _read_waiters(root / "waiters"), nested, alloc)


def _pid_gone(holder: Holder, here: str) -> bool | None:
    return None if holder.host != here else not is_running(holder.pid, holder.starttime)


def _pick(records: list[Holder], lock_pid: int | None, here: str) -> Holder | None:
    """The record that describes a core: the one of the pid locking it, else a live one, else any."""
    if not records:
        return None
    for record in records:
        if lock_pid and record.pid == lock_pid:
            return record
    return next((r for r in records if _pid_gone(r, here) is False), records[0])


def _build(raw: _Raw, table: LockTable | None, here: str) -> DomainStatus:
    cores = []
    for core in sorted(set(raw.files) | set(raw.records)):
        dev_ino = raw.files.get(core)
        lock_pid = None if table is None or dev_ino is None else find_lock(table, *dev_ino)
        holder = _pick(raw.records.get(core, []), lock_pid, here)
        gone = None if holder is None else _pid_gone(holder, here)
        cores.append(classify(core, holder, lock_pid, gone, known=table is not None))
    stale = {c.holder.lease_id for c in cores if c.state == STALE and c.holder and c.pid_gone}
    survivors = {k: tuple(v) for k, v in lease_carriers(stale).items()} if stale else {}
    cores = [
        replace(c, survivors=survivors.get(c.holder.lease_id, ())) if c.holder is not None else c
        for c in cores
    ]
    nested = tuple(
        replace(
            _build(sub, table, here), owner_pid=pid, owner_start=start, owner_alive=is_running(pid, start)
        )
        for pid, start, sub in raw.nested
    )
    alloc_pid = None if table is None or raw.alloc is None else find_lock(table, *raw.alloc)
    alloc_holder = None if not alloc_pid else describe_process(alloc_pid)
    return DomainStatus(raw.root, tuple(cores), raw.waiters, nested, alloc_holder=alloc_holder)


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
