"""What ``pytest-neuron status`` shows, built from plain data: pure, no I/O.

(Longer than the package's other modules on purpose: the text table and the JSON document are two
renderings of one view and share its row model.)

The reading side (status.py) turns whatever the lock directory holds into
:class:`View`: one :class:`LeaseRow` per lease (not per core), one
:class:`WaitRow` per waiting request, the :class:`Run` each belongs to, the
foreign holders, and the pool the totals are taken over.  :func:`render_text`
and :func:`to_json` only read a View, so the record layout can change without
touching them.

JSON schema (``schema_version`` 2), every field spelled out::

    {"schema_version": 2, "lock_dir": str, "lock_dir_source": str, "lock_dir_exists": bool,
     "lock_state_source": "/proc/locks" | "holder records only", "alloc_lock_holder": str | null,
     "pool": {"cores": "0-7", "core_list": [int], "source": str},
     "totals": {"pool_cores", "held", "held_without_record", "stale", "free", "held_outside_pool",
                "runs", "waiting_requests", "foreign_holders": int},
     "free_cores": "6-7",
     "runs": [{"run", "pid", "host", "user", "command", "leases", "waiting_requests"}],
     "leases": [{"physical_cores", "physical_core_list", "logical_cores", "state", "holder_pid",
                 "holder_exited", "user", "host", "run", "worker", "test", "reservation",
                 "command", "since", "age_seconds", "lease_id", "survivor_pids"}],
     "waiting_requests": [{"ticket", "pid", "alive", "user", "run", "cores_wanted",
                           "reserved_cores", "for", "since", "waiting_seconds"}],
     "foreign_holders": [{"pid", "user", "command", "devices", "physical_cores", "source"}],
     "nested_domains": [{"lock_dir", "holder_pid", "holder_alive", ...the same keys, recursively}]}

``physical_cores`` are core sets as ``NEURON_RT_VISIBLE_CORES`` writes them;
``since`` is seconds since the epoch; ``holder_exited`` is null for a record
of another host (its pid cannot be checked here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .coreset import format_coreset

SCHEMA_VERSION = 2
HELD, HELD_NO_RECORD, FREE, STALE = "held", "held (no record)", "free", "stale record"
UNKNOWN_RUN = "?"
STALE_NOTE = (
    "stale record: its holder no longer holds the core's lock (it exited without cleaning up); the next "
    "lease waits for the processes started under that lease to exit (and, if the recorded pid still runs, "
    "up to 10s for it), then takes the core over"
)


@dataclass(frozen=True)
class Run:
    """A pytest run: its controller (or single) process; ``id`` is ``host:pid`` or its records' run id."""

    id: str
    pid: int | None
    host: str
    user: str
    command: str


@dataclass(frozen=True)
class LeaseRow:
    cores: tuple[int, ...]  # physical
    state: str  # HELD, HELD_NO_RECORD or STALE
    pid: int | None
    run: str = UNKNOWN_RUN
    user: str = ""
    host: str = ""
    worker: str | None = None
    test: str | None = None
    slices: tuple[str, ...] = ()  # a run-level reservation: the worker slices it stands for
    command: str = ""
    since: float | None = None
    lease_id: str = ""
    logical: tuple[int, ...] = ()
    pid_gone: bool | None = None
    survivors: tuple[int, ...] = ()  # stale: live processes started under the lease, which keep it

    @property
    def what(self) -> str:
        if self.slices:
            return "reserved for the run: " + ", ".join(self.slices)
        if self.test:
            return self.test
        if self.worker == "pytest":
            return "pytest (the whole run)"
        return self.worker or "-"


@dataclass(frozen=True)
class WaitRow:
    ticket: str
    pid: int
    cores_wanted: int
    reserved: tuple[int, ...]
    since: float
    what: str
    alive: bool
    run: str = UNKNOWN_RUN
    user: str = ""


@dataclass(frozen=True)
class ForeignHolder:
    """A process with a Neuron device open that is no part of any run here."""

    pid: int
    user: str
    command: str
    devices: tuple[str, ...]
    cores: tuple[int, ...] | None  # physical; None when the device's cores are not known
    source: str  # "neuron-ls" or "/proc/*/fd"


