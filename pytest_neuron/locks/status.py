"""``pytest-neuron status``: which physical NeuronCores are held, by which run, and who waits.

(Longer than the package's other modules on purpose: it reads every source the status command
shows, the holder and waiter records of a domain and its nested domains, /proc/locks, the processes
behind them and foreign holders, into one snapshot without taking a lock; the rendering is
core/status_view.py.)

It reads a lock domain (see locks/lockdir.py) *without taking any lock*, not
even a probe flock, which would make a concurrent non-blocking acquire fail.
Whether a core is locked comes from ``/proc/locks``, matched by device and
inode against ``cores/core-NNNN.lock``; who holds it from the holder records
(one per lease, ``holders/<lease id>.json``).  ``/proc/locks`` is read before
and after the records: a holder writes its record only while locked, so a
record seen between the two reads is never mistaken for a stale one because of
a lease that began or ended meanwhile.

This module only reads: :func:`read_report` gives the per-core state
(:func:`classify`, :func:`lease_rows`), and :func:`collect` turns it, ``/proc``
and ``neuron-ls`` into a :class:`~pytest_neuron.core.status_view.View` (one row per
lease, the run of each, foreign holders, the pool), which status_view.py
renders.  The record layout is known here alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.coreset import runs
from ..core.plan import NESTED, holder_of
from ..core.planning import as_typed, path_dirs
from ..core.settings import DEFAULT_LOCK_DIR, LOCK_DIR_ENV, SettingError, parse_lock_dir
from ..core.status_view import (
    FREE,
    HELD,
    HELD_NO_RECORD,
    STALE,
    UNKNOWN_RUN,
    ForeignHolder,
    LeaseRow,
    Run,
    View,
    WaitRow,
)
from ..host.detect import HOST_ROOT_ENV, NEURON_LS_ENV
from ..host.processes import ancestors, describe_process, lease_carriers
from ..host.procinfo import is_running, proc_state
from .holders import RECORD_NAME, Holder
from .lockdir import LockDirError
from .proclocks import PROC_LOCKS, LockTable, find_lock, read_proc_locks
from .untrusted import read_record
from .waiters import read_waiters

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ..core.topology import Host

__all__ = ["FREE", "HELD", "HELD_NO_RECORD", "STALE", "StatusError", "collect", "resolve_lock_dir"]

PROC = Path("/proc")
MAX_NESTING = 16
DEVICE_PREFIX_ENV = "PYTEST_NEURON_DEVICE_PREFIX"  # as in the plugin: the fake runtime's device files
#: the code an execnet (xdist) worker runs (``python -c CODE``): its run is its parent, the controller
XDIST_WORKER_CODE = "import sys;exec(eval(sys.stdin.readline()))"

_CORE_FILE = re.compile(r"core-(\d+)\.(lock|json)")
_DEVICE_INDEX = re.compile(r"(\d+)$")


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
        value, source = option, "--lock-dir"
    elif env.get(LOCK_DIR_ENV, "").strip():
        value, source = env[LOCK_DIR_ENV], f"environment variable {LOCK_DIR_ENV}"
    else:
        return Path(DEFAULT_LOCK_DIR), "default"
    try:  # the one lock-dir grammar (~ expanded, absolute): the directory the runs themselves use
        return Path(parse_lock_dir(value, source)), source
    except SettingError as exc:
        raise StatusError(str(exc)) from None


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


# -- from cores to leases (pure) ----------------------------------------------------------------------
def _contiguous(cores: Iterable[int]) -> list[tuple[int, ...]]:
    return [tuple(range(first, last + 1)) for first, last in runs(cores)]


def view_rows(cores: Iterable[CoreStatus], run_of: Mapping[int, str]) -> list[LeaseRow]:
    """One row per lease: cores with one record (same lease id and state) together, cores locked
    without a record by locking pid and contiguous range.  ``run_of``: pid -> run id."""
    by_lease: dict[tuple[str, str, int], list[CoreStatus]] = {}
    no_record: dict[int, list[int]] = {}
    for c in cores:
        if c.state == FREE:
            continue
        if c.holder is None:
            no_record.setdefault(c.lock_pid or 0, []).append(c.core)
        else:
            by_lease.setdefault((c.holder.lease_id, c.state, c.holder.pid), []).append(c)
    rows: list[LeaseRow] = []
    for (_, state, pid), group in by_lease.items():
        h = group[0].holder
        assert h is not None
        run = run_of.get(pid, UNKNOWN_RUN)
        rows.append(
            LeaseRow(
                cores=tuple(sorted(c.core for c in group)),
                state=state,
                pid=pid,
                run=UNKNOWN_RUN if state == STALE else run,
                user=h.user,
                host=h.host,
                worker=h.worker,
                test=h.test,
                command=h.command,
                since=h.since,
                lease_id=h.lease_id,
                logical=tuple(h.cores),
                pid_gone=group[0].pid_gone,
                survivors=group[0].survivors,
            )
        )
    for pid, physical in no_record.items():
        run = run_of.get(pid, UNKNOWN_RUN) if pid else UNKNOWN_RUN
        rows += [
            LeaseRow(cores=group, state=HELD_NO_RECORD, pid=pid or None, run=run)
            for group in _contiguous(physical)
        ]
    rows.sort(key=lambda r: r.cores)
    return rows


# -- processes (reads /proc, never signals) -----------------------------------------------------------
def _cmdline(pid: int, proc: Path = PROC) -> list[str]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _user_of(pid: int, proc: Path = PROC) -> str:
    try:
        uid = os.stat(proc / str(pid)).st_uid
    except OSError:
        return ""
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def run_pid(pid: int) -> int:
    """The process whose run ``pid`` is part of: an xdist worker's controller, else itself."""
    argv = _cmdline(pid)
    if XDIST_WORKER_CODE in argv[2:] and argv[argv.index(XDIST_WORKER_CODE) - 1] == "-c":
        parent = proc_state(pid).ppid
        if parent:
            return parent
    return pid


