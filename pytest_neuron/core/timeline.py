"""The timeline of a traced run as plain data: spans of leases, waits, tests and other runs.

Pure: :func:`timeline_from_records` turns the records plugins/trace.py writes into a
:class:`Timeline`; :func:`trace_document` turns that into Chrome trace-event JSON, and
core/timeline_html.py into the self-contained HTML timeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable


MIN_WAIT = 0.001  # seconds: a shorter acquisition is not drawn as a wait
CORES_PID, WORKERS_PID, WAITS_PID, OTHERS_PID = 1, 2, 3, 4
OTHER_COLOR = "grey"
SAMPLE_EVERY = 0.25  # seconds between two looks at the lock directory for other runs
OUTCOME_COLOR = {"passed": "good", "failed": "terrible", "error": "terrible", "skipped": "grey"}
WAIT_COLOR, FAILED_WAIT_COLOR = "thread_state_iowait", "bad"


@dataclass(frozen=True)
class LeaseSpan:
    """Cores held from ``start`` to ``end``; ``state``: released, pinned or open (never released)."""

    label: str
    worker: str
    cores: tuple[int, ...]
    start: float
    end: float
    wait: float = 0.0
    physical: tuple[int, ...] = ()
    lease_id: str = ""
    state: str = "released"


@dataclass(frozen=True)
class WaitSpan:
    """A wait for ``k`` cores; ``error`` is set when it ended without a lease."""

    label: str
    worker: str
    start: float
    end: float
    k: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RunSpan:
    nodeid: str
    worker: str
    start: float
    end: float
    outcome: str = "passed"


@dataclass(frozen=True)
class OtherSpan:
    """Cores of this run's pool held (``kind`` lease) or reserved (``reservation``) by another run."""

    kind: str
    cores: tuple[int, ...]  # this run's logical cores
    start: float
    end: float
    pid: int
    who: str  # user@host
    what: str  # its worker or test, or "waits for N cores"
    command: str


@dataclass
class Timeline:
    leases: list[LeaseSpan] = field(default_factory=list)
    waits: list[WaitSpan] = field(default_factory=list)
    tests: list[RunSpan] = field(default_factory=list)
    others: list[OtherSpan] = field(default_factory=list)
    pool: tuple[int, ...] = ()
    run_id: str = ""
    command: str = ""
    run_start: float | None = None  # the owning process's run record ...
    run_end: float | None = None  # ... and its close record

    @property
    def spans(self) -> list[LeaseSpan | WaitSpan | RunSpan]:
        return [*self.leases, *self.waits, *self.tests]

    @property
    def start(self) -> float:
        starts = [s.start for s in self.spans]
        return min([*starts, self.run_start] if self.run_start is not None else starts, default=0.0)

    @property
    def end(self) -> float:
        ends = [s.end for s in self.spans]
        return max([*ends, self.run_end] if self.run_end is not None else ends, default=self.start)

    @property
    def duration(self) -> float:
        """The run's wall time: from the plugin's start to its end in the owning process."""
        return self.end - self.start

    def wait_list(self) -> list[tuple[float, bool]]:
        """Every wait for cores: ``(seconds, got cores)``; the one definition report.wait_line sums."""
        waits = [(lease.wait, True) for lease in self.leases]
        return waits + [(w.end - w.start, False) for w in self.waits if w.error is not None]

    @property
    def cores(self) -> list[int]:
        """The pool's cores and every leased core, ascending."""
        return sorted({*self.pool, *(c for lease in self.leases for c in lease.cores)})

    @property
    def workers(self) -> list[str]:
        return sorted({s.worker for s in self.spans}, key=natural_key)


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort ``gw2`` before ``gw10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def _outcome(phases: dict[str, str]) -> str:
    if phases.get("call") == "failed":
        return "failed"
    if "failed" in phases.values():
        return "error"
    return "skipped" if "skipped" in phases.values() else "passed"


