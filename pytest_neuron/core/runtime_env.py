"""The NEURON_RT_* environment of a lease and of a test: pure functions."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..locks.handoff import HANDOFF_ENV
from .coreset import format_coreset

if TYPE_CHECKING:
    from collections.abc import Mapping

VISIBLE = "NEURON_RT_VISIBLE_CORES"
ROOT_COMM_ID = "NEURON_RT_ROOT_COMM_ID"
MASTER_PORT = "MASTER_PORT"
MASTER_PORT_OFFSET = 512
MAX_PORT = 65535
OTHER_VARS = (MASTER_PORT, HANDOFF_ENV)
PORT_VARS = (ROOT_COMM_ID, MASTER_PORT)  # derived per lease unless the user set them


def lease_env(
    cores: tuple[int, ...],
    first_physical: int,
    *,
    port_base: int,
    user_env: Mapping[str, str],
    handoff: str | None,
) -> dict[str, str | None]:
    """Variables for a process or test that holds ``cores``.

    Collective ports are derived from the first physical core, so parallel
    collective tests never bind the same port; a value the user set
    (in ``user_env``, the environment pytest started with) is left alone.
    Both stay valid ports (<= 65535): core numbers beyond the room above
    ``port_base`` wrap around (only simulated pools have such numbers).
    """
    env: dict[str, str | None] = {VISIBLE: format_coreset(cores), HANDOFF_ENV: handoff}
    room = max(1, MAX_PORT - port_base - MASTER_PORT_OFFSET + 1)
    offset = first_physical % room
    if ROOT_COMM_ID not in user_env:
        env[ROOT_COMM_ID] = f"localhost:{port_base + offset}"
    if MASTER_PORT not in user_env:
        env[MASTER_PORT] = str(port_base + MASTER_PORT_OFFSET + offset)
    return env


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
