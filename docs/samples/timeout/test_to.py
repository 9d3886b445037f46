import pytest


@pytest.mark.timeout(30)
@pytest.mark.neuron(1, exec_timeout=60)
def test_long_inference():
    pass
