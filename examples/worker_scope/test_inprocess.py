"""Tests that start the (fake) Neuron runtime inside the worker process.

The runtime reads NEURON_RT_VISIBLE_CORES once, when it initialises, and keeps
those cores until the process exits: pytest-neuron gives each xdist worker its
own slice before any test module is imported, so these never collide.
Without the plugin (`-p no:neuron`) every worker asks for every core and all
but one fail with "NeuronCore(s) not available".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from pytest_neuron.testing import init_runtime

if TYPE_CHECKING:
    from pytest_neuron import NeuronCores


@pytest.mark.parametrize("model", ["resnet", "bert", "llama", "t5"])
def test_runtime_sees_only_this_workers_slice(model: str) -> None:
    runtime = init_runtime()  # like torch_neuronx / libnrt's nrt_init
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    print(f"{worker}: {model} runs on cores {runtime.visible_cores}")
    assert runtime.local_ids == tuple(range(len(runtime.cores)))


@pytest.mark.neuron(2)
def test_fixture_reports_the_cores(neuron_cores: NeuronCores) -> None:
    runtime = init_runtime()
    assert runtime.cores[: len(neuron_cores.cores)] == neuron_cores.cores[: len(runtime.cores)]
    assert neuron_cores.env["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
