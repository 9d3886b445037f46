"""The example suite runs against pytest-neuron's fake Neuron runtime.

The fake runtime plays the Neuron driver on a machine without Neuron devices:
it reserves the cores named by NEURON_RT_VISIBLE_CORES exclusively across
processes and fails with "NeuronCore(s) not available" when another process
holds one, like the real runtime.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

# One simulated 8-core host shared by every worker of every run on this machine.
os.environ.setdefault(
    "PYTEST_NEURON_FAKE_DIR", os.path.join(tempfile.gettempdir(), "pytest-neuron-example-host")
)
os.environ.setdefault("PYTEST_NEURON_FAKE_CORES", "8")


def pytest_configure(config: pytest.Config) -> None:
    # So that `-p no:neuron` runs the same suite and shows the collisions the plugin prevents.
    if not config.pluginmanager.has_plugin("neuron"):
        config.addinivalue_line("markers", "neuron(cores=1): NeuronCores this test needs (pytest-neuron)")