def timeline_from_records(records: Iterable[dict[str, Any]], *, now: float) -> Timeline:
    """Merge the records of every process of a run into one :class:`Timeline`.

    A lease with no ``release`` ends at its process's ``close`` record (state
    ``pinned`` if it was marked so, else ``open``), or at ``now`` for a process
    that never closed (it crashed).  Test phases merge into one span per run
    of a test on a worker.
    """
    timeline = Timeline()
    opened: dict[str, dict[str, Any]] = {}
    ended: dict[str, tuple[float, str]] = {}
    closed: dict[tuple[str, int], float] = {}
    tests: list[tuple[str, str, list[float], dict[str, str]]] = []
    current: dict[tuple[str, str], int] = {}
    others: list[dict[str, Any]] = []
    owner: tuple[str, int] | None = None
    for rec in records:
        kind, worker = rec.get("kind"), str(rec.get("worker", ""))
        if kind == "run":
            timeline.pool = tuple(rec.get("pool", ())) or timeline.pool
            timeline.run_id = str(rec.get("run_id", timeline.run_id))
            timeline.command = str(rec.get("command", timeline.command))
            if "t" in rec:
                timeline.run_start = float(rec["t"])
                owner = (worker, int(rec.get("pid", 0)))
        elif kind == "other":
            others.append(rec)
        elif kind == "lease":
            opened[rec["id"]] = rec
        elif kind == "release":
            ended[rec["id"]] = (float(rec["t"]), "pinned" if rec.get("pinned") else "released")
        elif kind == "close":
            closed[worker, int(rec.get("pid", 0))] = float(rec["t"])
        elif kind == "wait":
            timeline.waits.append(
                WaitSpan(rec["label"], worker, rec["start"], rec["end"], rec.get("k", 0), rec.get("error"))
            )
        elif kind == "phase":
            key = (worker, rec["nodeid"])
            if rec["when"] == "setup" or key not in current:
                current[key] = len(tests)
                tests.append((worker, rec["nodeid"], [rec["start"], rec["stop"]], {}))
            times, phases = tests[current[key]][2:]
            times[:] = [min(times[0], rec["start"]), max(times[1], rec["stop"])]
            phases[rec["when"]] = rec["outcome"]
    for lease_id, rec in opened.items():
        worker, start, wait = str(rec.get("worker", "")), float(rec["start"]), float(rec.get("wait", 0.0))
        closed_at = closed.get((worker, int(rec.get("pid", 0))), now)
        end, state = ended.get(lease_id, (closed_at, "open"))
        end = closed_at if state == "pinned" else end
        cores, physical = tuple(rec["cores"]), tuple(rec.get("physical", ()))
        span = LeaseSpan(
            str(rec["label"]), worker, cores, start, max(start, end), wait, physical, lease_id, state
        )
        timeline.leases.append(span)
        if wait >= MIN_WAIT:
            timeline.waits.append(WaitSpan(str(rec["label"]), worker, start - wait, start, len(rec["cores"])))
    timeline.tests = [RunSpan(n, w, t[0], max(t), _outcome(p)) for w, n, t, p in tests]
    if owner is not None and owner in closed:
        timeline.run_end = closed[owner]
    mine = set(opened)
    pids = {int(rec.get("pid", 0)) for rec in records if rec.get("kind") != "other"}  # this run's processes
    for rec in others:
        own_waiter = rec.get("what_kind") == "reservation" and rec.get("holder_pid") in pids
        if rec.get("lease_id") in mine or own_waiter:
            continue  # this run's own lease, or its own waiter's reservation
        timeline.others.append(
            OtherSpan(
                str(rec["what_kind"]),
                tuple(rec["cores"]),
                float(rec["start"]),
                float(rec["end"]),
                int(rec["holder_pid"]),
                str(rec.get("who", "")),
                str(rec.get("what", "")),
                str(rec.get("command", "")),
            )
        )
    timeline.others.sort(key=lambda s: (s.start, s.cores))
    timeline.leases.sort(key=lambda s: (s.start, s.cores))
    timeline.waits.sort(key=lambda s: (s.start, natural_key(s.worker)))
    timeline.tests.sort(key=lambda s: s.start)
    return timeline


def _us(t: float, t0: float) -> int:
    """Whole microseconds since ``t0``; monotonic, so touching spans never overlap after rounding."""
    return int((t - t0) * 1_000_000)


def _meta(pid: int, tid: int | None, name: str, value: Any) -> dict[str, Any]:
    key = "sort_index" if name.endswith("sort_index") else "name"
    return {"name": name, "ph": "M", "pid": pid, "tid": tid or 0, "args": {key: value}}


