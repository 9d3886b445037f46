"""nki-library-shaped collectives: (ranks, lnc) parameters, physical cores locked.

nki-library locks physical cores on a remote host (flock and a JSON state file over ssh)
so that LNC=1 and LNC=2 tests never share one.  On one host pytest-neuron does the same
from the marker: the window is numbered at the test's LNC and locked by physical core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_neuron import NeuronCores

RANKS = (
    "import json, time; from pytest_neuron.testing import init_runtime; "
    "r = init_runtime(); print(json.dumps(r.physical)); time.sleep(0.2)"
)


@pytest.mark.parametrize(("ranks", "lnc"), [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (4, 2)])
@pytest.mark.neuron(cores="ranks", lnc="lnc")
def test_all_reduce(ranks: int, lnc: int, neuron_cores: NeuronCores) -> None:
    out = subprocess.run(
        [sys.executable, "-c", RANKS],
        env={**os.environ, **neuron_cores.env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert tuple(json.loads(out.stdout)) == neuron_cores.physical
    assert len(neuron_cores.physical) == ranks * lnc
