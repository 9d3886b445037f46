import os
import subprocess
import sys

import pytest


@pytest.mark.neuron(4)
def test_outer(neuron_cores):
    env = {**os.environ, **neuron_cores.env}
    if os.environ.get("DROP_PORTS"):  # let the nested run choose ports of its own
        for name in ("NEURON_RT_ROOT_COMM_ID", "MASTER_PORT"):
            env.pop(name, None)
    env["INNER_LOG"] = os.path.abspath("inner.log")  # xdist workers' own output is not shown
    inner = [sys.executable, "-m", "pytest", "inner", "-p", "no:cacheprovider", "-q", "-n", "2", "-s"]
    done = subprocess.run(inner, env=env, capture_output=True, text=True, check=False)
    print(done.stdout)
    with open(env["INNER_LOG"]) as log:
        print("".join(sorted(log, key=lambda line: line.split()[1])))  # by cores
    assert done.returncode == 0