def _span(name: str, cat: str, row: tuple[int, int], span: tuple[float, float], t0: float) -> dict[str, Any]:
    ts = _us(span[0], t0)
    row_of = {"pid": row[0], "tid": row[1]}
    return {"name": name, "cat": cat, "ph": "X", "ts": ts, "dur": _us(span[1], t0) - ts, **row_of}


def trace_events(timeline: Timeline) -> list[dict[str, Any]]:
    """Chrome trace events: a ``cores`` process (a row per core), ``workers`` and ``waits`` (a row each),
    and ``other runs`` (a row per core another run held or reserved while this run lasted)."""
    from ..core.coreset import format_coreset

    t0 = timeline.start
    tid = {w: i for i, w in enumerate(timeline.workers)}
    events: list[dict[str, Any]] = []
    processes = [(CORES_PID, "cores"), (WORKERS_PID, "workers"), (WAITS_PID, "waits")]
    processes += [(OTHERS_PID, "other runs")] if timeline.others else []
    for pid, name in processes:
        events += [_meta(pid, None, "process_name", name), _meta(pid, None, "process_sort_index", pid)]
    for core in sorted({c for other in timeline.others for c in other.cores}):
        events += [_meta(OTHERS_PID, core, "thread_name", f"core {core}")]
        events += [_meta(OTHERS_PID, core, "thread_sort_index", core)]
    for core in timeline.cores:
        events += [_meta(CORES_PID, core, "thread_name", f"core {core}")]
        events += [_meta(CORES_PID, core, "thread_sort_index", core)]
    for worker, index in tid.items():
        events += [_meta(WORKERS_PID, index, "thread_name", worker)]
        events += [_meta(WAITS_PID, index, "thread_name", f"{worker} waits")]
        events += [_meta(pid, index, "thread_sort_index", index) for pid in (WORKERS_PID, WAITS_PID)]
    for lease in timeline.leases:
        args = {"cores": format_coreset(lease.cores), "worker": lease.worker, "wait_s": round(lease.wait, 6)}
        args.update({"physical": format_coreset(lease.physical)} if lease.physical else {})
        args.update({"lease_id": lease.lease_id, "state": lease.state})
        for core in lease.cores:
            event = _span(lease.label, "lease", (CORES_PID, core), (lease.start, lease.end), t0)
            events.append({**event, "args": args})
    for wait in timeline.waits:
        event = _span(wait.label, "wait", (WAITS_PID, tid[wait.worker]), (wait.start, wait.end), t0)
        info: dict[str, Any] = {"cores_requested": wait.k, "wait_s": round(wait.end - wait.start, 6)}
        info.update({"error": wait.error} if wait.error else {})
        events.append({**event, "args": info, "cname": FAILED_WAIT_COLOR if wait.error else WAIT_COLOR})
    for test in timeline.tests:
        event = _span(test.nodeid, "test", (WORKERS_PID, tid[test.worker]), (test.start, test.end), t0)
        color = OUTCOME_COLOR.get(test.outcome, "generic_work")
        events.append({**event, "args": {"outcome": test.outcome}, "cname": color})
    for other in timeline.others:
        name = f"other run: pid {other.pid} {other.what}"
        info = {"pid": other.pid, "user": other.who, "what": other.what, "command": other.command}
        for core in other.cores:
            event = _span(name, f"other-run {other.kind}", (OTHERS_PID, core), (other.start, other.end), t0)
            events.append({**event, "args": info, "cname": OTHER_COLOR})
    return events


def trace_document(timeline: Timeline) -> dict[str, Any]:
    """The JSON Object Format: ``{"traceEvents": [...], "displayTimeUnit": "ms", ...}``."""
    other = {
        "tool": "pytest-neuron",
        "run_id": timeline.run_id,
        "command": timeline.command,
        "epoch_s": timeline.start,
        "duration_s": round(timeline.duration, 6),
    }
    return {"traceEvents": trace_events(timeline), "displayTimeUnit": "ms", "otherData": other}


def html_path(path: str | os.PathLike[str]) -> Path:
    """Where the HTML timeline goes: ``PATH`` with the suffix ``.html``."""
    path = Path(path)
    return path.with_suffix(".timeline.html" if path.suffix == ".html" else ".html")
