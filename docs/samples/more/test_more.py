import pytest
from pytest_neuron.testing import init_runtime

RUNTIMES = []


@pytest.mark.neuron(2)
def test_pins_two():
    RUNTIMES.append(init_runtime())


@pytest.mark.neuron(4)
def test_needs_four():
    pass
