"""Per-test logical NeuronCore config (LNC): a test's window in its own LNC's numbering.

A pool is numbered at one LNC (the run's).  A test marked ``lnc=2`` on a pool numbered at
LNC=1 asks for logical cores of LNC=2, each covering two physical cores.  Its window is
placed in that numbering (:func:`topology_at_lnc`: the LNC-``L`` cores whose physical cores
all lie in the pool) and locked by the physical cores it covers, so tests at LNC=1 and
LNC=2 in one run, or in two runs, can never share a physical core.  Logical core ``j`` at
LNC ``L`` covers physical cores ``j*L .. j*L+L-1``, as the runtime numbers them.
"""

from __future__ import annotations

from .topology import LNC_FAMILIES, LNC_VARIABLE, Topology, TopologyError


def check_host_lnc(topology: Topology, lnc: int, where: str) -> None:
    """Raise a one-line TopologyError when the host cannot run at ``lnc``."""
    family = topology.instance_type.split(".", 1)[0] if topology.instance_type else None
    if lnc not in (topology.lnc, 1) and family is not None and family not in LNC_FAMILIES:
        raise TopologyError(
            f"{where}: lnc={lnc} is not possible on {topology.instance_type}: only "
            f"{', '.join(sorted(LNC_FAMILIES))} instances have a logical NeuronCore config of 2"
        )


def lnc_problem(topology: Topology, lnc: int, scope: str, nodeid: str) -> str | None:
    """Why ``nodeid`` cannot run at ``lnc`` (one line), or None."""
    if lnc == topology.lnc:
        return None
    if scope == "worker":
        return (
            f"{nodeid} runs at lnc={lnc} but its worker's cores are numbered at LNC={topology.lnc}; "
            "per-test LNC needs --neuron-scope=test, where each test leases a window in its own numbering"
        )
    try:
        check_host_lnc(topology, lnc, nodeid)
        topology_at_lnc(topology, lnc)
    except TopologyError as exc:
        return str(exc)
    return None


def run_lnc_problem(topology: Topology, lnc: int | None, source: str, scope: str) -> str | None:
    """A run-wide LNC default the worker-scope slices cannot honour (one line), or None."""
    if lnc is None or lnc == topology.lnc or scope != "worker":
        return None
    return (
        f"lnc {lnc} from {source} differs from the pool's LNC={topology.lnc} ({topology.source}), and in "
        f"worker scope every test runs on its worker's slice as numbered there; per-test LNC needs "
        f"--neuron-scope=test, or set {LNC_VARIABLE}={lnc} so the pool itself is numbered at LNC={lnc}"
    )


def topology_at_lnc(topology: Topology, lnc: int) -> Topology:
    """The pool of ``topology`` numbered at ``lnc``: each logical core whose physical cores are all in it."""
    if lnc == topology.lnc:
        return topology
    owner = {p: core for core in topology.cores for p in topology.physical[core]}
    top = max(owner, default=-1)
    cores = tuple(j for j in range(top // lnc + 1) if all(j * lnc + i in owner for i in range(lnc)))
    if not cores:
        raise TopologyError(f"pool {topology.source} has no whole core at lnc={lnc}")
    device_of = {j: topology.device_of[owner[j * lnc]] for j in cores if owner[j * lnc] in topology.device_of}
    limit = None if topology.limit is None else max(1, topology.limit * topology.lnc // lnc)
    return Topology(
        cores=cores,
        physical={j: tuple(range(j * lnc, j * lnc + lnc)) for j in cores},
        source=f"{topology.source}, at LNC={lnc}",
        lnc=lnc,
        device_of=device_of,
        instance_type=topology.instance_type,
        limit=limit,
    )