@dataclass(frozen=True)
class View:
    lock_dir: str
    source: str
    exists: bool
    pool: tuple[int, ...]
    pool_source: str
    leases: tuple[LeaseRow, ...] = ()
    waiters: tuple[WaitRow, ...] = ()
    runs: dict[str, Run] = field(default_factory=dict)
    foreign: tuple[ForeignHolder, ...] = ()
    nested: tuple[View, ...] = ()
    owner_pid: int | None = None  # nested domains: the lease holder they belong to
    owner_alive: bool | None = None
    locks_note: str | None = None
    alloc_holder: str | None = None  # who holds alloc.lock right now (pid, state, command)

    @property
    def held_cores(self) -> set[int]:
        return {c for row in self.leases if row.state != STALE for c in row.cores}

    @property
    def stale_cores(self) -> set[int]:
        return {c for row in self.leases if row.state == STALE for c in row.cores} - self.held_cores

    @property
    def free_cores(self) -> tuple[int, ...]:
        taken = self.held_cores | self.stale_cores
        return tuple(c for c in self.pool if c not in taken)

    @property
    def busy(self) -> bool:
        return bool(self.leases or self.waiters or any(n.busy for n in self.nested))

    @property
    def has_stale(self) -> bool:
        return bool(self.stale_cores) or any(n.has_stale for n in self.nested)

    def totals(self) -> dict[str, int]:
        pool = set(self.pool)
        no_record = {c for row in self.leases if row.state == HELD_NO_RECORD for c in row.cores}
        held = self.held_cores
        return {
            "pool_cores": len(pool),
            "held": len(held & pool),
            "held_without_record": len(no_record & pool),
            "stale": len(self.stale_cores & pool),
            "free": len(self.free_cores),
            "held_outside_pool": len(held - pool),
            "runs": len(self.run_ids()),
            "waiting_requests": len(self.waiters),
            "foreign_holders": len(self.foreign),
        }

    def run_ids(self) -> list[str]:
        """Runs with a lease or a waiting request here, oldest lease first."""
        order: dict[str, float] = {}
        for row in self.leases:
            if row.state != STALE:
                order[row.run] = min(order.get(row.run, float("inf")), row.since or 0.0)
        for w in self.waiters:
            order[w.run] = min(order.get(w.run, float("inf")), w.since)
        return sorted(order, key=lambda run: (run == UNKNOWN_RUN, order[run], run))


# -- text -----------------------------------------------------------------------------------------------
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


def coreset_text(cores: tuple[int, ...] | list[int]) -> str:
    """``0-3,8`` (``""`` for no core)."""
    return format_coreset(cores) if cores else ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _table(rows: list[list[str]], indent: str) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def _state_text(row: LeaseRow) -> str:
    if row.state != STALE:
        return row.state
    if row.survivors:
        return f"{STALE} (pid gone, still used by pid {', '.join(map(str, row.survivors[:3]))})"
    return STALE + {True: " (pid gone)", False: " (pid still running)", None: " (other host)"}[row.pid_gone]


def _lease_cells(row: LeaseRow, now: float) -> list[str]:
    pid = "?" if not row.pid else str(row.pid)
    since = "" if row.since is None else format_since(row.since, now)
    age = "" if row.since is None else format_age(now - row.since)
    return [coreset_text(row.cores), _state_text(row), pid, since, age, row.what]


def _wait_cells(w: WaitRow, now: float) -> list[str]:
    state = "waiting" + (f", reserves {format_coreset(w.reserved)}" if w.reserved else "")
    pid = str(w.pid) if w.alive else f"{w.pid} (gone)"
    return [
        f"wants {w.cores_wanted}",
        state,
        pid,
        format_since(w.since, now),
        format_age(now - w.since),
        w.what,
    ]


def _run_title(run: Run | None, run_id: str, width: int) -> str:
    if run is None or run_id == UNKNOWN_RUN:
        return "run unknown (its process cannot be seen from here):"
    who = f"{run.user}@{run.host}" if run.user else run.host
    title = f"run {run.pid if run.pid is not None else run.id} by {who}: {run.command}"
    return _cut(title, width)


def totals_line(view: View) -> str:
    t = view.totals()
    parts = [f"{t['held']} held"]
    if t["held_without_record"]:
        parts[0] += f" ({t['held_without_record']} without a record)"
    if t["stale"]:
        parts.append(f"{t['stale']} stale")
    parts.append(f"{t['free']} free")
    outside = f"; {t['held_outside_pool']} held outside it" if t["held_outside_pool"] else ""
    counts = [_plural(t["runs"], "run"), _plural(t["waiting_requests"], "waiting request")]
    if view.foreign:
        counts.append(_plural(len(view.foreign), "foreign holder"))
    pool = format_coreset(view.pool) if view.pool else "empty"
    return (
        f"pool {pool} ({_plural(len(view.pool), 'core')}) from {view.pool_source}\n"
        f"{', '.join(parts)}{outside}; {', '.join(counts)}"
    )


def _domain_lines(view: View, now: float, indent: str, width: int) -> list[str]:
    lines = [indent + line for line in totals_line(view).splitlines()]
    header = ["CORES", "STATE", "PID", "SINCE", "AGE", "WORKER OR TEST"]
    for run_id in view.run_ids():
        rows = [header]
        rows += [_lease_cells(r, now) for r in view.leases if r.run == run_id and r.state != STALE]
        rows += [_wait_cells(w, now) for w in view.waiters if w.run == run_id]
        lines.append(indent + _run_title(view.runs.get(run_id), run_id, width - len(indent)))
        lines += _table(rows, indent + "  ")
    stale = [r for r in view.leases if r.state == STALE]
    if stale:
        lines.append(f"{indent}stale records (their holders exited without cleaning up):")
        lines += _table(
            [[*header, "COMMAND"]] + [[*_lease_cells(r, now), r.command] for r in stale], indent + "  "
        )
    if view.free_cores:
        lines.append(f"{indent}free: {format_coreset(view.free_cores)}")
    for sub in view.nested:
        alive = "running" if sub.owner_alive else "gone"
        label = f"{indent}nested domain of holder pid {sub.owner_pid} ({alive}), {sub.lock_dir}"
        if sub.busy:
            lines += [label + ":", *_domain_lines(sub, now, indent + "  ", width)]
        else:
            lines.append(f"{label}: nothing held")
    return lines


