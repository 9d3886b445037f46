import pytest


@pytest.mark.parametrize("n", [1, 2, 4, 1, 8])
@pytest.mark.neuron(cores="n")
def test_sizes(n, neuron_cores):
    assert len(neuron_cores.cores) == n