def _local_run(pid: int, here: str, command: str | None = None, user: str | None = None) -> Run:
    """The run of local ``pid``; a holder record's command is its run's (a worker's: its controller's)."""
    top = run_pid(pid)
    shown = command or as_typed(_cmdline(top), path_dirs())
    who = (user if user and top == pid else _user_of(top)) or user or ""
    return Run(f"{here}:{top}", top, here, who, shown)


# -- foreign holders ----------------------------------------------------------------------------------
def _device_cores(host: Host | None, device: int) -> tuple[int, ...] | None:
    if host is None:
        return None
    cores = {p for core, dev in host.device_of.items() if dev == device for p in host.physical.get(core, ())}
    return tuple(sorted(cores)) or None


def foreign_from_neuron_ls(data: object, host: Host | None) -> list[ForeignHolder] | None:
    """``neuron_processes`` of each device in ``neuron-ls --json-output``; ``None`` when it lists none."""
    if not isinstance(data, list) or not any(isinstance(e, dict) and "neuron_processes" in e for e in data):
        return None
    found: dict[int, ForeignHolder] = {}
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("neuron_processes"), list):
            continue
        device = entry.get("neuron_device")
        for proc in entry["neuron_processes"]:
            if not isinstance(proc, dict) or not isinstance(proc.get("pid"), int):
                continue
            pid = proc["pid"]
            name = f"neuron{device}"
            cores = _device_cores(host, device) if isinstance(device, int) else None
            old = found.get(pid)
            if old is not None:
                merged = None if old.cores is None or cores is None else tuple(sorted({*old.cores, *cores}))
                found[pid] = replace(old, devices=(*old.devices, name), cores=merged)
            else:
                command = str(proc.get("command") or "") or as_typed(_cmdline(pid), path_dirs())
                found[pid] = ForeignHolder(pid, _user_of(pid), command, (name,), cores, "neuron-ls")
    return list(found.values())


