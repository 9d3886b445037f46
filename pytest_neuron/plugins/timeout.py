"""The pytest-timeout budget of a test, read through pytest-timeout's public surface only.

pytest-timeout keeps its resolved settings private; its precedence is public
and documented (marker > ``--timeout`` > ``PYTEST_TIMEOUT`` > ini ``timeout``),
and so are all four sources, so this module reads them itself.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


def _seconds(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(str(value))
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def effective_pytest_timeout(item: pytest.Item) -> float | None:
    """The timeout pytest-timeout will apply to ``item`` (None: none, or pytest-timeout absent)."""
    config = item.config
    if not config.pluginmanager.hasplugin("timeout"):
        return None
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
        if value is not None:
            return _seconds(value)
    cmdline = config.getoption("timeout", None)
    if cmdline is not None:
        return _seconds(cmdline)
    env = os.environ.get("PYTEST_TIMEOUT")
    if env:
        return _seconds(env)
    return _seconds(config.getini("timeout"))