def _foreign_lines(foreign: tuple[ForeignHolder, ...], width: int) -> list[str]:
    if not foreign:
        return []
    sources = sorted({f.source for f in foreign})
    rows = [["PID", "USER", "DEVICES", "CORES", "COMMAND"]]
    for f in foreign:
        cores = "?" if f.cores is None else format_coreset(f.cores)
        rows.append([str(f.pid), f.user, ",".join(f.devices), cores, f.command])
    return [
        f"foreign holders: a Neuron device open outside pytest-neuron (from {', '.join(sources)}):",
        *(_cut(line, max(width, 40)) for line in _table(rows, "  ")),
    ]


def render_text(view: View, now: float, width: int = 80) -> str:
    """The status as text; no line but a test id or a foreign command is wider than ``width``."""
    where = f"lock directory {view.lock_dir} (from {view.source})"
    lines = [where if view.exists else f"{where} does not exist yet: no run has used it"]
    if view.locks_note:
        lines.append(view.locks_note)
    if view.alloc_holder:
        lines.append(f"alloc.lock is held by {view.alloc_holder}")
    lines += _domain_lines(view, now, "", width)
    lines += _foreign_lines(view.foreign, width)
    if view.has_stale:
        lines.append(STALE_NOTE)
    return "\n".join(lines) + "\n"


# -- JSON -----------------------------------------------------------------------------------------------
def _lease_json(row: LeaseRow, now: float) -> dict[str, Any]:
    return {
        "physical_cores": coreset_text(row.cores),
        "physical_core_list": list(row.cores),
        "logical_cores": format_coreset(row.logical) if row.logical else None,
        "state": row.state,
        "holder_pid": row.pid or None,
        "holder_exited": row.pid_gone,
        "user": row.user or None,
        "host": row.host or None,
        "run": None if row.run == UNKNOWN_RUN else row.run,
        "worker": row.worker,
        "test": row.test,
        "reservation": list(row.slices) if row.slices else None,
        "command": row.command or None,
        "since": row.since,
        "age_seconds": None if row.since is None else round(now - row.since, 3),
        "lease_id": row.lease_id or None,
        "survivor_pids": list(row.survivors),
    }


def _wait_json(w: WaitRow, now: float) -> dict[str, Any]:
    return {
        "ticket": w.ticket,
        "pid": w.pid,
        "alive": w.alive,
        "user": w.user or None,
        "run": None if w.run == UNKNOWN_RUN else w.run,
        "cores_wanted": w.cores_wanted,
        "reserved_cores": format_coreset(w.reserved) if w.reserved else None,
        "for": w.what,
        "since": w.since,
        "waiting_seconds": round(now - w.since, 3),
    }


def _domain_json(view: View, now: float) -> dict[str, Any]:
    runs = []
    for run_id in view.run_ids():
        run = view.runs.get(run_id)
        runs.append(
            {
                "run": None if run_id == UNKNOWN_RUN else run_id,
                "pid": None if run is None else run.pid,
                "host": None if run is None else run.host,
                "user": None if run is None else run.user or None,
                "command": None if run is None else run.command,
                "leases": sum(1 for r in view.leases if r.run == run_id and r.state != STALE),
                "waiting_requests": sum(1 for w in view.waiters if w.run == run_id),
            }
        )
    return {
        "pool": {
            "cores": coreset_text(view.pool),
            "core_list": list(view.pool),
            "source": view.pool_source,
        },
        "totals": view.totals(),
        "free_cores": coreset_text(view.free_cores),
        "runs": runs,
        "leases": [_lease_json(r, now) for r in view.leases],
        "waiting_requests": [_wait_json(w, now) for w in view.waiters],
        "nested_domains": [
            {
                "lock_dir": n.lock_dir,
                "holder_pid": n.owner_pid,
                "holder_alive": n.owner_alive,
                **_domain_json(n, now),
            }
            for n in view.nested
        ],
    }


def to_json(view: View, now: float) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "lock_dir": view.lock_dir,
        "lock_dir_source": view.source,
        "lock_dir_exists": view.exists,
        "lock_state_source": "holder records only" if view.locks_note else "/proc/locks",
        "alloc_lock_holder": view.alloc_holder,
        **_domain_json(view, now),
        "foreign_holders": [
            {
                "pid": f.pid,
                "user": f.user,
                "command": f.command,
                "devices": list(f.devices),
                "physical_cores": None if f.cores is None else format_coreset(f.cores),
                "source": f.source,
            }
            for f in view.foreign
        ],
    }
