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
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.timeline import SAMPLE_EVERY, html_path, timeline_from_records, trace_document

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ..locks.lease import Lease


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
    from ..locks.lockdir import atomic_write  # the one write-then-rename of the package

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))


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
            from ..core.planning import this_command

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
        from ..core.timeline_html import render_html

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
        from ..locks.status import HELD, read_report

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
