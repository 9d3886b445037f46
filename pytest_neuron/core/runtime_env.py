"""The NEURON_RT_* environment of a lease and of a test: pure functions."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .coreset import format_coreset
from .plan import HANDOFF_ENV, HOST_ENV
from .topology import VISIBLE_CORES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .topology import Topology

VISIBLE = VISIBLE_CORES  # the variable the plugin sets for every lease
ROOT_COMM_ID = "NEURON_RT_ROOT_COMM_ID"
MASTER_PORT = "MASTER_PORT"
MASTER_PORT_OFFSET = 512
MAX_PORT = 65535
KEY_ENV = "PYTEST_NEURON_KEY"
OTHER_VARS = (MASTER_PORT, HANDOFF_ENV, HOST_ENV, KEY_ENV)
PORT_VARS = (ROOT_COMM_ID, MASTER_PORT)  # derived per lease unless the user set them


def plugin_port_vars(user_env: Mapping[str, str]) -> tuple[str, ...]:
    """The collective-port variables the plugin sets for a lease: those the user did not set."""
    return tuple(name for name in PORT_VARS if name not in user_env)


def lease_key(run_id: str, lease_id: str) -> str:
    """A key unique to one lease of one run on this host: ``<run id>-<lease id>``.

    Both parts are random (48 and 32 bits), so two runs on one host, or two leases
    of one run, never share a key: a work directory named after it is never clobbered.
    """
    return f"{run_id}-{lease_id[:8]}"


def port_offset(first_physical: int, port_base: int) -> int:
    """The offset of a window's ports above ``port_base``: its first physical core.

    Both ports stay valid (<= 65535): core numbers beyond the room above ``port_base``
    wrap around (only simulated pools have such numbers).
    """
    room = max(1, MAX_PORT - port_base - MASTER_PORT_OFFSET + 1)
    return first_physical % room


def master_port(first_physical: int, port_base: int) -> int:
    """``MASTER_PORT`` of a window whose first physical core is ``first_physical``."""
    return port_base + MASTER_PORT_OFFSET + port_offset(first_physical, port_base)


def derived_ports(first_physical: int, port_base: int) -> dict[str, str]:
    """The collective ports of a window whose first physical core is ``first_physical``.

    Every window on the host has a different first physical core (the locks are on
    physical cores), so two windows held at once never get the same ports.
    """
    offset = port_offset(first_physical, port_base)
    return {
        ROOT_COMM_ID: f"localhost:{port_base + offset}",
        MASTER_PORT: str(port_base + MASTER_PORT_OFFSET + offset),
    }


def lease_env(
    cores: tuple[int, ...],
    first_physical: int,
    *,
    port_base: int,
    user_env: Mapping[str, str],
    handoff: str | None,
    key: str | None = None,
) -> dict[str, str | None]:
    """Variables for a process or test that holds ``cores``.

    Collective ports are derived from the first physical core, so parallel
    collective tests never bind the same port; a value the user set
    (in ``user_env``, the environment pytest started with) is left alone.
    Both stay valid ports (<= 65535): core numbers beyond the room above
    ``port_base`` wrap around (only simulated pools have such numbers).
    """
    env: dict[str, str | None] = {VISIBLE: format_coreset(cores), HANDOFF_ENV: handoff}
    for name, value in derived_ports(first_physical, port_base).items():
        if name not in user_env:
            env[name] = value
    if key is not None:
        env[KEY_ENV] = key
    return env


#: In worker scope, exported only while a test that asked for cores runs (marker or fixture):
#: torch.distributed's generic ``MASTER_PORT`` changes code that never asked for Neuron cores.
#: ``NEURON_RT_VISIBLE_CORES``, ``NEURON_RT_ROOT_COMM_ID`` (read only by the Neuron runtime,
#: which every test of the worker shares) and the hand-off stay set for the worker's life.
ASKED_ONLY = (MASTER_PORT,)


def split_worker_env(env: Mapping[str, str | None]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """A worker-scope slice's variables: those for the whole process, and those for tests that ask."""
    process = {k: v for k, v in env.items() if k not in ASKED_ONLY}
    asked = {k: v for k, v in env.items() if k in ASKED_ONLY}
    return process, asked


def settings_env(values: Mapping[str, object], names: Mapping[str, str | None]) -> dict[str, str | None]:
    """NEURON_RT_* variables for resolved per-test settings (``None``: leave as is)."""
    env: dict[str, str | None] = {}
    for name, value in values.items():
        var = names[name]
        if var is None or value is None:
            continue
        env[var] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


def neuron_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every Neuron variable in effect, ready to pass to a subprocess."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k.startswith("NEURON_") or k in OTHER_VARS}


def process_slice_env(
    env: dict[str, str | None], cores: tuple[int, ...], topology: Topology
) -> dict[str, str | None]:
    """The variables a worker-scope slice exports: ``env`` less ``NEURON_RT_VISIBLE_CORES``
    when the slice is every core of the detected host.

    The runtime's default is every core, the same set, so exporting it changes nothing for
    the runtime, but launchers that check it break: torch-xla's ``remap_visible_cores``
    requires the visible count to equal the local world size, so a serial run that exported
    ``0-7`` failed every rank launcher of world size 1 or 2.  The cores stay locked as
    before; the ports and ``PYTEST_NEURON_LEASE`` are still exported.  With an explicit pool
    (``--neuron-cores``) the plugin cannot know it is the whole host, so it exports it.
    """
    if topology.whole_host and topology.limit is None and tuple(cores) == tuple(topology.cores):
        return {name: value for name, value in env.items() if name != VISIBLE}
    return env
