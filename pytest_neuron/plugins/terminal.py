"""Lines shown to the user while pytest runs: outside pytest's output capture, once per condition."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


def capture_disabled(config: pytest.Config) -> contextlib.AbstractContextManager[object]:
    """pytest's capture turned off for a moment, as ``capsys.disabled()`` does.

    The one place that uses pytest's capture manager beyond its hooks:
    ``CaptureManager.global_and_fixture_disabled()`` is what ``capsys.disabled()``
    itself calls.  tests/test_waiting.py fails loudly if it disappears.
    """
    capman = config.pluginmanager.getplugin("capturemanager")
    disabled = getattr(capman, "global_and_fixture_disabled", None)
    return disabled() if callable(disabled) else contextlib.nullcontext()


def write_now(config: pytest.Config, text: str) -> None:
    """Show ``text`` on the terminal now: through the terminal reporter when there is one, else stderr.

    An xdist worker has no terminal of its own; its stderr is the
    controller's, so its lines reach the same terminal.
    """
    reporter = None if hasattr(config, "workerinput") else config.pluginmanager.getplugin("terminalreporter")
    with capture_disabled(config):
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(text, yellow=True)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
