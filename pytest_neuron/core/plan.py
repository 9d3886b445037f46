"""The plan of one run: its pool, its settings, and where its locks live.

Built once per process, from the command line, the environment and the ini
file (planning.py's ``build_plan``), or in an xdist worker from the controller's plan
(:func:`plan_from_json`), so every worker works from the same pool.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .handdown import Controller, Handoff
from .record import asdict, field, record, replace
from .settings import Resolved
from .topology import Host, Topology

if TYPE_CHECKING:
    from collections.abc import Mapping

PLAN_ENV = "PYTEST_NEURON_PLAN"


@record
class RunPlan:
    topology: Topology | None
    settings: Mapping[str, Resolved[Any]]
    user_env: Mapping[str, str]
    handoff: Handoff | None = None
    slice_size: int | None = None
    run_id: str = field(default_factory=lambda: os.urandom(6).hex())
    command: str = ""  # as typed: `python -m pytest -n 2`
    run_pool: int | None = None  # the whole pool's size, when ``topology`` is a worker's slice of it
    controller: Controller | None = None  # in an xdist worker: the controller that started it
    #: what host detection found, and whether it ran here (else it was handed down)
    host: Host | None = None
    detected_here: bool = False

    def value(self, name: str) -> Any:
        return self.settings[name].value

    @property
    def nested(self) -> bool:
        """A run nested in a lease it inherited (not a worker of a run's reservation): it leases
        only when a test asks for cores."""
        return self.handoff is not None and self.run_pool is None and self.scope == "worker"

    @property
    def pool_size(self) -> int | None:
        """How many cores the run's whole pool has (what a marker may ask for at most)."""
        if self.run_pool is not None:
            return self.run_pool
        return None if self.topology is None else self.topology.size

    @property
    def scope(self) -> str:
        return str(self.value("scope"))

    @property
    def lock_root(self) -> Path:
        """Where this run's locks live: the lock directory, or the nested domain of a handed-down lease."""
        if self.handoff is not None:
            return self.handoff.nested_root
        return Path(str(self.value("lock_dir")))

    @property
    def lock_source(self) -> str:
        if self.handoff is not None:
            return f"the lease handed down by pid {self.handoff.pid} (nested domain)"
        return self.settings["lock_dir"].source

    @property
    def plugin_port_vars(self) -> tuple[str, ...]:
        """The collective-port variables the plugin sets for a lease: those the user did not set."""
        from .runtime_env import PORT_VARS  # not on a run's path without a pool

        return tuple(name for name in PORT_VARS if name not in self.user_env)

    def with_workers(self, workers: int) -> RunPlan:
        """This plan for ``workers`` xdist workers: fixes each worker's slice size."""
        size = self.value("cores_per_worker")
        if size is None and self.topology is not None:
            size = max(1, self.topology.size // max(1, workers))
        return replace(self, slice_size=size)

    def slices_that_fit(self, size: int) -> int:
        """How many disjoint windows of ``size`` cores the pool holds at once."""
        if self.topology is None:
            return 0
        from .placement import candidate_windows  # sizing -n auto: not on a serial run's path

        taken: set[int] = set()
        count = 0
        for window in candidate_windows(self.topology.cores, size):
            if not taken.intersection(window):
                taken.update(window)
                count += 1
        limit = self.topology.limit
        return count if limit is None else min(count, limit // size)


# -- passing the plan to xdist workers ------------------------------------------
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
