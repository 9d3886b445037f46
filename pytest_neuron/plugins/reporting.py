"""The report header, the ``neuron`` summary section, and the records the summary reads (overridden
variables are plugins/overrides.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.report import header_lines, summary_lines

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pytest

    from .context import NeuronContext


class Records:
    """Which test ran on which cores, from the reports (only where the summary reads them)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, float, str | None]] = []  # nodeid, cores, wait, worker

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "setup":
            return
        props = dict(report.user_properties)
        if "neuron_cores" in props or "neuron_wait_seconds" in props:  # without cores: a failed wait
            self.records.append(
                (
                    report.nodeid,
                    str(props.get("neuron_cores", "")),
                    float(str(props.get("neuron_wait_seconds", 0.0))),
                    str(props["neuron_worker"]) if props.get("neuron_worker") else None,
                )
            )


def header(context: NeuronContext) -> list[str]:
    verbose = context.config.get_verbosity() > 0
    lines = header_lines(context.plan, context.role, verbose, context.test_defaults)
    if context.plan.scope != "test":
        return lines
    from .scheduler import order_header  # test scope: the order in effect

    return lines + order_header(context.config, context.plan, context.role)


def summary(
    context: NeuronContext, workers: Mapping[str, Mapping[str, Any]], notices: list[str]
) -> list[str]:
    if context.role == "worker" or context.plan.topology is None:
        return []
    if context.role == "single" and context.plan.scope == "worker" and context.state.error:
        return []  # the run ended with that one error (plugins/worker_scope.py)
    plugin = context.config.pluginmanager.get_plugin("neuron-records")
    records = plugin.records if isinstance(plugin, Records) else []
    process = context.process_summary() if context.role == "single" else None
    trace = None if context.trace is None else context.trace.written
    return summary_lines(
        context.plan.scope,
        records,
        workers,
        process,
        context.pinned_message,
        notices=notices,
        verbosity=context.config.get_verbosity(),
        trace=trace,
    )