def foreign_from_proc(prefix: str, host: Host | None, proc: Path = PROC) -> list[ForeignHolder]:
    """Processes with a file under ``prefix`` (``/dev/neuron``) open, from ``/proc/*/fd``."""
    found: list[ForeignHolder] = []
    me = os.getpid()
    for name in _safe_listdir(proc):
        if not name.isdigit() or int(name) == me:
            continue
        devices: set[str] = set()
        for fd in _safe_listdir(proc / name / "fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(proc / name / "fd" / fd)
                if target.startswith(prefix) and _DEVICE_INDEX.search(target[len(prefix) :] or "x"):
                    devices.add(target)
        if not devices:
            continue
        indices = [int(m.group(1)) for d in devices if (m := _DEVICE_INDEX.search(d))]
        per_device = [_device_cores(host, i) for i in indices]
        cores = (
            None
            if any(c is None for c in per_device)
            else tuple(sorted({p for c in per_device if c for p in c}))
        )
        pid = int(name)
        command = as_typed(_cmdline(pid, proc), path_dirs())
        found.append(
            ForeignHolder(pid, _user_of(pid, proc), command, tuple(sorted(devices)), cores, "/proc/*/fd")
        )
    return found


def _safe_listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def run_neuron_ls(env: Mapping[str, str]) -> object | None:
    """The parsed output of ``neuron-ls --json-output`` (or ``$PYTEST_NEURON_NEURON_LS``); None on failure.

    Quietly: a host without neuron-ls is nothing to warn about in a status report.
    """
    import logging

    from ..host.detect import neuron_ls_output

    command = env[NEURON_LS_ENV].split() if env.get(NEURON_LS_ENV, "").strip() else None
    log = logging.getLogger("pytest_neuron")
    level, log.level = log.level, logging.CRITICAL
    try:
        output = neuron_ls_output(command, env, root=Path(env.get(HOST_ROOT_ENV, "/")))
    finally:
        log.setLevel(level)
    try:
        return None if output is None else json.loads(output)
    except ValueError:
        return None


def find_host(env: Mapping[str, str]) -> tuple[Host | None, object | None]:
    """This host's cores (neuron-ls, else /dev/neuron*) and neuron-ls's raw output."""
    from ..core.detection import host_from_neuron_ls
    from ..core.topology import TopologyError
    from ..host.detect import detect_with_dev

    data = run_neuron_ls(env)
    if data is not None:
        with contextlib.suppress(TopologyError):
            return host_from_neuron_ls(json.dumps(data), env), data
    return detect_with_dev(Path(env.get(HOST_ROOT_ENV, "/")), env), data


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
    except (LockDirError, OSError) as exc:  # one line naming the path and errno
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

    Each field of each record is validated (untrusted.decode_holder); records
    of the wrong shape, size or name are left out.  No lock is taken.
    """
    leases: dict[str, Holder] = {}
    for name in _listdir(root / "holders"):
        if re.fullmatch(RECORD_NAME, name):
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
    for name in _listdir(root / NESTED) if depth < MAX_NESTING else []:
        holder = holder_of(name)
        if holder is not None and (root / NESTED / name).is_dir():
            nested.append((*holder, _scan(root / NESTED / name, depth + 1)))
    alloc = None
    try:
        st = os.stat(root / "alloc.lock")
        alloc = (st.st_dev, st.st_ino)
    except OSError:
        pass
    return _Raw(root, files, records, _read_waiters(root / "waiters"), nested, alloc)


def _pid_gone(holder: Holder, here: str) -> bool | None:
    """Whether the holder's pid is gone; None where it cannot be looked up (another host or pid namespace)."""
    return None if holder.host != here or not holder.is_local() else not holder.is_alive()


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


def read_report(lock_dir: Path, source: str, *, proc_locks: Path = PROC_LOCKS) -> Report:
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


# -- the view -----------------------------------------------------------------------------------------
def _runs(domain: DomainStatus, here: str, runs: dict[str, Run], run_of: dict[int, str]) -> None:
    """Fill ``runs`` and ``run_of`` (pid -> run id) for every process of ``domain`` and its nested ones."""
    for c in domain.cores:
        h = c.holder
        if h is not None and c.state != STALE:
            explicit = getattr(h, "run", None) or getattr(h, "run_id", None)
            if h.host != here:
                run = Run(str(explicit or f"{h.host}:{h.pid}"), h.pid, h.host, h.user, h.command)
            else:
                run = _local_run(h.pid, here, h.command, h.user)
                run = replace(run, id=str(explicit)) if explicit else run
            runs.setdefault(run.id, run)
            run_of[h.pid] = run.id
        elif h is None and c.lock_pid and c.lock_pid not in run_of:
            run = _local_run(c.lock_pid, here)
            runs.setdefault(run.id, run)
            run_of[c.lock_pid] = run.id
    for w in domain.waiters:
        if w.alive and w.pid not in run_of:
            run = _local_run(w.pid, here)
            runs.setdefault(run.id, run)
            run_of[w.pid] = run.id
    for sub in domain.nested:
        _runs(sub, here, runs, run_of)


def _view(
    domain: DomainStatus | None,
    *,
    lock_dir: str,
    source: str,
    pool: tuple[int, ...] | None,
    pool_source: str,
    runs: dict[str, Run],
    run_of: dict[int, str],
) -> View:
    if domain is None:
        return View(
            lock_dir, source, False, pool or (), pool_source if pool else "nothing: no run has used it"
        )
    seen = tuple(c.core for c in domain.cores)
    if pool is None:
        pool, pool_source = seen, "the cores this lock directory has seen"
    waiters = tuple(
        WaitRow(
            w.ticket,
            w.pid,
            w.k,
            w.reserved,
            w.since,
            w.what,
            w.alive,
            run_of.get(w.pid, UNKNOWN_RUN) if w.alive else UNKNOWN_RUN,
            _user_of(w.pid) if w.alive else "",
        )
        for w in domain.waiters
    )
    nested = tuple(
        replace(
            _view(
                sub,
                lock_dir=str(sub.root),
                source="nested",
                pool=None,
                pool_source="",
                runs=runs,
                run_of=run_of,
            ),
            owner_pid=sub.owner_pid,
            owner_alive=sub.owner_alive,
        )
        for sub in domain.nested
    )
    return View(
        lock_dir,
        source,
        True,
        tuple(sorted(pool)),
        pool_source,
        tuple(view_rows(domain.cores, run_of)),
        waiters,
        runs,
        nested=nested,
        alloc_holder=domain.alloc_holder,
    )


def _family(domain: DomainStatus | None, runs: Mapping[str, Run]) -> set[int]:
    """Pids of every holder, waiter and run: their processes and children are no foreign holders."""
    pids = {r.pid for r in runs.values() if r.pid}
    stack = [domain] if domain is not None else []
    while stack:
        d = stack.pop()
        pids.update(c.holder.pid for c in d.cores if c.holder is not None)
        pids.update(c.lock_pid for c in d.cores if c.lock_pid)
        pids.update(w.pid for w in d.waiters)
        stack.extend(d.nested)
    return pids


def collect(
    lock_dir: Path,
    source: str,
    *,
    proc_locks: Path = PROC_LOCKS,
    pool: tuple[int, ...] | None = None,
    pool_source: str = "",
    env: Mapping[str, str] | None = None,
    detect: bool = True,
) -> View:
    """Everything status shows; ``pool`` given (``--cores``), else this host's cores, else the cores
    the directory has seen.  ``detect=False``: no neuron-ls, no device scan."""
    environ: Mapping[str, str] = os.environ if env is None else env
    report = read_report(lock_dir, source, proc_locks=proc_locks)
    domain, note = report.domain, report.locks_note
    here = os.uname().nodename
    runs: dict[str, Run] = {}
    run_of: dict[int, str] = {}
    if domain is not None:
        _runs(domain, here, runs, run_of)
    host, neuron_ls = find_host(environ) if detect else (None, None)
    if pool is None and host is not None:
        pool = tuple(sorted({p for cores in host.physical.values() for p in cores}))
        pool_source = host.source
    view = _view(
        domain,
        lock_dir=str(lock_dir),
        source=source,
        pool=pool,
        pool_source=pool_source,
        runs=runs,
        run_of=run_of,
    )
    foreign: list[ForeignHolder] = []
    if detect:
        listed = foreign_from_neuron_ls(neuron_ls, host)
        prefix = environ.get(DEVICE_PREFIX_ENV, "/dev/neuron")
        candidates = listed if listed is not None else foreign_from_proc(prefix, host)
        family = _family(domain, runs)
        foreign = [
            f
            for f in candidates
            if not any(pid in family for pid, _ in ancestors(f.pid)) and f.pid not in family
        ]
    return replace(view, foreign=tuple(foreign), locks_note=note)
