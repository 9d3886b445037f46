"""Kernels compiled and run in-process, one NeuronCore per xdist worker."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from pytest_neuron.testing import init_runtime

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("kernel", ["add", "matmul", "softmax", "rmsnorm", "topk", "cumsum"])
def test_kernel(kernel: str, artifacts: Path) -> None:
    runtime = init_runtime()  # in-process, as nkipy's runtime does
    (artifacts / f"{kernel}.neff").write_text(runtime.visible_cores)
    key = os.environ["PYTEST_NEURON_KEY"]
    assert artifacts.name == f"kernel_artifacts_{key}"
    print(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}: {kernel} on core {runtime.visible_cores}")
