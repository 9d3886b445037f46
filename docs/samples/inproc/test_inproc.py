import pytest
from pytest_neuron.testing import init_runtime

RUNTIMES = []

@pytest.mark.neuron(2)
def test_loads_model_in_process():
    RUNTIMES.append(init_runtime())  # like torch_neuronx: the runtime stays for the process


@pytest.mark.neuron(2)
def test_next():
    pass
