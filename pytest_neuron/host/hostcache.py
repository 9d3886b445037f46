"""Detecting the host once per run, and handing the result down to nested runs.

Host detection (providers 4 and 5 of topology.py) runs ``neuron-ls`` in a
subprocess.  A run that detects a host exports what it found in
``PYTEST_NEURON_HOST``, with its own pid and start time; every pytest run
nested inside it (pytester runs, in-process or in a subprocess, and the runs
their xdist workers start) uses that value instead of running ``neuron-ls``
again, so tests never see detection's subprocess (nor the ``time.sleep`` of
its wait loop).  As for a lease hand-off, a value whose writer is not this
process or one of its ancestors (a copied shell variable, a recycled pid) is
ignored.  The run that exported it removes it when its config ends.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from ..core.plan import HOST_ENV
from ..core.topology import Host
from .processes import ancestors
from .procinfo import my_starttime

if TYPE_CHECKING:
    from collections.abc import Mapping


def host_value(host: Host) -> str:
    """The ``PYTEST_NEURON_HOST`` value for ``host``, detected by this process."""
    data = {
        "pid": os.getpid(),
        "start": my_starttime(),
        "cores": list(host.cores),
        "physical": {str(k): list(v) for k, v in host.physical.items()},
        "device_of": {str(k): v for k, v in host.device_of.items()},
        "lnc": host.lnc,
        "source": host.source,
        "instance_type": host.instance_type,
    }
    return json.dumps(data, separators=(",", ":"))


def parse_host_value(raw: str) -> tuple[int, int | None, Host] | None:
    """``(pid, starttime, host)`` of a ``PYTEST_NEURON_HOST`` value; None for anything malformed."""
    try:
        data = json.loads(raw)
        host = Host(
            cores=tuple(int(c) for c in data["cores"]),
            physical={int(k): tuple(int(p) for p in v) for k, v in data["physical"].items()},
            device_of={int(k): int(v) for k, v in data["device_of"].items()},
            lnc=int(data["lnc"]),
            source=str(data["source"]),
            instance_type=None if data["instance_type"] is None else str(data["instance_type"]),
        )
        pid = int(data["pid"])
        start = None if data["start"] is None else int(data["start"])
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
        return None
    if set(host.physical) != set(host.cores):
        return None
    return pid, start, host


def inherited_host(env: Mapping[str, str]) -> Host | None:
    """The host detected by this process or an ancestor, if ``env`` hands one down."""
    raw = env.get(HOST_ENV)
    parsed = parse_host_value(raw) if raw else None
    if parsed is None:
        return None
    pid, start, host = parsed
    return host if (pid, start) in ancestors() else None
