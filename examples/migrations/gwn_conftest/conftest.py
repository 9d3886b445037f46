"""nkipy-shaped conftest: per-worker artifacts, no worker-id arithmetic.

nkipy's conftest sets NEURON_RT_NUM_CORES=1 per xdist worker and names its artifacts
directory after the worker id (gw0, gw1, ...), which every run on the host shares.  With
pytest-neuron each worker already has its own slice before this file is imported, and
PYTEST_NEURON_KEY names that slice uniquely across runs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# The fake Neuron host of the examples: one simulated 8-core host (as in examples/conftest.py).
os.environ.setdefault(
    "PYTEST_NEURON_FAKE_DIR", os.path.join(tempfile.gettempdir(), "pytest-neuron-example-host")
)
os.environ.setdefault("PYTEST_NEURON_FAKE_CORES", "8")


ARTIFACTS = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    key = os.environ.get("PYTEST_NEURON_KEY", "no-neuron")
    path = Path(tempfile.gettempdir()) / f"kernel_artifacts_{key}"
    path.mkdir(exist_ok=True)
    config.stash[ARTIFACTS] = path


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    return request.config.stash[ARTIFACTS]
