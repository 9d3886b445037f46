"""The fake driver's reservation log, and an independent checker for it.

Every reservation made by :func:`pytest_neuron.testing.init_runtime` is one
``start`` line when it begins and one ``end`` line when it is released, in
``<PYTEST_NEURON_FAKE_DIR>/reservations.log``::

    {"event": "start", "id": "<uuid>", "pid": 123, "cores": [4, 5], "t": 1700000000.0}
    {"event": "end", "id": "<uuid>", "t": 1700000001.5}
    {"event": "end", "id": "<uuid>", "t": 1700000002.0, "reaped": true}

``cores`` are *physical* core indices.  A holder that dies without closing
(SIGKILL, ``os._exit``) writes no end line; the next process to take one of its
cores appends the end on its behalf, marked ``reaped``: it learns the previous
holder's id from the sidecar ``driver/nc<p>.holder`` that each holder writes
after locking (see :func:`take_over`).

Each line is appended with ``O_APPEND`` and a single ``os.write``, so lines
from concurrent writers never interleave.  The checker trusts nothing but the
log: it rebuilds every reservation's interval on every physical core (an
interval without an end line lasts forever) and reports each pair that
overlaps.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

LOG_NAME = "reservations.log"


class LogFormatError(ValueError):
    """A line of the reservation log that cannot be read; ``str()`` names the line."""


@dataclass(frozen=True)
class Reservation:
    """One reservation rebuilt from the log; ``end`` is ``inf`` when no end line exists."""

    id: str
    pid: int
    cores: tuple[int, ...]
    start: float
    end: float = math.inf
    reaped: bool = False


@dataclass(frozen=True)
class Overlap:
    """Two reservations that held the same physical core at once (``first`` started first)."""

    core: int
    first_id: str
    first_pid: int
    first_start: float
    first_end: float
    second_id: str
    second_pid: int
    second_start: float
    second_end: float

    def __str__(self) -> str:
        return (
            f"core {self.core}: reservation {self.first_id} (pid {self.first_pid}, "
            f"{self.first_start:.6f}-{self.first_end:.6f}) overlaps {self.second_id} "
            f"(pid {self.second_pid}, {self.second_start:.6f}-{self.second_end:.6f})"
        )


@dataclass(frozen=True)
class LogSummary:
    """``reservations``: how many started; ``max_cores_held``: most physical cores held at once;
    ``open``: how many have no end line; ``reaped``: how many were ended by a later holder."""

    reservations: int
    max_cores_held: int
    open: int
    reaped: int


def log_path(path: str | os.PathLike[str]) -> Path:
    """The log file itself, given either the log file or the fake driver directory."""
    candidate = Path(path)
    return candidate / LOG_NAME if candidate.is_dir() else candidate


def append_event(path: str | os.PathLike[str], record: Mapping[str, object]) -> None:
    """Append ``record`` as one JSON line with a single ``write`` on an ``O_APPEND`` descriptor."""
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"short write to {os.fspath(path)}: {written} of {len(data)} bytes")


def start_event(ident: str, pid: int, cores: Iterable[int]) -> dict[str, object]:
    return {"event": "start", "id": ident, "pid": pid, "cores": list(cores), "t": time.time()}


def end_event(ident: str, *, reaped: bool = False) -> dict[str, object]:
    event: dict[str, object] = {"event": "end", "id": ident, "t": time.time()}
    return {**event, "reaped": True} if reaped else event


def take_over(holder_files: Iterable[Path], path: str | os.PathLike[str], ident: str) -> None:
    """Record that reservation ``ident`` now holds the cores whose sidecars are ``holder_files``.

    Call only with those cores' locks held: every earlier holder is then gone,
    so one that never logged its end (SIGKILL, ``os._exit``) is ended now,
    marked ``reaped``, before the new start line.  Each sidecar is replaced
    atomically (write to a temporary file, then ``os.replace``).
    """
    holder_files = list(holder_files)
    previous: set[str] = set()
    for holder in holder_files:
        with suppress(OSError, ValueError, TypeError, KeyError):
            previous.add(str(json.loads(holder.read_text("utf-8"))["id"]))
    stale = previous - ended_ids(path) if previous else set()
    for old in sorted(stale):
        append_event(path, end_event(old, reaped=True))
    for holder in holder_files:
        temp = holder.with_name(f"{holder.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"id": ident, "pid": os.getpid()}), encoding="utf-8")
        os.replace(temp, holder)


def read_log(path: str | os.PathLike[str], *, strict: bool = True) -> list[dict[str, object]]:
    """Every event of the log, in file order; a missing log has none.

    ``strict=False`` skips lines that are not JSON objects instead of raising
    :class:`LogFormatError`.
    """
    file = log_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    events: list[dict[str, object]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            if strict:
                raise LogFormatError(f"{file}:{number}: not a JSON object: {line[:80]!r}")
            continue
        events.append(event)
    return events


def ended_ids(path: str | os.PathLike[str]) -> set[str]:
    """The ids that already have an end line (malformed lines are skipped)."""
    return {
        str(event["id"])
        for event in read_log(path, strict=False)
        if event.get("event") == "end" and "id" in event
    }


def _number(event: Mapping[str, object], key: str, where: str) -> float:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LogFormatError(f"{where}: {key!r} must be a number, got {value!r}")
    return float(value)


def reservations(events: Iterable[Mapping[str, object]]) -> list[Reservation]:
    """Pair start and end events into reservations, in start order.

    An end line whose id never started is ignored; when one id has several end
    lines the earliest counts.
    """
    starts: dict[str, Reservation] = {}
    ends: dict[str, tuple[float, bool]] = {}
    for index, event in enumerate(events, start=1):
        where = f"event {index}"
        kind, ident = event.get("event"), event.get("id")
        if not isinstance(ident, str):
            raise LogFormatError(f"{where}: 'id' must be a string, got {ident!r}")
        t = _number(event, "t", where)
        if kind == "start":
            cores = event.get("cores")
            if not isinstance(cores, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in cores
            ):
                raise LogFormatError(f"{where}: 'cores' must be a list of integers, got {cores!r}")
            pid = int(_number(event, "pid", where))
            starts.setdefault(ident, Reservation(ident, pid, tuple(cores), t))
        elif kind == "end":
            if ident not in ends or t < ends[ident][0]:
                ends[ident] = (t, event.get("reaped") is True)
        else:
            raise LogFormatError(f"{where}: unknown event {kind!r}")
    result = [
        Reservation(r.id, r.pid, r.cores, r.start, *ends[ident]) if ident in ends else r
        for ident, r in starts.items()
    ]
    return sorted(result, key=lambda r: r.start)


def check_log(path: str | os.PathLike[str]) -> list[Overlap]:
    """Every pair of reservations that held one physical core at overlapping times.

    Intervals are half-open, ``[start, end)``: a reservation that starts at
    the instant the previous one ended does not overlap it.
    """
    by_core: dict[int, list[Reservation]] = {}
    for res in reservations(read_log(path)):
        for core in res.cores:
            by_core.setdefault(core, []).append(res)
    overlaps: list[Overlap] = []
    for core in sorted(by_core):
        active: list[Reservation] = []
        for res in by_core[core]:  # already in start order
            active = [a for a in active if a.end > res.start]
            overlaps.extend(
                Overlap(core, a.id, a.pid, a.start, a.end, res.id, res.pid, res.start, res.end)
                for a in active
                if a.start < res.end
            )
            active.append(res)
    return overlaps


def summarize_log(path: str | os.PathLike[str]) -> LogSummary:
    """Counts over the whole log, and the most physical cores held at any instant."""
    found = reservations(read_log(path))
    changes: list[tuple[float, int]] = []
    for res in found:
        changes.append((res.start, len(res.cores)))
        if math.isfinite(res.end):
            changes.append((res.end, -len(res.cores)))
    held = peak = 0
    for _, delta in sorted(changes):  # at equal times releases (negative) come first
        held += delta
        peak = max(peak, held)
    return LogSummary(
        reservations=len(found),
        max_cores_held=peak,
        open=sum(1 for r in found if not math.isfinite(r.end)),
        reaped=sum(1 for r in found if r.reaped),
    )
