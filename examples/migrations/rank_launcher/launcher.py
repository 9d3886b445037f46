"""A rank launcher in the manner of optimum-neuron's distributed tests, on the fake runtime.

``launch(world_size)`` starts one process per rank with LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set, as torchrun does.  Each rank applies the rule of
torch-xla's ``remap_visible_cores`` before it starts the runtime: when
NEURON_RT_VISIBLE_CORES is set, its count must equal the world size (one core and one
rank is also fine), and rank r takes the r-th core; when it is unset, rank r takes core r.
"""

from __future__ import annotations

import os
import subprocess
import sys

RANK = """
import os, sys
from pytest_neuron.core.coreset import parse_coreset
from pytest_neuron.testing import init_runtime

rank, world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
visible = os.environ.get("NEURON_RT_VISIBLE_CORES")
if visible:
    cores = sorted(parse_coreset(visible, "NEURON_RT_VISIBLE_CORES"))
    if not (len(cores) <= 1 and world == 1):
        if len(cores) != world:
            sys.exit(f"LOCAL_WORLD_SIZE {world} != count {len(cores)} from NEURON_RT_VISIBLE_CORES")
        os.environ["NEURON_RT_VISIBLE_CORES"] = str(cores[rank])
else:
    os.environ["NEURON_RT_VISIBLE_CORES"] = str(rank)
print(init_runtime().visible_cores)
"""


def launch(world_size: int) -> list[str]:
    """Run ``world_size`` ranks; the core each rank got, or AssertionError with a rank's error."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "LOCAL_WORLD_SIZE": str(world_size)}
    env.setdefault("MASTER_PORT", "29500")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK],
            env={**env, "LOCAL_RANK": str(rank), "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    outs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.strip().splitlines()[-1]
    return [out.strip() for out, _ in outs]
