import pytest


@pytest.mark.neuron(2, log_level="info")
def test_env(neuron_cores):
    for name, value in sorted(neuron_cores.env.items()):
        print(f"{name}={value}")
