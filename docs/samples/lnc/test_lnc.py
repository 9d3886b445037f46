import os

import pytest


@pytest.mark.parametrize(("ranks", "lnc"), [(2, 1), (2, 2), (1, 2)])
@pytest.mark.neuron(cores="ranks", lnc="lnc")
def test_collective(ranks, lnc, neuron_cores):
    print(
        f"\nranks={ranks} lnc={lnc}: cores {neuron_cores.visible_cores} physical {neuron_cores.physical}"
        f" NEURON_LOGICAL_NC_CONFIG={os.environ['NEURON_LOGICAL_NC_CONFIG']}"
    )
