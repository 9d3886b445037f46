"""fabtests-shaped conftest: the suite's own --timeout option, server and client commands.

libfabric's fabtests define ``--timeout`` (seconds per command) themselves, so this suite
runs only where pytest-timeout is not installed; pytest-neuron does not need it.  Commands
are built as strings and run through a shell, where fabtests prefix ``ssh <host>``.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_neuron import NeuronCores

# The fake Neuron host of the examples: one simulated 8-core host (as in examples/conftest.py).
os.environ.setdefault(
    "PYTEST_NEURON_FAKE_DIR", os.path.join(tempfile.gettempdir(), "pytest-neuron-example-host")
)
os.environ.setdefault("PYTEST_NEURON_FAKE_CORES", "8")

PEER = Path(__file__).with_name("peer.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--timeout", dest="timeout", type=int, default=30, help="seconds per command")
    parser.addoption("--provider", dest="provider", default="tcp", help="libfabric provider")


class Commands:
    def __init__(self, config: pytest.Config) -> None:
        self.timeout = int(config.getoption("--timeout"))
        self.provider = str(config.getoption("--provider"))

    def command(self, role: str, part: NeuronCores, port: int) -> str:
        """The command line of one side: the core is an argument, as fabtests pass it."""
        peer = f"{shlex.quote(sys.executable)} {shlex.quote(str(PEER))}"
        inner = f"{peer} {role} -p {self.provider} --core {part.visible_cores} -E={port}"
        # on two hosts: f"ssh {host} {shlex.quote(...)}"; here both sides run on this host
        return f"timeout {self.timeout} /bin/bash -c {shlex.quote(inner)}"


@pytest.fixture
def cmdline_args(request: pytest.FixtureRequest) -> Commands:
    return Commands(request.config)
