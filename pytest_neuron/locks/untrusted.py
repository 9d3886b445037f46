"""What other processes wrote for this one to read, which it must not trust.

The lock directory is shared and world-writable, and an environment variable
is anyone's to copy into another shell: every value read here is checked for
type, range and size, and one of the wrong shape is treated as absent.

* Holder records (holders.py writes them): :func:`read_record`.
* The waiters board's files (waiters.py decodes them): :func:`read_small_file`,
  :func:`decode_json` and the bounds below.
* The lease handed down in ``PYTEST_NEURON_LEASE``: :func:`inherited_handoff`.

Imported only when there is something to read: a lease that finds no other
holder's record, nobody waiting and nothing handed down never loads it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.coreset import CoreSetError, parse_coreset
from ..core.plan import HANDOFF_ENV, Handoff
from .holders import LEASE_ID, LIMITS, RECORD_NAME, Holder

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_RECORD = 64 * 1024
MAX_PID = 1 << 22  # PID_MAX_LIMIT on 64-bit Linux
MAX_CORE = 1 << 16
MAX_CORES = 4096
MAX_SINCE = 1e11  # seconds since the epoch: about the year 5000


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def _is_text(value: object, name: str, *, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, str) and len(value) <= LIMITS[name]


def _core_list(value: object) -> tuple[int, ...] | None:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_CORES:
        return None
    if not all(_is_int(c, 0, MAX_CORE) for c in value):
        return None
    return tuple(value)


def decode_holder(raw: object) -> Holder | None:
    """A :class:`Holder` from decoded JSON, or ``None`` unless every field is of the right type and size."""
    if not isinstance(raw, dict):
        return None
    since = raw.get("since")
    cores, physical = _core_list(raw.get("cores")), _core_list(raw.get("physical"))
    starttime = raw.get("starttime")
    lease_id = raw.get("lease_id")
    if not (
        _is_int(raw.get("pid"), 1, MAX_PID)
        and (starttime is None or _is_int(starttime, 0, 1 << 63))
        and isinstance(since, (int, float))
        and not isinstance(since, bool)
        and math.isfinite(since)
        and 0 <= since < MAX_SINCE
        and all(_is_text(raw.get(k), k) for k in ("host", "user", "command"))
        and isinstance(lease_id, str)
        and re.fullmatch(LEASE_ID, lease_id)
        and _is_text(raw.get("worker"), "worker", optional=True)
        and _is_text(raw.get("test"), "test", optional=True)
        and _is_text(raw.get("pidns", ""), "pidns")
        and cores is not None
        and physical is not None
    ):
        return None
    return Holder(
        pid=raw["pid"],
        starttime=starttime,
        host=raw["host"],
        user=raw["user"],
        command=raw["command"],
        since=float(since),
        lease_id=lease_id,
        cores=cores,
        physical=physical,
        worker=raw.get("worker"),
        test=raw.get("test"),
        pidns=raw.get("pidns", ""),
    )


def read_small_file(path: Path) -> bytes | None:
    """The bytes of a record file, or ``None`` unless it is a regular file (not a link) of bounded size.

    The lock directory is shared and world-writable: a planted link to a FIFO
    or /dev/zero must not block or flood a reader.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD:
            return None
        return os.read(fd, MAX_RECORD)
    except OSError:
        return None
    finally:
        os.close(fd)


def decode_json(data: bytes | None) -> object:
    """Parsed JSON, or ``None`` for anything that is not (NaN and Infinity are not JSON)."""
    if data is None:
        return None

    def refuse(constant: str) -> object:
        raise ValueError(constant)

    try:
        return json.loads(data, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None


def read_record(path: Path) -> Holder | None:
    """The record at ``path``, or ``None`` when there is none or it is not a valid record."""
    holder = decode_holder(decode_json(read_small_file(path)))
    if holder is None:
        return None
    match = re.fullmatch(RECORD_NAME, path.name)
    if match is not None and match.group(1) != holder.lease_id:
        return None  # a record under another lease's name
    return holder


def inherited_handoff(env: Mapping[str, str]) -> Handoff | None:
    """The lease handed down to this process, if its holder really is an ancestor."""
    raw = env.get(HANDOFF_ENV)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        handoff = Handoff(
            root=Path(data["dir"]),
            pid=int(data["pid"]),
            starttime=None if data["start"] is None else int(data["start"]),
            cores=parse_coreset(str(data["cores"]), HANDOFF_ENV),
            plugin_vars=tuple(str(v) for v in data.get("vars", ())),
        )
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError, CoreSetError):
        return None
    from ..host.processes import ancestors

    if (handoff.pid, handoff.starttime) not in ancestors():
        return None
    return handoff
