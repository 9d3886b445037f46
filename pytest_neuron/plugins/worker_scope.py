"""Worker scope: a process that got no slice.

A process with its slice needs no per-test hook at all: its slice and the
per-test defaults are in the process environment from the start.  These two
plugins are registered only when the slice could not be had.
"""

from __future__ import annotations

import pytest


class RunWithoutCores:
    """A run without xdist that got no cores: it ends once, before collection, with the one error.

    A :class:`pytest.UsageError`: pytest prints it once, as ``ERROR: ...``, and exits with status 4.
    """

    def __init__(self, message: str) -> None:
        self.message = message

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        raise pytest.UsageError(self.message)


class NoSlice:
    """An xdist worker without a slice: every test fails, marked or not.

    A runtime started there would see no NEURON_RT_VISIBLE_CORES and reach for every core.
    """

    def __init__(self, message: str) -> None:
        self.message = message

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        pytest.fail(self.message, pytrace=False)
