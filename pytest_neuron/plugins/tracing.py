"""The ``--neuron-trace`` plugin: registered only when a trace is asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from .context import NeuronContext


class TracePlugin:
    """Records each test's phases into the trace (the leases are recorded where they are taken)."""

    def __init__(self, context: NeuronContext) -> None:
        from .trace import Trace

        plan, topo = context.plan, context.plan.topology
        assert topo is not None
        self.trace = Trace(
            str(plan.value("trace")),
            context.role,
            context.worker,
            plan.run_id,
            pool=topo.cores,
            lock_dir=plan.lock_root,
            physical=topo.physical,
        )
        context.trace = self.trace
        # the slice was leased in pytest_load_initial_conftests, before the trace existed
        if context.state.lease is not None:
            self.trace.lease(context.state.lease, context.worker or "pytest")
        elif context.state.failed_wait is not None:
            start, end, k = context.state.failed_wait
            self.trace.wait(context.worker or "pytest", start, end, k, context.state.error)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.trace.phase(report.nodeid, report.when, report.start, report.stop, report.outcome)
