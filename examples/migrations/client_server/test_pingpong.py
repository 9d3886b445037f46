"""Client/server tests: two processes, each with a NeuronCore of its own, one shared port.

``neuron_cores.split(2)`` gives the server and the client one core each, out of this
test's 2-core window; ``neuron_cores.port`` is a port no other window held at the same
time gets (fabtests used 9228 + the xdist worker number, which every run shares).
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Commands

    from pytest_neuron import NeuronCores


@pytest.mark.parametrize("size", ["small", "medium", "large", "huge"])
@pytest.mark.neuron(2)
def test_pingpong(size: str, neuron_cores: NeuronCores, cmdline_args: Commands) -> None:
    server_cores, client_cores = neuron_cores.split(2)
    port = neuron_cores.port
    assert port is not None
    server = subprocess.Popen(cmdline_args.command("server", server_cores, port), shell=True)
    client = subprocess.run(
        cmdline_args.command("client", client_cores, port),
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert server.wait(timeout=cmdline_args.timeout) == 0
    assert client.returncode == 0, client.stderr
    print(size, client.stdout.strip())
    assert client.stdout.startswith(
        f"server core {server_cores.visible_cores}, client core {client_cores.visible_cores}"
    )
