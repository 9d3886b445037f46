"""Handing a lease down to nested runs.

A process that holds a lease exports ``PYTEST_NEURON_LEASE`` (the lock domain,
the holder's pid and start time, the cores).  A pytest run that finds it, and
finds that holder among its own ancestors (or itself, for an in-process
pytester run), uses the cores of that lease without locking them again: it
coordinates with its siblings in a nested lock domain of its own, so it can
never wait on its own ancestor.  A value whose holder is not an ancestor (a
stale variable copied into another shell, a recycled pid) is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.coreset import CoreSetError, format_coreset, parse_coreset
from ..host.procinfo import ancestors, my_starttime

if TYPE_CHECKING:
    from collections.abc import Mapping

HANDOFF_ENV = "PYTEST_NEURON_LEASE"


@dataclass(frozen=True)
class Handoff:
    root: Path
    pid: int
    starttime: int | None
    cores: frozenset[int]
    plugin_vars: tuple[str, ...] = ()  # variables the holder's plugin set, not its user

    @property
    def nested_root(self) -> Path:
        return self.root / "nested" / f"{self.pid}-{self.starttime}"


def handoff_value(root: Path, cores: tuple[int, ...], *, plugin_vars: tuple[str, ...] = ()) -> str:
    """The ``PYTEST_NEURON_LEASE`` value for a lease this process holds.

    ``plugin_vars`` names the variables the plugin set for the lease (the
    collective ports): a nested run derives its own instead of keeping them as
    if its user had set them.
    """
    data = {
        "dir": str(root),
        "pid": os.getpid(),
        "start": my_starttime(),
        "cores": format_coreset(cores),
        "vars": list(plugin_vars),
    }
    return json.dumps(data, separators=(",", ":"))


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
    if (handoff.pid, handoff.starttime) not in ancestors():
        return None
    return handoff
