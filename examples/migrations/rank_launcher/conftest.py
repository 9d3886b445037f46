"""The optimum-neuron-shaped suite: only the fake Neuron host to run on."""

from __future__ import annotations

import os
import tempfile

# The fake Neuron host of the examples: one simulated 8-core host (as in examples/conftest.py).
os.environ.setdefault(
    "PYTEST_NEURON_FAKE_DIR", os.path.join(tempfile.gettempdir(), "pytest-neuron-example-host")
)
os.environ.setdefault("PYTEST_NEURON_FAKE_CORES", "8")
