"""A run's plan on the wire: from an xdist controller to its workers (``PYTEST_NEURON_PLAN``).

Only a controller (which encodes) and a worker (which decodes) import this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .plan import Controller, Handoff, RunPlan
from .record import asdict
from .settings import Resolved
from .topology import Topology


def plan_to_json(plan: RunPlan) -> str:
    topo = plan.topology
    data: dict[str, Any] = {
        "settings": {k: [r.value, r.source] for k, r in plan.settings.items()},
        "user_env": dict(plan.user_env),
        "slice_size": plan.slice_size,
        "run_id": plan.run_id,
        "command": plan.command,
        "run_pool": plan.run_pool,
        "controller": None if plan.controller is None else asdict(plan.controller),
        "handoff": None
        if plan.handoff is None
        else {
            "root": str(plan.handoff.root),
            "pid": plan.handoff.pid,
            "starttime": plan.handoff.starttime,
            "cores": sorted(plan.handoff.cores),
            "plugin_vars": list(plan.handoff.plugin_vars),
        },
        "topology": None
        if topo is None
        else asdict(topo)
        | {
            "physical": {str(k): list(v) for k, v in topo.physical.items()},
            "device_of": {str(k): v for k, v in topo.device_of.items()},
        },
    }
    return json.dumps(data, separators=(",", ":"))


def plan_from_json(text: str) -> RunPlan:
    data = json.loads(text)
    topo_data = data["topology"]
    topology = None
    if topo_data is not None:
        topology = Topology(
            cores=tuple(topo_data["cores"]),
            physical={int(k): tuple(v) for k, v in topo_data["physical"].items()},
            source=topo_data["source"],
            lnc=topo_data["lnc"],
            device_of={int(k): v for k, v in topo_data["device_of"].items()},
            instance_type=topo_data["instance_type"],
            limit=topo_data["limit"],
            whole_host=topo_data.get("whole_host", False),
        )
    handoff = None
    if data["handoff"] is not None:
        h = data["handoff"]
        handoff = Handoff(
            Path(h["root"]), h["pid"], h["starttime"], frozenset(h["cores"]), tuple(h["plugin_vars"])
        )
    settings = {k: Resolved(v[0], v[1]) for k, v in data["settings"].items()}
    return RunPlan(
        topology,
        settings,
        data["user_env"],
        handoff,
        slice_size=data["slice_size"],
        run_id=data["run_id"],
        command=data["command"],
        run_pool=data.get("run_pool"),
        controller=None if data.get("controller") is None else Controller(**data["controller"]),
    )
