import pytest


@pytest.mark.neuron(0)
def test_zero():
    pass


@pytest.mark.neuron(log_levle="INFO")
def test_typo():
    pass


@pytest.mark.neuron(16)
def test_too_big():
    pass


@pytest.mark.neuron(4)
def test_needs_four():
    pass
