"""The migration examples (examples/migrations/): five real projects' setups, run as their docs say.

Each is a suite of its own (its own pytest.ini), run as a real ``python -m pytest`` subprocess on
a fake 8-core host and a lock directory of this test's own.  docs/ci-recipes.md shows the same
commands and their output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "migrations"
POOL = ("--neuron-cores=0-7",)


def run(tmp_path: Path, folder: str, *args: str, env: dict[str, str] | None = None) -> str:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("NEURON_", "PYTEST_NEURON_", "PYTEST_XDIST"))
    }
    environ.update(
        {
            "PYTEST_NEURON_FAKE_DIR": str(tmp_path / "fake-host"),
            "PYTEST_NEURON_FAKE_CORES": "8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    environ.update(env or {})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(EXAMPLES / folder),
            f"--neuron-lock-dir={tmp_path / 'locks'}",
            *args,
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "NeuronCore(s) not available" not in text, text
    assert "crashed" not in text, text
    return text


def test_gwn_conftest_nkipy(tmp_path: Path) -> None:
    text = run(tmp_path, "gwn_conftest", "-n", "4", *POOL, "--neuron-cores-per-worker=1")
    assert "6 passed" in text, text
    assert "cores per worker: gw0 " in text


def test_remote_locks_nki_library(tmp_path: Path) -> None:
    text = run(tmp_path, "remote_locks", "-n", "3", *POOL, "--neuron-scope=test")
    assert "6 passed" in text, text


def test_client_server_fabtests_with_its_own_timeout_option(tmp_path: Path) -> None:
    # -p no:timeout: this venv has pytest-timeout (the test extras); CI also runs the suite where
    # it is not installed at all
    text = run(
        tmp_path, "client_server", "-n", "2", *POOL, "--neuron-scope=test", "-p", "no:timeout", "--timeout=60"
    )
    assert "4 passed" in text, text


def test_tensor_parallel_nxdi_with_pytest_isolated(tmp_path: Path) -> None:
    pytest.importorskip("pytest_isolated")
    text = run(
        tmp_path, "tensor_parallel", *POOL, "--neuron-scope=test", "--isolated", "--isolated-numprocesses=2"
    )
    assert "8 passed" in text, text


def test_rank_launcher_optimum_on_the_whole_host(tmp_path: Path) -> None:
    neuron_ls = f"cat {EXAMPLES / 'rank_launcher' / 'neuron-ls.json'}"
    text = run(tmp_path, "rank_launcher", "-s", env={"PYTEST_NEURON_NEURON_LS": neuron_ls})
    assert "3 passed" in text, text
    assert "neuron: pool 0-7 from neuron-ls" in text
    assert "world_size=2: ranks on cores 0, 1" in text
