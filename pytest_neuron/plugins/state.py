"""The ``neuron_cores`` fixture's value and the plugin's warning class (imported only where used)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pytest

from ..core.coreset import format_coreset
from ..core.runtime_env import KEY_ENV, PORT_VARS, VISIBLE, derived_ports, master_port, plugin_port_vars
from ..core.settings import DEFAULT_PORT_BASE

if TYPE_CHECKING:
    from ..locks.lease import Lease
    from .context import NeuronContext


class NeuronWarning(pytest.PytestWarning):
    """A pytest-neuron warning (pinned cores, an overridden variable, a short pytest-timeout)."""


@dataclass(frozen=True)
class NeuronCores:
    """What the ``neuron_cores`` fixture returns: the cores this test runs with.

    ``cores`` are logical indices at ``lnc`` (the numbering ``NEURON_RT_VISIBLE_CORES``
    uses), ``physical`` the physical cores they cover (what is locked).  ``key`` is
    unique to this lease among every run on the host (also ``$PYTEST_NEURON_KEY``),
    ``port`` a TCP port no other window held at the same time gets (``MASTER_PORT``'s
    value unless you set ``MASTER_PORT`` yourself).
    """

    cores: tuple[int, ...]
    visible_cores: str
    env: dict[str, str]
    wait_seconds: float
    physical: tuple[int, ...] = ()
    lnc: int = 1
    key: str = ""
    port: int | None = None
    port_base: int = field(default=DEFAULT_PORT_BASE, repr=False)
    derived: tuple[str, ...] = field(default=PORT_VARS, repr=False)  # the port variables the plugin set

    def split(self, n: int) -> list[NeuronCores]:
        """``n`` contiguous, disjoint parts of equal size, in order, for ``n`` processes.

        Each part has its own ``env``: ``NEURON_RT_VISIBLE_CORES`` of the part, and the
        collective ports a lease of exactly those cores gets (from the part's first physical
        core), so parts never collide with each other, nor with any window of another run;
        ports you set yourself are kept.  ``key`` is ``<this key>.<i>``.  Raises
        ``ValueError`` when ``n`` is not a whole number >= 1 that divides the cores.
        """
        size = len(self.cores)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or size % n:
            raise ValueError(
                f"NeuronCores.split({n!r}): {size} core{'s' if size != 1 else ''} ({self.visible_cores}) do "
                f"not split into {n!r} equal parts; expected a whole number >= 1 that divides {size}"
            )
        per, phys_per = size // n, len(self.physical) // n
        parts = []
        for i in range(n):
            cores = self.cores[i * per : (i + 1) * per]
            physical = self.physical[i * phys_per : (i + 1) * phys_per]
            env = dict(self.env)
            env[VISIBLE] = format_coreset(cores)
            if physical:
                ports = derived_ports(physical[0], self.port_base)
                env.update({name: ports[name] for name in self.derived})
            key = f"{self.key}.{i}" if self.key else ""
            if key:
                env[KEY_ENV] = key
            port = master_port(physical[0], self.port_base) if physical else None
            parts.append(
                replace(
                    self,
                    cores=cores,
                    visible_cores=env[VISIBLE],
                    env=env,
                    physical=physical,
                    key=key,
                    port=port,
                )
            )
        return parts

    def shell_env(self) -> str:
        """``env`` as ``NAME=value`` words for a command line (``ssh host "$(...) cmd"``), quoted."""
        return " ".join(f"{name}={shlex.quote(value)}" for name, value in sorted(self.env.items()))


def neuron_cores_of(
    lease: Lease, wait: float, *, run_id: str, port_base: int, derived: tuple[str, ...], lnc: int
) -> NeuronCores:
    """The fixture's value for a test that runs with ``lease``, from the environment in effect."""
    from ..core.runtime_env import lease_key, neuron_environ

    return NeuronCores(
        lease.cores,
        lease.visible_cores,
        neuron_environ(),
        wait,
        physical=lease.physical,
        lnc=lnc,
        key=lease_key(run_id, lease.lease_id),
        port=master_port(lease.physical[0], port_base),
        port_base=port_base,
        derived=derived,
    )


def cores_for(
    context: NeuronContext, lease: Lease | None, wait: float, lnc: int | None = None
) -> NeuronCores | None:
    """The fixture's value for a test that runs with ``lease`` (None without one): the variables in
    effect, which are the lease's unless a conftest, fixture or test overrode them."""
    if lease is None:
        return None
    in_effect = context.visible_in_effect(lease) if lease is context.state.lease else (lease.cores, None)
    cores, visible = in_effect
    plan = context.plan
    found = neuron_cores_of(
        lease,
        wait,
        run_id=plan.run_id,
        port_base=int(plan.value("port_base")),
        derived=plugin_port_vars(plan.user_env),
        lnc=context.lnc_of(None) if lnc is None else lnc,
    )
    if cores != lease.cores or visible not in (None, lease.visible_cores):
        found = replace(found, cores=cores, visible_cores=visible or lease.visible_cores)
    return found
