"""Tests that ask for cores: registered only when some collected test has a marker or the fixture."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import pytest

from ..core.lnc import lnc_problem
from ..host.envpatch import EnvPatch
from .classify import need_of
from .keys import TEST_LEASE_KEY
from .state import NeuronWarning
from .timeout import effective_pytest_timeout

if TYPE_CHECKING:
    from collections.abc import Generator

    from ..core.need import Need
    from ..locks.lease import Lease
    from .context import NeuronContext


def lease_of(context: NeuronContext, item: pytest.Item) -> tuple[Lease | None, float]:
    """The lease ``item`` runs with (its own in test scope, else the process's) and its wait."""
    test_cores = item.stash.get(TEST_LEASE_KEY, None)
    if test_cores is not None and test_cores.lease is not None:
        return test_cores.lease, 0.0 if test_cores.shared else test_cores.lease.wait_seconds
    lease = context.state.lease
    return lease, 0.0 if lease is None else lease.wait_seconds


def check_timeouts(context: NeuronContext, item: pytest.Item, need: Need) -> None:
    """Warn when pytest-timeout fires before the runtime's own NEURON_RT_EXEC_TIMEOUT."""
    exec_timeout = context.in_effect(need, "exec_timeout")
    if not exec_timeout:
        return  # no runtime timeout in effect: nothing to compare (and nothing to read per test)
    pytest_timeout = effective_pytest_timeout(item)
    if pytest_timeout and pytest_timeout <= float(str(exec_timeout)):
        path, lineno, _ = item.reportinfo()
        warnings.warn_explicit(  # at the test, not at this line
            NeuronWarning(
                f"{item.nodeid}: pytest-timeout ({pytest_timeout:g}s) fires at or before "
                f"NEURON_RT_EXEC_TIMEOUT ({exec_timeout}s); raise the pytest timeout so the runtime's "
                "own, clearer timeout error comes first"
            ),
            NeuronWarning,
            str(path),
            (lineno or 0) + 1,
        )


def add_properties(context: NeuronContext, item: pytest.Item) -> None:
    lease, wait = lease_of(context, item)
    if lease is not None:
        visible = context.visible_in_effect(lease)[1] if lease is context.state.lease else lease.visible_cores
        item.user_properties.append(("neuron_cores", visible))
        item.user_properties.append(("neuron_wait_seconds", round(wait, 4)))
        if context.worker:
            item.user_properties.append(("neuron_worker", context.worker))


class MarkedTests:
    """Checks and per-test settings of the tests that ask for cores, in either scope.

    Unmarked tests pass through after one stash lookup.
    """

    def __init__(self, context: NeuronContext) -> None:
        self.context = context
        self.worker_scope = context.plan.scope == "worker"
        self.pool_size = context.plan.pool_size

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        need = need_of(item, self.pool_size)
        if not (self.worker_scope and need.wants):
            return (yield)  # test scope sets every per-test variable with the lease
        self._lease_lazily(need)  # before the test's variables: they include the slice's ports
        env = self.context.marker_env(need)
        if not env:
            return (yield)
        patch = EnvPatch(env).apply()
        try:
            return (yield)
        finally:
            patch.restore()
            self.context.report_overrides()

    def _lease_lazily(self, need: Need) -> None:
        """A run nested in a lease takes its slice when its first test that asks for cores starts."""
        ctx = self.context
        if need.error is None and ctx.lazy and ctx.state.lease is None and ctx.state.error is None:
            ctx.lease_process_slice()
            if ctx.state.lease is not None:
                ctx.export(ctx.default_env())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        need = need_of(item, self.pool_size)
        if not need.wants:
            return
        if need.error is not None:
            pytest.fail(need.error, pytrace=False)
        if not self.worker_scope:
            return  # test scope: checked and recorded with the lease (plugins/test_scope.py)
        ctx = self.context
        topo = ctx.plan.topology
        problem = None if topo is None else lnc_problem(topo, ctx.lnc_of(need), "worker", item.nodeid)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        if ctx.lazy and ctx.state.lease is None and ctx.state.error is not None:
            pytest.fail(ctx.state.error, pytrace=False)
        have = self.context.state.lease
        if have is not None and need.cores > len(have.cores):
            pytest.fail(
                f"{item.nodeid} needs {need.cores} cores but its worker has {len(have.cores)} "
                f"({have.visible_cores}); give workers more with --neuron-cores-per-worker={need.cores}, "
                "or let each test lease its own with --neuron-scope=test",
                pytrace=False,
            )
        check_timeouts(self.context, item, need)
        add_properties(self.context, item)
