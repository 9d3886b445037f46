import pytest
from pytest_neuron.testing import init_runtime


@pytest.mark.parametrize("tp", [1, 2, 4, 2, 1])
@pytest.mark.neuron(cores="tp")
def test_model(tp, neuron_cores):
    runtime = init_runtime()  # in-process, as torch_neuronx does: it pins the cores until exit
    assert runtime.visible_cores == neuron_cores.visible_cores
    assert len(runtime.cores) == tp
