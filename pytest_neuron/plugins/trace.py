"""``--neuron-trace=PATH``: every lease, wait and test of a run as a Chrome trace.

Each process records plain JSON records; only the process that owns the run
(role ``single``, or the xdist ``controller``) writes ``PATH`` (the Chrome
trace-event JSON Object Format, for Perfetto or chrome://tracing) and the
self-contained HTML timeline next to it.  An xdist worker appends its records
to ``PATH.parts/<run_id>-<worker>-<pid>.jsonl`` as they happen, one
``os.write`` per line on an ``O_APPEND`` descriptor, so what a crashed worker
recorded survives; the controller merges the parts at close and removes them.
Times are ``time.time()`` (all processes share the host's wall clock).

The pure half (:func:`timeline_from_records`, :func:`trace_document`) takes
plain data; :class:`Trace` does the I/O.  Imported only when tracing is on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..locks.lease import Lease

MIN_WAIT = 0.001  # seconds: a shorter acquisition is not drawn as a wait
CORES_PID, WORKERS_PID, WAITS_PID = 1, 2, 3
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


@dataclass
class Timeline:
    leases: list[LeaseSpan] = field(default_factory=list)
    waits: list[WaitSpan] = field(default_factory=list)
    tests: list[RunSpan] = field(default_factory=list)
    pool: tuple[int, ...] = ()
    run_id: str = ""

    @property
    def spans(self) -> list[LeaseSpan | WaitSpan | RunSpan]:
        return [*self.leases, *self.waits, *self.tests]

    @property
    def start(self) -> float:
        return min((s.start for s in self.spans), default=0.0)

    @property
    def end(self) -> float:
        return max((s.end for s in self.spans), default=self.start)

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
    for rec in records:
        kind, worker = rec.get("kind"), str(rec.get("worker", ""))
        if kind == "run":
            timeline.pool = tuple(rec.get("pool", ())) or timeline.pool
            timeline.run_id = str(rec.get("run_id", timeline.run_id))
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
    """Chrome trace events: a ``cores`` process (a row per core), ``workers`` and ``waits`` (a row each)."""
    from ..core.coreset import format_coreset

    t0 = timeline.start
    tid = {w: i for i, w in enumerate(timeline.workers)}
    events: list[dict[str, Any]] = []
    for pid, name in ((CORES_PID, "cores"), (WORKERS_PID, "workers"), (WAITS_PID, "waits")):
        events += [_meta(pid, None, "process_name", name), _meta(pid, None, "process_sort_index", pid)]
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
    return events


def trace_document(timeline: Timeline) -> dict[str, Any]:
    """The JSON Object Format: ``{"traceEvents": [...], "displayTimeUnit": "ms", ...}``."""
    other = {"tool": "pytest-neuron", "run_id": timeline.run_id, "epoch_s": timeline.start}
    return {"traceEvents": trace_events(timeline), "displayTimeUnit": "ms", "otherData": other}


def html_path(path: str | os.PathLike[str]) -> Path:
    """Where the HTML timeline goes: ``PATH`` with the suffix ``.html``."""
    path = Path(path)
    return path.with_suffix(".timeline.html" if path.suffix == ".html" else ".html")


def read_parts(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The records of part files, skipping a torn last line of a crashed writer."""
    records: list[dict[str, Any]] = []
    for part in paths:
        for line in _read(part).splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
    return records


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Trace:
    """One process's recorder; the ``single`` or ``controller`` process writes the files at :meth:`close`.

    ``pool``: the run's logical cores (idle ones get a row too); ``settle``:
    how long the controller waits at close for worker parts that have not
    closed yet (a crashed worker never does).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        role: str,
        worker: str | None,
        run_id: str,
        *,
        pool: Iterable[int] = (),
        settle: float = 2.0,
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self.role, self.run_id, self.settle = role, run_id, settle
        self.worker = worker or ("controller" if role == "controller" else "pytest")
        self.parts = Path(f"{self.path}.parts")
        self.records: list[dict[str, Any]] = []
        self._fd: int | None = None
        self.closed = False
        if role == "worker":
            self.parts.mkdir(parents=True, exist_ok=True)
            part = self.parts / f"{run_id}-{self.worker}-{os.getpid()}.jsonl"
            self._fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # an unusable PATH fails here, not at the end
            self._emit({"kind": "run", "run_id": run_id, "pool": sorted(pool), "t": time.time()})

    def _emit(self, record: dict[str, Any]) -> None:
        record = {**record, "worker": self.worker, "pid": os.getpid()}
        if self._fd is not None:
            os.write(self._fd, json.dumps(record, separators=(",", ":")).encode() + b"\n")
        elif not self.closed:
            self.records.append(record)

    def lease(self, lease: Lease, label: str) -> None:
        """Cores were leased to ``label`` (a test id, or a worker id for its slice); its wait ended."""
        cores, physical = list(lease.cores), list(lease.physical)
        rec = {"id": lease.lease_id, "label": label, "cores": cores, "physical": physical}
        self._emit({"kind": "lease", **rec, "start": lease.acquired_at, "wait": lease.wait_seconds})

    def release(self, lease: Lease, *, pinned: bool = False) -> None:
        """The lease ended; ``pinned``: its cores stay locked until this process exits (drawn to close)."""
        self._emit({"kind": "release", "id": lease.lease_id, "t": time.time(), "pinned": pinned})

    def wait(self, label: str, start: float, end: float, k: int, error: str | None = None) -> None:
        """A wait for ``k`` cores that ended without a lease (timeout, impossible request)."""
        self._emit({"kind": "wait", "label": label, "start": start, "end": end, "k": k, "error": error})

    def phase(self, nodeid: str, when: str, start: float, stop: float, outcome: str) -> None:
        """One phase (setup, call, teardown) of a test run in this process; ignored in the controller."""
        if self.role != "controller":
            rec = {"nodeid": nodeid, "when": when, "start": start, "stop": stop, "outcome": outcome}
            self._emit({"kind": "phase", **rec})

    def _wait_for_parts(self) -> list[Path]:
        deadline = time.monotonic() + self.settle
        while True:
            parts = sorted(self.parts.glob(f"{self.run_id}-*.jsonl")) if self.parts.is_dir() else []
            pending = [p for p in parts if b'"kind":"close"' not in _read(p)]
            if not pending or time.monotonic() >= deadline:
                return parts
            time.sleep(0.05)

    def close(self) -> None:
        """End this process's recording; in the owning process, merge and write PATH and its HTML."""
        if self.closed:
            return
        self._emit({"kind": "close", "t": time.time()})
        self.closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            return
        parts = self._wait_for_parts()
        timeline = timeline_from_records([*self.records, *read_parts(parts)], now=time.time())
        _write_atomic(self.path, json.dumps(trace_document(timeline), indent=None) + "\n")
        from .timeline_html import render_html

        _write_atomic(html_path(self.path), render_html(timeline, title=f"pytest-neuron run {self.run_id}"))
        for part in parts:
            with contextlib.suppress(OSError):
                part.unlink()
        with contextlib.suppress(OSError):
            self.parts.rmdir()
