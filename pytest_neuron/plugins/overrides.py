"""Variables that decide which cores a runtime takes, changed after the plugin set them: one
warning per variable, located at the conftest that names it (imported only when one changed)."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pytest

    from .context import NeuronContext


def report_overrides(context: NeuronContext, texts: list[tuple[str, str]]) -> None:
    """Warn once per variable that a conftest, fixture or test changed after the plugin set it
    (``texts``: the new changes, from :meth:`NeuronContext.check_overrides`).

    An xdist worker only records it: the controller reports every worker's
    changes in one warning (plugins/xdist.py).  Under ``--neuron-require`` the
    change is an error: the process's remaining tests fail with it.
    """
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
    from .state import NeuronWarning

    filename, lineno = _conftest_naming(config, var) or (str(config.rootpath), 0)
    warning = NeuronWarning(text)
    message = warnings.WarningMessage(warning, NeuronWarning, filename, lineno)
    config.hook.pytest_warning_recorded.call_historic(
        kwargs={"warning_message": message, "when": "config", "nodeid": "", "location": None}
    )


def overrides_warning(per_worker: Mapping[str, Mapping[str, list[str | None]]]) -> list[tuple[str, str]]:
    """One (variable, text) per variable, naming every worker's value (the controller's one warning)."""
    from ..core.report import OVERRIDE_REMEDY

    by_var: dict[str, list[str]] = {}
    for worker, changes in sorted(per_worker.items()):
        for var, (expected, actual) in changes.items():
            by_var.setdefault(var, []).append(f"{worker} {expected or 'unset'} -> {actual or 'unset'}")
    return [
        (var, f"{var} was changed after pytest-neuron set it ({', '.join(values)}; {OVERRIDE_REMEDY}")
        for var, values in by_var.items()
    ]
