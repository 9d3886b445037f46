"""Test scope: every test leases its own window, around pytest's whole protocol for it.

The wait happens in a ``tryfirst`` wrapper of ``pytest_runtest_protocol``:
outside pytest-timeout's timer (the wait has its own bound) and around
pytest-forked's fork, so a forked child inherits the environment and the locks.

Never waiting for ourselves: once a runtime in this process has pinned a
lease's cores (a Neuron device is open when its test ends), later tests that
need no more cores run on those cores without a new lease; one that needs
more fails at once, since this process can never get them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from ..core.lnc import lnc_problem
from ..host.envpatch import EnvPatch
from ..host.procinfo import open_devices
from .classify import need_of
from .context import LeaseWaitFailed
from .keys import TEST_LEASE_KEY
from .marked import add_properties, check_timeouts
from .state import NeuronWarning

if TYPE_CHECKING:
    from collections.abc import Generator

    from ..core.need import Need
    from ..locks.lease import Lease
    from .context import NeuronContext


STOPPED = "pytest-neuron: no cores for the rest of this run (see the first error)"


class TestCores:
    """One test's lease in test scope (``shared``: the process's pinned lease, not released after it)."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.patch: EnvPatch | None = None
        self.error: str | None = None
        self.shared = False


class TestLeases:
    """Leases, environment and records of each test in test scope."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, context: NeuronContext) -> None:
        self.context = context
        self.pool_size = context.plan.pool_size

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        ctx = self.context
        need = need_of(item, self.pool_size)
        test_cores = TestCores()
        item.stash[TEST_LEASE_KEY] = test_cores
        env = ctx.test_env(need)
        if need.error is None:
            self._lease(item, need, test_cores, env)
        test_cores.patch = EnvPatch(env).apply() if env else None
        try:
            return (yield)
        finally:
            if test_cores.patch is not None:
                test_cores.patch.restore()
            if test_cores.lease is not None and not test_cores.shared:
                self._end(item, test_cores.lease)
            ctx.report_overrides()

    def _lease(
        self, item: pytest.Item, need: Need, test_cores: TestCores, env: dict[str, str | None]
    ) -> None:
        ctx = self.context
        if ctx.state.pinned:
            pinned = ctx.state.pinned[0]
            if need.cores <= len(pinned.cores):
                test_cores.lease, test_cores.shared = pinned, True
                env.update(ctx.lease_env(pinned))
            else:
                test_cores.error = (
                    f"{item.nodeid} needs {need.cores} cores, but {ctx.pinned_by} initialised the Neuron "
                    f"runtime in this process, which holds cores {pinned.visible_cores} until the process "
                    "exits, and this process cannot get more; start Neuron work in a subprocess, run with "
                    "--forked, or use worker scope with bigger slices (--neuron-cores-per-worker)"
                )
            return
        if ctx.gave_up is not None:
            test_cores.error = f"{item.nodeid}: not waiting for cores again in this process: {ctx.gave_up}"
            return
        lnc = ctx.lnc_of(need)
        topo = ctx.plan.topology
        problem = None if topo is None else lnc_problem(topo, lnc, "test", item.nodeid)
        if problem is not None:  # per-test LNC the host cannot do: this test fails, the run goes on
            test_cores.error = problem
            return
        started = time.time()
        try:
            lease = ctx.acquire(need.cores, who=item.nodeid, worker=ctx.worker, test=item.nodeid, lnc=lnc)
        except LeaseWaitFailed as exc:
            test_cores.error = str(exc)
            item.user_properties.append(("neuron_wait_seconds", round(time.time() - started, 4)))
            if exc.run_wide:
                ctx.gave_up = str(exc)
                item.session.shouldstop = STOPPED
            if ctx.trace is not None:
                ctx.trace.wait(item.nodeid, started, time.time(), need.cores, str(exc))
            return
        test_cores.lease = lease
        env.update(ctx.lease_env(lease))
        if ctx.trace is not None:
            ctx.trace.lease(lease, item.nodeid)

    def _end(self, item: pytest.Item, lease: Lease) -> None:
        ctx = self.context
        devices = open_devices(ctx.device_prefix)
        if ctx.trace is not None:
            ctx.trace.release(lease, pinned=bool(devices))
        if not devices:
            ctx.release(lease)
            return
        ctx.state.pinned.append(lease)
        ctx.pinned_by = item.nodeid
        message = (
            f"{item.nodeid} initialised the Neuron runtime in this process ({devices[0]} is open), "
            f"which pins cores {lease.visible_cores} until the process exits; they stay locked until "
            f"then, later tests here that need at most {len(lease.cores)} cores run on them, and tests "
            "that need more fail. Start Neuron work in a subprocess or run with --forked in test scope."
        )
        ctx.pinned_message = message
        record_warning(item, NeuronWarning(message))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        test_cores = item.stash.get(TEST_LEASE_KEY, None)
        if test_cores is not None and test_cores.error:
            pytest.fail(test_cores.error, pytrace=False)
        check_timeouts(self.context, item, need_of(item, self.pool_size))
        add_properties(self.context, item)


def record_warning(item: pytest.Item, warning: NeuronWarning) -> None:
    """Report ``warning`` for ``item`` after its run, outside pytest's per-test warning capture.

    ``item.warn`` here would bypass the capture: the warning would only reach stderr (lost
    from the report, and from the controller's under xdist) or raise under ``-W error``.
    Recording it through the hook, as pytest's own capture does, puts it in the warnings
    summary, forwarded by xdist from a worker to the controller.
    """
    import warnings

    path, lineno, _ = item.reportinfo()
    message = warnings.WarningMessage(warning, type(warning), str(path), (lineno or 0) + 1)
    item.ihook.pytest_warning_recorded.call_historic(
        kwargs={"warning_message": message, "when": "runtest", "nodeid": item.nodeid, "location": None}
    )
