import pytest
from pytest_neuron.testing import init_runtime

RUNTIMES = []  # like torch_neuronx: the runtime stays for the process
@pytest.mark.neuron(8)
def test_loads_model_in_process():
    RUNTIMES.append(init_runtime())


@pytest.mark.neuron(1)
def test_one_core():
    pass


@pytest.mark.neuron(2)
def test_two_cores():
    pass
