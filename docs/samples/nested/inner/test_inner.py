import os

import pytest


@pytest.mark.neuron
@pytest.mark.parametrize("i", range(2))
def test_ports(i):
    env = os.environ
    seen = [env["PYTEST_XDIST_WORKER"], env["NEURON_RT_VISIBLE_CORES"], env["NEURON_RT_ROOT_COMM_ID"], env["MASTER_PORT"]]
    with open(env["INNER_LOG"], "a") as log:
        log.write(" ".join(seen) + "\n")
