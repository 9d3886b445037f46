import os

import pytest


@pytest.mark.neuron
def test_whole(neuron_cores):
    visible = os.environ.get("NEURON_RT_VISIBLE_CORES")
    print(f"\nVISIBLE {visible} | fixture {neuron_cores.visible_cores} | key {neuron_cores.key}")
