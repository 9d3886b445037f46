import pytest


@pytest.mark.neuron
def test_one():
    pass
