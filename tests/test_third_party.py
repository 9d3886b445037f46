"""CI's good-citizen job (issue 16): pytest-xdist's own test suite gives the same outcomes with the plugin.

tests/third_party.py does the work (and says how); this test runs it as CI runs everything else.
It downloads pytest-xdist's sdist from PyPI once (cached in ``~/.cache/pytest-neuron``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("third_party.py")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_pytest_xdists_own_suite_gives_the_same_outcomes_with_the_plugin() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=2300, check=False
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same outcomes for all " in done.stdout
