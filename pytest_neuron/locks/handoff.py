"""Handing a lease down to nested runs.

A process that holds a lease exports ``PYTEST_NEURON_LEASE`` (the lock domain,
the holder's pid and start time, the cores).  A pytest run that finds it, and
finds that holder among its own ancestors (or itself, for an in-process
pytester run), uses the cores of that lease without locking them again: it
coordinates with its siblings in a nested lock domain of its own, so it can
never wait on its own ancestor.  A value whose holder is not an ancestor (a
stale variable copied into another shell, a recycled pid) is ignored.

The value also carries ``ids``: the id of this lease after the ids of the
leases it was nested in.  Every process started below the holder inherits
it, which is how a taker finds the processes that may still use a dead
holder's cores (procinfo.lease_carriers, lease.py's invariants).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.coreset import CoreSetError, format_coreset, parse_coreset
from ..core.plan import HANDOFF_ENV, Handoff
from ..host.procinfo import ancestors, inherited_lease_ids, my_starttime

if TYPE_CHECKING:
    from collections.abc import Mapping


MAX_CHAIN = 16  # lease ids kept from the enclosing runs


def handoff_value(
    root: Path,
    cores: tuple[int, ...],
    *,
    plugin_vars: tuple[str, ...] = (),
    lease_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The ``PYTEST_NEURON_LEASE`` value for a lease this process holds.

    ``plugin_vars`` names the variables the plugin set for the lease (the
    collective ports): a nested run derives its own instead of keeping them as
    if its user had set them.  ``lease_id`` joins the ids inherited from the
    environment ``env`` (default: this process's).
    """
    ids = [*inherited_ids(os.environ if env is None else env), *([lease_id] if lease_id else [])]
    data = {
        "dir": str(root),
        "pid": os.getpid(),
        "start": my_starttime(),
        "cores": format_coreset(cores),
        "vars": list(plugin_vars),
        "ids": ids[-MAX_CHAIN:],
    }
    return json.dumps(data, separators=(",", ":"))


def inherited_ids(env: Mapping[str, str]) -> list[str]:
    """The lease ids in an inherited ``PYTEST_NEURON_LEASE``, whoever its holder is."""
    raw = env.get(HANDOFF_ENV)
    return list(inherited_lease_ids(f"{HANDOFF_ENV}={raw}".encode())) if raw else []


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


__all__ = ["HANDOFF_ENV", "Handoff", "handoff_value", "inherited_handoff", "inherited_ids"]
