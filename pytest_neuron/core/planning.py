"""Building a run's plan from the command line, the environment and the ini file.

Only a process that starts a run builds one (a single run, an xdist controller); a worker
receives its controller's plan (plan_wire.py) and never imports this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cmdline import this_command
from .plan import RunPlan
from .pool import resolve_topology
from .settings import REQUIRE, RUN_SETTINGS, Resolved, SettingError, Spec, resolve
from .topology import TopologyError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .handdown import Handoff
    from .topology import Host

USER_ENV_PREFIXES = ("NEURON_", "PYTEST_NEURON_")
USER_ENV_NAMES = ("MASTER_PORT",)


def snapshot_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(USER_ENV_PREFIXES) or k in USER_ENV_NAMES}


def build_plan(
    cmdline: Callable[[str], Any],
    ini: Callable[[str], str | None],
    env: Mapping[str, str],
    *,
    detect: Callable[[], tuple[Host | None, bool]],
    handoff: Handoff | None = None,
) -> RunPlan:
    """Resolve every run setting and the pool.

    ``detect`` finds the host when the pool needs it (providers 4 and 5) and says whether it ran
    here or was handed down; ``handoff`` is the lease this run inherited, if any.  Both come from
    the caller, so this module reads nothing but its arguments.  Raises SettingError or
    TopologyError (both ValueError) with one line.
    """
    explicit: tuple[str, str] | None = None
    if cmdline("neuron_cores") is not None:
        explicit = (str(cmdline("neuron_cores")), "--neuron-cores")
    elif (ini_cores := ini("neuron_cores")) and ini_cores.strip():
        explicit = (ini_cores, "ini neuron_cores")
    found: list[tuple[Host | None, bool]] = []  # (host, detected here), once detection ran

    def detect_once() -> Host | None:
        found.append(detect())
        return found[0][0]

    topology = resolve_topology(explicit=explicit, env=env, detect=detect_once)
    if handoff is not None and topology is not None and not handoff.cores.issuperset(topology.cores):
        raise TopologyError(
            f"this run is nested inside pid {handoff.pid}'s lease of cores "
            f"{sorted(handoff.cores)} and may only use those, but its pool is {topology.source}"
        )
    settings: dict[str, Resolved[Any]] = {}
    for spec in RUN_SETTINGS:
        settings[spec.name] = _resolve(spec, cmdline, ini, env, active=topology is not None)
    per_worker = settings["cores_per_worker"]
    if topology is not None and per_worker.value is not None and per_worker.value > topology.size:
        raise SettingError(
            f"invalid value {str(per_worker.value)!r} from {per_worker.source}: more than the "
            f"{topology.size} cores of the pool ({topology.source})"
        )
    user_env = snapshot_env(env)
    if handoff is not None:
        for name in handoff.plugin_vars:
            user_env.pop(name, None)
    host, here = found[0] if found else (None, False)
    return RunPlan(
        topology, settings, user_env, handoff, command=this_command(), host=host, detected_here=here
    )


def _resolve(
    spec: Spec[Any],
    cmdline: Callable[[str], Any],
    ini: Callable[[str], str | None],
    env: Mapping[str, str],
    *,
    active: bool,
) -> Resolved[Any]:
    """Resolve one run setting.

    Without a pool the plugin is inert: a bad environment or ini value meant
    for Neuron hosts is not an error there (what was typed on this command
    line still is, and so is ``neuron_require``, which matters most there).
    """
    if active or spec is REQUIRE:
        return resolve(spec, cmdline=cmdline(spec.dest), env=env, ini=ini(spec.ini))
    return resolve(spec, cmdline=cmdline(spec.dest), env={}, ini=None)
