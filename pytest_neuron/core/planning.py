"""Building a run's plan from the command line, the environment and the ini file.

Only a process that starts a run builds one (a single run, an xdist controller); a worker
receives its controller's plan (plan_wire.py) and never imports this module.

Which NeuronCores the run may use is found by a chain of providers, tried in order; the
first that answers wins and the result names it in ``source``:

1. ``--neuron-cores`` / ini ``neuron_cores``: an explicit pool, trusted as given
   (this is how a machine without Neuron devices simulates one);
2. an inherited ``NEURON_RT_VISIBLE_CORES``: that set is the pool;
3. an inherited ``NEURON_RT_NUM_CORES=N`` (N > 0): N of the detected cores;
4. ``neuron-ls --json-output`` (run by host/detect.py, parsed by detection.py);
5. ``/dev/neuron*`` devices times the cores per device of the instance family (host/detect.py);
6. nothing: no Neuron cores here.

(topology.py has the values: :class:`~pytest_neuron.core.topology.Topology`, ``Host``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cmdline import this_command
from .coreset import CoreSetError, format_coreset, parse_coreset
from .plan import RunPlan
from .record import replace
from .settings import REQUIRE, RUN_SETTINGS, Resolved, SettingError, Spec, resolve
from .topology import LNC_VARIABLE, NUM_CORES, VISIBLE_CORES, Host, Topology, TopologyError, identity_topology

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from .plan import Handoff

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


# -- the pool: the provider chain of the module docstring -------------------------------------
def lnc_from_env(env: Mapping[str, str]) -> int | None:
    value = env.get(LNC_VARIABLE, "").strip()
    if value in ("", "1", "2"):
        return int(value) if value else None
    raise TopologyError(
        f"invalid logical NeuronCore config {value!r} from environment variable {LNC_VARIABLE}: "
        "expected 1 or 2"
    )


def _parse(value: str, source: str) -> frozenset[int]:
    try:
        return parse_coreset(value, source)
    except CoreSetError as exc:
        raise TopologyError(str(exc)) from exc


def _from_host(host: Host, cores: Collection[int], source: str, limit: int | None = None) -> Topology:
    ordered = tuple(sorted(cores))
    return Topology(
        cores=ordered,
        physical={core: host.physical[core] for core in ordered},
        source=source,
        lnc=host.lnc,
        device_of={core: host.device_of[core] for core in ordered if core in host.device_of},
        instance_type=host.instance_type,
        limit=limit,
    )


def resolve_topology(
    *,
    explicit: tuple[str, str] | None,
    env: Mapping[str, str],
    detect: Callable[[], Host | None],
) -> Topology | None:
    """Run the provider chain of the module docstring; ``None`` when no core is found.

    ``explicit`` is ``(value, source)`` from ``--neuron-cores`` or ini
    ``neuron_cores``; ``detect`` runs providers 4 and 5 and is called at most once.
    """
    visible = env.get(VISIBLE_CORES, "").strip()
    visible_source = f"environment variable {VISIBLE_CORES}"
    if explicit is not None:
        value, source = explicit
        pool = _parse(value, source)
        if visible:
            outer = _parse(visible, visible_source)
            if not pool <= outer:
                raise TopologyError(
                    f"{source} {value.strip()!r} names core {min(pool - outer)}, outside the inherited "
                    f"{VISIBLE_CORES}={visible!r}; name only cores within {format_coreset(outer)}"
                )
        return identity_topology(pool, f"{source}={value.strip()}", lnc=lnc_from_env(env) or 1)

    if visible:
        pool = _parse(visible, visible_source)
        host = detect()
        if host is None:
            return identity_topology(pool, f"{VISIBLE_CORES}={visible}", lnc=lnc_from_env(env) or 1)
        try:
            parse_coreset(
                visible, visible_source, within=host.cores, within_name=f"the cores of {host.source}"
            )
        except CoreSetError as exc:
            raise TopologyError(f"{exc}; to use it as given, pass --neuron-cores={visible}") from exc
        return _from_host(host, pool, f"{VISIBLE_CORES}={visible} of {host.source}")

    number = env.get(NUM_CORES, "").strip()
    if number and not (number.isascii() and number.isdigit()):
        raise TopologyError(
            f"invalid {NUM_CORES} {number!r} from the environment: expected a whole number of cores "
            "(0 means all)"
        )
    count = int(number) if number else 0
    host = detect()
    if count == 0:
        return None if host is None else replace(_from_host(host, host.cores, host.source), whole_host=True)
    if host is None:
        raise TopologyError(
            f"{NUM_CORES}={count} is set in the environment but no Neuron device was found; "
            "name the cores with --neuron-cores"
        )
    if count > len(host.cores):
        raise TopologyError(
            f"{NUM_CORES}={count} from the environment asks for more cores than {host.source} "
            f"has ({len(host.cores)}: {format_coreset(host.cores)}); expected at most {len(host.cores)}"
        )
    return _from_host(host, host.cores, f"{NUM_CORES}={count} of {host.source}", limit=count)
