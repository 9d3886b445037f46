"""The report header, the ``neuron`` summary section, overridden variables, and the records they read."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.report import header_lines, summary_lines
from .state import NeuronWarning

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
    from .scheduler import order_header  # test scope: the order in effect

    verbose = context.config.get_verbosity() > 0
    lines = header_lines(context.plan, context.role, verbose, context.test_defaults)
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


def report_overrides(context: NeuronContext) -> None:
    """Warn once per variable that a conftest, fixture or test changed after the plugin set it.

    An xdist worker only records it: the controller reports every worker's
    changes in one warning (plugins/xdist.py).  Under ``--neuron-require`` the
    change is an error: the process's remaining tests fail with it.
    """
    texts = context.check_overrides()
    if not texts or (context.role == "worker" and not context.plan.value("require")):
        return
    if context.plan.value("require"):
        from .worker_scope import NoSlice

        message = (
            f"{texts[0][1]}; failing because of --neuron-require ({context.plan.settings['require'].source})"
        )
        if not context.config.pluginmanager.has_plugin("neuron-override-error"):
            context.config.pluginmanager.register(NoSlice(message), "neuron-override-error")
        if context.role == "worker":
            return
    for var, text in texts:
        emit_warning(context.config, text, var)


def _conftest_naming(config: pytest.Config, var: str) -> tuple[str, int] | None:
    """The one loaded conftest.py whose text names ``var``, and the line: where the change most
    likely came from (None when no conftest, or several, name it)."""
    found: list[tuple[str, int]] = []
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and os.path.basename(path) == "conftest.py":
            with contextlib.suppress(OSError, UnicodeDecodeError):
                lines = Path(path).read_text(encoding="utf-8").splitlines()
                hits = [n for n, line in enumerate(lines, 1) if var in line]
                if hits:
                    found.append((path, hits[0]))
    return found[0] if len(found) == 1 else None


def emit_warning(config: pytest.Config, text: str, var: str) -> None:
    """A run-wide NeuronWarning in the warnings summary, located at the conftest that names ``var``.

    Recorded through ``pytest_warning_recorded``, as pytest's own capture does, so that it
    points at the user's file, not at this plugin.
    """
    filename, lineno = _conftest_naming(config, var) or (str(config.rootpath), 0)
    warning = NeuronWarning(text)
    message = warnings.WarningMessage(warning, NeuronWarning, filename, lineno)
    config.hook.pytest_warning_recorded.call_historic(
        kwargs={"warning_message": message, "when": "config", "nodeid": "", "location": None}
    )


def overrides_warning(per_worker: Mapping[str, Mapping[str, list[str | None]]]) -> list[tuple[str, str]]:
    """One (variable, text) per variable, naming every worker's value (the controller's one warning)."""
    from .context import OVERRIDE_REMEDY

    by_var: dict[str, list[str]] = {}
    for worker, changes in sorted(per_worker.items()):
        for var, (expected, actual) in changes.items():
            by_var.setdefault(var, []).append(f"{worker} {expected or 'unset'} -> {actual or 'unset'}")
    return [
        (var, f"{var} was changed after pytest-neuron set it ({', '.join(values)}; {OVERRIDE_REMEDY}")
        for var, values in by_var.items()
    ]
