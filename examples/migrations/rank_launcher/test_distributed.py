"""Distributed tests that start their own ranks, run serially on the whole host.

optimum-neuron's distributed tests start one process per rank themselves.  A serial run
of pytest-neuron on the whole host locks every core but leaves NEURON_RT_VISIBLE_CORES
unset (the runtime's default is the same set), so the ranks' remap rule keeps working for
every world size.
"""

from __future__ import annotations

import os

import pytest
from launcher import launch


@pytest.mark.parametrize("world_size", [1, 2, 8])
@pytest.mark.neuron(cores="world_size")
def test_data_parallel(world_size: int) -> None:
    print(f"world_size={world_size}: ranks on cores {', '.join(launch(world_size))}")
    print(f"  NEURON_RT_VISIBLE_CORES={os.environ.get('NEURON_RT_VISIBLE_CORES')}")
