"""Test scope: each test leases the cores its marker asks for, for its own run.

Run with `--neuron-scope=test`.  These tests start their Neuron work in a
subprocess (as torchrun, a CLI or neuron_parallel_compile would), which reads
NEURON_RT_VISIBLE_CORES when it starts; `neuron_cores.env` holds every Neuron
variable in effect for this test, ready to pass on explicitly.  Tests asking
for 1, 2, 4 and 8 cores share the 8-core pool without ever colliding.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_neuron import NeuronCores


def run_on_neuron(env: dict[str, str], seconds: float = 0.2) -> str:
    """Start the fake runtime in a subprocess, as a launcher would start the real one."""
    import os

    result = subprocess.run(
        [sys.executable, "-m", "pytest_neuron.testing", "run", "--seconds", str(seconds)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    "cores",
    [pytest.param(n, marks=pytest.mark.neuron(n), id=f"{n}-cores") for n in (1, 1, 2, 2, 4, 4, 8)],
)
def test_each_test_gets_a_window_of_its_own(cores: int, neuron_cores: NeuronCores) -> None:
    assert len(neuron_cores.cores) == cores
    print(run_on_neuron(neuron_cores.env))


@pytest.mark.neuron(2, log_level="WARNING", exec_timeout=60)
def test_runtime_settings_come_with_the_cores(neuron_cores: NeuronCores) -> None:
    assert neuron_cores.env["NEURON_RT_LOG_LEVEL"] == "WARNING"
    assert neuron_cores.env["NEURON_RT_EXEC_TIMEOUT"] == "60"
    print(run_on_neuron(neuron_cores.env))
