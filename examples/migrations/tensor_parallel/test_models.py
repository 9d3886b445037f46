"""Tensor-parallel model tests: the core count comes from the tp_degree parameter.

NxDI runs these in-process (the runtime loads in the test process), one process per test
with ``--forked``.  pytest-forked fails every test on pytest 9.2, so this suite runs with
pytest-isolated: ``--neuron-scope=test --isolated --isolated-numprocesses=2``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_neuron.testing import init_runtime

if TYPE_CHECKING:
    from pytest_neuron import NeuronCores


@pytest.mark.parametrize("model", ["llama", "mixtral"])
@pytest.mark.parametrize("tp_degree", [1, 2, 4, 8])
@pytest.mark.neuron(cores="tp_degree")
def test_generate(model: str, tp_degree: int, neuron_cores: NeuronCores) -> None:
    runtime = init_runtime()  # in-process, as torch-neuronx loads the model
    assert len(runtime.cores) == tp_degree
    workdir = Path(os.environ["BASE_COMPILE_WORK_DIR"])
    workdir.mkdir(parents=True)  # fails if another test or run had it
    (workdir / "model.neff").write_text(runtime.visible_cores)
    print(f"{model} tp={tp_degree} on cores {runtime.visible_cores}, compiled in {workdir.parent.name}")
