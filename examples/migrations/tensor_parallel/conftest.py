"""neuronx-distributed-inference-shaped conftest: a compile work dir per test, unique across runs.

NxDI's integration conftest sets BASE_COMPILE_WORK_DIR to ``<base>/<test name>/``: two runs
of the same suite on one host then compile into the same directory.  Here the directory
lives in ``neuron_work_dir``, named after this lease's key.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path


# The fake Neuron host of the examples: one simulated 8-core host (as in examples/conftest.py).
os.environ.setdefault(
    "PYTEST_NEURON_FAKE_DIR", os.path.join(tempfile.gettempdir(), "pytest-neuron-example-host")
)
os.environ.setdefault("PYTEST_NEURON_FAKE_CORES", "8")
# Where the fake runtime's devices are, so the plugin sees a runtime open in a test's process
# (as it sees /dev/neuron* on a Neuron host) and keeps its lease until that process exits.
os.environ.setdefault(
    "PYTEST_NEURON_DEVICE_PREFIX", os.path.join(os.environ["PYTEST_NEURON_FAKE_DIR"], "dev", "neuron")
)


@pytest.fixture(autouse=True)
def unique_compile_workdir(
    request: pytest.FixtureRequest, neuron_work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)
    path = neuron_work_dir / name
    monkeypatch.setenv("BASE_COMPILE_WORK_DIR", f"{path}/")
    return path
