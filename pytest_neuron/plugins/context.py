"""One process's pytest-neuron state: its plan, role, leases and the environment it exported.

Not a plugin: the per-concern plugins in this folder share it through
``config.stash[CONTEXT_KEY]``.  Ordering, which the runtime's habits dictate:

* In **worker scope** a process (an xdist worker, or pytest itself without
  xdist) leases its slice in ``pytest_load_initial_conftests`` and exports
  ``NEURON_RT_VISIBLE_CORES`` before any conftest or test module is imported,
  since the runtime reads it once, when it initialises.  Under xdist the
  controller first reserves the whole run's cores in one request (see
  plugins/xdist.py); each worker then leases its own slice of that
  reservation in the reservation's nested lock domain, so no run ever holds
  part of its cores while it waits for the rest.
* In **test scope** each test leases its window (plugins/test_scope.py).
* A lease is released only when no Neuron device is open in this process:
  a runtime initialised in-process pins its cores until the process exits.
* What the plugin exported is remembered; a conftest, fixture or test that
  changes it afterwards is reported once (:meth:`NeuronContext.check_overrides`).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Literal

from ..core.coreset import CoreSetError, format_coreset, parse_coreset
from ..core.runtime_env import (
    VISIBLE,
    lease_env,
    lease_key,
    plugin_port_vars,
    process_slice_env,
    settings_env,
    split_worker_env,
)
from ..core.settings import RUNTIME_VARS, TEST_SETTINGS, Resolved, resolve
from ..core.topology import LNC_VARIABLE, NUM_CORES
from ..host.procinfo import open_devices
from .options import read_ini

# Imported where used, not here: a worker-scope process whose lease did not wait, and whose
# tests ask for no cores, never needs the waiting line, the hand-off or the fixture's value
# (each module costs a 2,000-test run about 0.1 %, see docs/performance.md).
if TYPE_CHECKING:
    from collections.abc import Mapping

    import pytest

    from ..core.need import Need
    from ..core.plan import RunPlan
    from ..host.envpatch import EnvPatch
    from ..locks.lease import Lease, LeaseManager
    from ..locks.per_lnc import LncLeases
    from .waiting import WaitNotice

Role = Literal["single", "controller", "worker"]

DEVICE_PREFIX_ENV = "PYTEST_NEURON_DEVICE_PREFIX"
WATCHED = (VISIBLE, NUM_CORES, LNC_VARIABLE)  # what decides which cores a runtime takes


class ProcessState:
    """What this process holds: its slice (worker scope) or the controller's run reservation, the
    environment it exported (restored in reverse), and the leases a runtime pinned."""

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.patches: list[EnvPatch] = []
        self.error: str | None = None
        self.failed_wait: tuple[float, float, int] | None = None  # start, end, cores of a failed wait
        self.pinned: list[Lease] = []


class NeuronContext:
    """Holds one process's plan, leases and exported environment."""

    def __init__(self, config: pytest.Config, plan: RunPlan, role: Role) -> None:
        self.config = config
        self.plan = plan  # kept in config.stash too: one plan per config, always the current one
        self.role: Role = role
        self.worker = os.environ.get("PYTEST_XDIST_WORKER") if role == "worker" else None
        self.state = ProcessState()
        self._manager: LeaseManager | None = None
        self._leases: LncLeases | None = None
        self.test_defaults: dict[str, Resolved[Any]] = {}
        self.device_prefix = os.environ.get(DEVICE_PREFIX_ENV, "/dev/neuron")
        self.pinned_message: str | None = None
        self.pinned_by: str | None = None
        self.trace: Any = None
        self.exported: dict[str, str | None] = {}
        self.asked_env: dict[str, str | None] = {}  # worker scope: set only for tests that ask for cores
        self.overrides: dict[str, tuple[str | None, str | None]] = {}
        self.gave_up: str | None = None  # test scope: the first wait that timed out in this process
        # A run nested in a lease (a pytester run, a pytest started by a test) leases only when a
        # test asks for cores: its parent's cores are its process tree's already, a config that
        # runs no test must not take them from a sibling, and more workers than cores is fine.
        # (A worker of a run's reservation is not nested: the controller assigned its slice.)
        self.lazy = plan.nested

    @property
    def plan(self) -> RunPlan:
        return self._plan

    @plan.setter
    def plan(self, plan: RunPlan) -> None:
        from .keys import PLAN_KEY

        self._plan = self.config.stash[PLAN_KEY] = plan

    @property
    def manager(self) -> LeaseManager:
        """This process's lease manager, created on first use (it imports the lock protocol)."""
        if self._manager is None:
            from ..locks.lease import LeaseManager

            topo = self.plan.topology
            assert topo is not None, "no pool: nothing to lease"
            self._manager = LeaseManager(
                self.plan.lock_root, topo, source=self.plan.lock_source, command=self.plan.command
            )
        return self._manager

    @property
    def pool_text(self) -> str:
        topo = self.plan.topology
        return "none" if topo is None else f"{format_coreset(topo.cores)} ({topo.source})"

    @property
    def who(self) -> str:
        return self.worker or "this run"

    # -- leasing with visible waits ----------------------------------------------------------
    @property
    def leases(self) -> LncLeases:
        """One lease manager per LNC on this lock domain (per-test LNC, test scope)."""
        if self._leases is None:
            from ..locks.lease import LeaseManager
            from ..locks.per_lnc import LncLeases

            self._leases = LncLeases(self.manager, LeaseManager, self.plan.lock_root)
        return self._leases

    def lnc_of(self, need: Need | None) -> int:
        """The LNC a test runs at: its marker's, else the run's setting, else the pool's."""
        value = self.in_effect(need, "lnc") if self.test_defaults else None
        topo = self.plan.topology
        return int(str(value)) if value is not None else (1 if topo is None else topo.lnc)

    def release(self, lease: Lease) -> None:
        """Give ``lease`` back (through the manager of its LNC); the nested lock domain it handed
        down goes with it.  The cores are unlocked even when the lock directory fails: that is
        reported as one line, not raised from a teardown hook."""
        from ..core.plan import NESTED
        from ..locks.lockdir import LockDirError

        try:
            if self._leases is None:
                self.manager.release(lease)
            else:
                self._leases.release(lease)
            if os.path.isdir(lease.domain / NESTED):  # a run nested in this one may have left its domain
                from ..locks.nested import drop_my_nested_domain

                drop_my_nested_domain(lease.domain)
        except LockDirError as exc:
            from .terminal import write_now

            write_now(self.config, f"pytest-neuron: releasing cores {lease.visible_cores}: {exc}")

    def acquire(
        self, k: int, *, who: str, worker: str | None, test: str | None, lnc: int | None = None
    ) -> Lease:
        """Lease ``k`` cores, printing a waiting line when the wait lasts; raises LeaseWaitFailed."""
        from ..locks.lease import LeaseError, LeaseTimeout, LockDirError

        timeout = float(self.plan.value("wait_timeout"))
        start = time.monotonic()
        notice: WaitNotice | None = None

        def waited() -> bool:  # called by the waiting lease on each wake-up
            nonlocal notice
            if notice is None:  # only a request that waits prints (and imports) the waiting line
                from .waiting import WaitNotice

                notice = WaitNotice(self, who, k, timeout, start)
            return notice()

        topo = self.plan.topology
        manager = self.manager if lnc is None or topo is None or lnc == topo.lnc else self.leases.manager(lnc)
        try:
            lease = manager.acquire(k, timeout=timeout, worker=worker, test=test, cancel=waited)
            if manager is not self.manager:
                self.leases.owned(lease, manager)
            return lease
        except LeaseTimeout:
            from ..core.waiting import gave_up_message
            from .waiting import current_holders

            holders = current_holders(self)
            raise LeaseWaitFailed(
                gave_up_message(who, k, time.monotonic() - start, holders, self.pool_text)
            ) from None
        except LeaseError as exc:  # this request can never fit the pool; others may
            message = f"pytest-neuron: {who} got no cores: {exc}"
            raise LeaseWaitFailed(message, run_wide=False) from None
        except LockDirError as exc:
            raise LeaseWaitFailed(f"pytest-neuron: {who} got no cores: {exc}") from None

    # -- process-wide slice (worker scope) -------------------------------------------------
    def lease_process_slice(self) -> None:
        """Lease this process's slice and export it; never raises for a busy pool."""
        topo = self.plan.topology
        if topo is None or self.state.lease is not None or self.state.error is not None:
            return  # one attempt per process: pytest_configure must not wait the whole bound again
        size = self.plan.slice_size or self.plan.value("cores_per_worker") or topo.size
        started = time.time()
        try:
            lease = self.acquire(size, who=self.who, worker=self.worker or "pytest", test=None)
        except LeaseWaitFailed as exc:
            self.state.error = str(exc)
            self.state.failed_wait = (started, time.time(), size)
            return
        except KeyboardInterrupt:
            # Ctrl-C while waiting (before conftests, where pytest has no handler yet): one line,
            # and the run ends as one without cores, not with a traceback
            self.state.error = f"pytest-neuron: {self.who} was interrupted while waiting for {size} cores"
            self.state.failed_wait = (started, time.time(), size)
            return
        self.state.lease = lease
        # the whole detected host: locked, but NEURON_RT_VISIBLE_CORES left to the runtime's default
        process_env, self.asked_env = split_worker_env(
            process_slice_env(self.lease_env(lease), lease.cores, topo)
        )
        self.export(process_env)

    def export(self, env: Mapping[str, str | None]) -> None:
        """Set ``env`` for the rest of the process (restored at unconfigure) and remember it."""
        from ..host.envpatch import EnvPatch  # not at import: a controller exports nothing

        self.state.patches.append(EnvPatch(env).apply())
        self.exported.update(env)

    def handoff_of(self, lease: Lease) -> str:
        """``PYTEST_NEURON_LEASE`` for ``lease``: the ports this plugin derived (not the user's: a
        nested run derives its own), and the lease id, by which a taker finds the lease's
        processes (locks/lease.py)."""
        from ..locks.holders import handoff_value

        return handoff_value(
            lease.domain,
            lease.cores,
            plugin_vars=plugin_port_vars(self.plan.user_env),
            lease_id=lease.lease_id,
        )

    def lease_env(self, lease: Lease) -> dict[str, str | None]:
        return lease_env(
            lease.cores,
            lease.physical[0],
            port_base=int(self.plan.value("port_base")),
            user_env=self.plan.user_env,
            handoff=self.handoff_of(lease),
            key=lease_key(self.plan.run_id, lease.lease_id),
        )

    def release_process_slice(self) -> None:
        while self.state.patches:
            self.state.patches.pop().restore()
        lease = self.state.lease
        if lease is None:
            return
        self.state.lease = None
        pinned = bool(open_devices(self.device_prefix))
        if self.trace is not None:
            self.trace.release(lease, pinned=pinned)
        if pinned:
            self.state.pinned.append(lease)  # the process exit releases it
        else:
            self.release(lease)

    # -- per-test settings -----------------------------------------------------------------
    def resolve_test_defaults(self) -> None:
        """Resolve the per-test settings once (command line > environment > ini > default).

        Without a pool the plugin has nothing to do, and environment or ini
        values meant for Neuron hosts must not break the run: only what was
        typed on this command line is checked.
        """
        active = self.plan.topology is not None
        for spec in TEST_SETTINGS:
            cmdline = self.config.getoption(spec.dest)
            ini = read_ini(self.config, spec.ini) if active else None
            env = self.plan.user_env if active else {}
            self.test_defaults[spec.name] = resolve(spec, cmdline=cmdline, env=env, ini=ini)

    def in_effect(self, need: Need | None, name: str) -> object:
        """A per-test setting: the marker's value (even 0 or False), else the resolved default."""
        given = None if need is None else need.settings.get(name)
        return given if given is not None else self.test_defaults[name].value

    def default_env(self) -> dict[str, str | None]:
        """The per-test settings' defaults as variables (exported once per process in worker scope)."""
        return settings_env({s.name: self.test_defaults[s.name].value for s in TEST_SETTINGS}, RUNTIME_VARS)

    def marker_env(self, need: Need) -> dict[str, str | None]:
        """The variables of a test that asked for cores, in worker scope: its marker's settings, and
        what the slice sets only for such tests (``MASTER_PORT``, see core/runtime_env.py)."""
        env = dict(self.asked_env)
        if need.settings:
            env.update(settings_env(dict(need.settings), RUNTIME_VARS))
        return env

    def test_env(self, need: Need) -> dict[str, str | None]:
        """Every per-test variable of ``need``: its marker's settings over the defaults."""
        return settings_env({s.name: self.in_effect(need, s.name) for s in TEST_SETTINGS}, RUNTIME_VARS)

    # -- overrides ---------------------------------------------------------------------------
    def check_overrides(self) -> list[tuple[str, str]]:
        """New changes to the variables that decide which cores a runtime takes: (variable, warning text).

        The plugin's value of each watched variable is what it exported, or
        what the environment held when pytest started.  Each variable is
        reported once per process.
        """
        if self.role == "controller" or self.plan.topology is None:
            return []  # a controller runs no test: its workers get their variables from it
        if self.state.lease is None and self.plan.scope == "worker":
            return []
        found: list[tuple[str, str]] = []
        for var in WATCHED:
            if var in self.overrides:
                continue
            expected = self.exported[var] if var in self.exported else self.plan.user_env.get(var)
            actual = os.environ.get(var)
            if actual != expected:
                self.overrides[var] = (expected, actual)
                from ..core.report import override_text

                found.append((var, override_text(var, expected, actual, self.worker)))
        return found

    def report_overrides(self) -> None:
        """Report new overrides (plugins/overrides.py), which is imported only for one."""
        texts = self.check_overrides()
        if texts:
            from .overrides import report_overrides

            report_overrides(self, texts)

    def visible_in_effect(self, lease: Lease) -> tuple[tuple[int, ...], str]:
        """The cores a runtime started now would take: the lease's, unless its variable was overridden."""
        if VISIBLE in self.overrides:
            value = os.environ.get(VISIBLE)
            if value:
                try:
                    return tuple(sorted(parse_coreset(value, VISIBLE))), value
                except CoreSetError:
                    return (), value
        return lease.cores, lease.visible_cores

    def process_summary(self) -> dict[str, Any]:
        lease = self.state.lease or (self.state.pinned[0] if self.state.pinned else None)
        cores = None
        if lease is not None:
            cores = self.visible_in_effect(lease)[1] if lease is self.state.lease else lease.visible_cores
        return {
            "worker": self.worker,
            "cores": cores,
            "wait": round(lease.wait_seconds, 3) if lease is not None else self._failed_wait(),
            "error": self.state.error,
            "pinned": self.pinned_message,
            "overrides": {k: list(v) for k, v in self.overrides.items()},
        }

    def _failed_wait(self) -> float | None:
        failed = self.state.failed_wait
        return None if failed is None else round(failed[1] - failed[0], 3)


class LeaseWaitFailed(Exception):
    """No cores: the bound passed, the lock directory failed, or the request can never fit.

    ``str()`` is the one error.  ``run_wide``: every later request of this process would fail
    the same way (a timeout, a lock-directory error), unlike a request the pool cannot hold.
    """

    def __init__(self, message: str, *, run_wide: bool = True) -> None:
        super().__init__(message)
        self.run_wide = run_wide
