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

The run's command, as a person typed it (``python -m pytest -n 2``, not a site-packages path):
``sys.argv[0]`` of ``python -m pytest`` is ``.../site-packages/pytest/__main__.py``
and that of the ``pytest`` console script its absolute path in the venv's
``bin``; ``sys.orig_argv`` (Python 3.10+) keeps ``-m pytest``.  :func:`as_typed` is pure: the
caller passes the argument vector and the directories of ``PATH``.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from .coreset import CoreSetError, format_coreset, parse_coreset
from .plan import RunPlan
from .record import replace
from .settings import REQUIRE, RUN_SETTINGS, Resolved, SettingError, Spec, resolve
from .topology import LNC_VARIABLE, NUM_CORES, VISIBLE_CORES, Host, Topology, TopologyError, identity_topology

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

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


# -- the command as typed ------------------------------------------------------------------------
#: the options of the interpreter that take a value (``python -X dev -m pytest``)
_TAKES_VALUE = frozenset({"-X", "-W", "-Q"})


def as_typed(argv: Sequence[str], path_dirs: Sequence[str] = ()) -> str:
    """``argv`` of a Python process (its ``/proc/PID/cmdline`` or ``sys.orig_argv``) as typed.

    The interpreter and a console script found in ``path_dirs`` (or next to the
    interpreter) are shown by their base names; everything else as it was given.
    """
    if not argv:
        return ""
    words = list(argv)
    first = os.path.basename(words[0])
    if not first.startswith("python"):
        return shlex.join([_short(words[0], path_dirs), *words[1:]])
    i = 1
    while i < len(words) and words[i].startswith("-") and words[i] not in ("-m", "-c", "-"):
        i += 2 if words[i] in _TAKES_VALUE else 1
    if i < len(words) and words[i] == "-m":
        return shlex.join(["python", *words[1:]])
    if i < len(words) and not words[i].startswith("-"):
        script = words[i]
        if os.path.isabs(script) and os.path.dirname(script) in {*path_dirs, os.path.dirname(words[0])}:
            return shlex.join([os.path.basename(script), *words[i + 1 :]])  # a console script: `pytest`
    return shlex.join(["python", *words[1:]])


def _short(program: str, path_dirs: Sequence[str]) -> str:
    return os.path.basename(program) if os.path.dirname(program) in path_dirs else program


def path_dirs(env: dict[str, str] | None = None) -> tuple[str, ...]:
    environ = os.environ if env is None else env
    return tuple(d for d in environ.get("PATH", "").split(os.pathsep) if d)


def this_command() -> str:
    """This process's command line as typed (falls back to ``sys.argv`` before 3.10)."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return as_typed(argv, path_dirs()) or sys.executable
