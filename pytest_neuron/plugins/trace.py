"""``--neuron-trace=PATH``: every lease, wait and test of a run as a Chrome trace.

Each process records plain JSON records; only the process that owns the run
(role ``single``, or the xdist ``controller``) writes ``PATH`` (the Chrome
trace-event JSON Object Format, for Perfetto or chrome://tracing) and the
self-contained HTML timeline next to it.  An xdist worker appends its records
to ``PATH.parts/<run_id>-<worker>-<pid>.jsonl`` as they happen, one
``os.write`` per line on an ``O_APPEND`` descriptor, so what a crashed worker
recorded survives; the controller merges the parts at close and removes them.
Times are ``time.time()`` (all processes share the host's wall clock).

The owning process also samples the lock directory while the run lasts
(:class:`OtherRuns`, a daemon thread reading the holder and waiter records,
taking no lock): leases of other runs on this run's cores, and cores other
runs' aged waiters reserve, are drawn as grey spans, so a wait is never
unexplained.  The run's span (``run`` record to the owning process's
``close``) and the wait total are defined once here and in report.py, and the
terminal summary uses the same definitions.

The pure half (:func:`timeline_from_records`, :func:`trace_document`) takes
plain data; :class:`Trace` does the I/O.  Imported only when tracing is on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ..locks.lease import Lease

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
        lock_dir: Path | None = None,
        physical: Mapping[int, tuple[int, ...]] | None = None,
        sample_every: float = SAMPLE_EVERY,
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self.role, self.run_id, self.settle = role, run_id, settle
        self.worker = worker or ("controller" if role == "controller" else "pytest")
        self.parts = Path(f"{self.path}.parts")
        self.records: list[dict[str, Any]] = []
        self._fd: int | None = None
        self.closed = False
        self.others: OtherRuns | None = None
        self.written: tuple[str, str] | None = None  # the JSON trace and the HTML timeline, once written
        if role == "worker":
            self.parts.mkdir(parents=True, exist_ok=True)
            part = self.parts / f"{run_id}-{self.worker}-{os.getpid()}.jsonl"
            self._fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        else:
            from ..core.cmdline import this_command

            self.path.parent.mkdir(parents=True, exist_ok=True)  # an unusable PATH fails here, not at the end
            rec = {"kind": "run", "run_id": run_id, "pool": sorted(pool), "command": this_command()}
            self._emit({**rec, "t": time.time()})
            if lock_dir is not None:
                lanes = physical if physical is not None else {core: (core,) for core in pool}
                self.others = OtherRuns(lock_dir, lanes, sample_every)
                self.others.start()

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
        if self.others is not None:
            for rec in self.others.stop():
                self._emit(rec)
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

        _write_atomic(html_path(self.path), render_html(timeline))
        self.written = (str(self.path), str(html_path(self.path)))
        for part in parts:
            with contextlib.suppress(OSError):
                part.unlink()
        with contextlib.suppress(OSError):
            self.parts.rmdir()


class OtherRuns:
    """A daemon thread that looks at the lock directory every ``every`` seconds, taking no lock.

    It remembers every lease (by lease id) and every reserved window (by
    waiter ticket) it saw on this run's cores, from when it was first to last
    seen (a lease from its record's ``since``); :meth:`stop` returns them as
    ``other`` records.  Which of them are this run's own is decided at merge.
    """

    def __init__(self, lock_dir: Path, physical: Mapping[int, tuple[int, ...]], every: float) -> None:
        self.lock_dir, self.every = lock_dir, every
        self.lane_of = {p: core for core, cores in physical.items() for p in cores}
        self.seen: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        # No thread across a fork (pytest-forked in a single process): Python 3.12 warns about
        # forking a multi-threaded process, and a suite with -W error would fail on it.
        os.register_at_fork(before=self._pause, after_in_parent=self._resume)

    def start(self) -> None:
        self._running = True
        self._resume()

    def _resume(self) -> None:
        if self._running and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="pytest-neuron-trace", daemon=True)
            self._thread.start()

    def _pause(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a sample that fails (a directory being changed) is skipped
                self.sample(time.time())
            if self._stop.wait(self.every):
                return

    def sample(self, now: float) -> None:
        from ..status import HELD, read_report

        domain = read_report(self.lock_dir, "the trace").domain
        if domain is None:
            return
        for c in domain.cores:
            h, lane = c.holder, self.lane_of.get(c.core)
            if h is None or c.state != HELD or lane is None or h.pid == os.getpid():
                continue  # free, or this run's own (the xdist controller's reservation of the run)
            rec = self.seen.setdefault(
                f"lease {h.lease_id}",
                {
                    "kind": "other",
                    "what_kind": "lease",
                    "lease_id": h.lease_id,
                    "cores": [],
                    "start": min(float(h.since), now),
                    "holder_pid": h.pid,
                    "who": f"{h.user}@{h.host}",
                    "what": h.test or (h.worker if isinstance(h.worker, str) else "reservation") or "",
                    "command": h.command,
                },
            )
            if lane not in rec["cores"]:
                rec["cores"].append(lane)
            rec["end"] = now
        for w in domain.waiters:
            lanes = sorted({self.lane_of[p] for p in w.reserved if p in self.lane_of})
            if not w.alive or not lanes:
                continue
            rec = self.seen.setdefault(
                f"reservation {w.ticket}",
                {
                    "kind": "other",
                    "what_kind": "reservation",
                    "cores": lanes,
                    "start": now,
                    "holder_pid": w.pid,
                    "who": "",
                    "what": f"{w.what} waits for {w.k} cores, reserves them",
                    "command": "",
                },
            )
            rec["end"] = now

    def stop(self) -> list[dict[str, Any]]:
        self._running = False
        self._pause()
        with contextlib.suppress(Exception):
            self.sample(time.time())
        return [{**rec, "cores": sorted(rec["cores"])} for rec in self.seen.values()]


def finish_run(trace: Trace, lease: Lease | None, devices: list[str]) -> None:
    """Close the owning process's trace at the end of the session, before the terminal summary
    names it; its own slice, released after that, is recorded as released now."""
    if lease is not None:
        trace.release(lease, pinned=bool(devices))
    trace.close()
