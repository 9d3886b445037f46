"""In-process tests of different core counts in test scope, on the latest pytest: pytest-isolated.

pytest-forked 1.7.5 fails every forked test on pytest 9.2 (tests/test_e2e.py skips its forked
scenario there).  pytest-isolated (>= 0.6, maintained, pytest >= 7) runs each test in a fresh
pytest subprocess; pytest-neuron runs inside that child, leases the test's window there, and the
child's exit frees the runtime's cores.  Its own ``--isolated-numprocesses`` runs several children at
once (it does not isolate under xdist's ``-n``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, assert_outcomes

if TYPE_CHECKING:
    from pathlib import Path

pytest.importorskip("pytest_isolated")

MIXED = """
import os
import pytest
from pytest_neuron.testing import init_runtime

@pytest.mark.parametrize("tp_degree", [1, 2, 4, 8, 2, 1, 4, 1])
@pytest.mark.neuron(cores="tp_degree")
def test_model(tp_degree, neuron_cores, neuron_work_dir):
    runtime = init_runtime()  # in-process, as torch_neuronx does: it pins the cores until exit
    assert runtime.visible_cores == neuron_cores.visible_cores
    assert len(runtime.cores) == tp_degree
    (neuron_work_dir / "model.neff").write_text(runtime.visible_cores)
"""


@pytest.mark.parametrize("extra", [[], ["--isolated-numprocesses=3"]])
def test_isolated_runs_mixed_in_process_core_counts(
    pytester: pytest.Pytester,
    fake_host: Path,
    lock_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
) -> None:
    monkeypatch.setenv("PYTEST_NEURON_DEVICE_PREFIX", str(fake_host / "dev" / "neuron"))
    pytester.makepyfile(test_mixed=MIXED)
    result = pytester.runpytest_subprocess(
        *BASE_ARGS,
        "-p",
        "no:forked",
        "--isolated",
        *extra,
        "--neuron-cores=0-7",
        "--neuron-scope=test",
        f"--neuron-lock-dir={lock_dir}",
        timeout=120,
    )
    assert_outcomes(result, passed=8)
    text = result.stdout.str()
    assert "NeuronCore(s) not available" not in text
    assert "NeuronWarning" not in text  # each runtime lived in its own child


def test_without_isolation_the_runtime_pins_the_first_window(
    pytester: pytest.Pytester, fake_host: Path, lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The premise: in one process the runtime keeps the first test's cores (all 8, biggest first),
    so every later test runs on those 8 instead of its own count."""
    monkeypatch.setenv("PYTEST_NEURON_DEVICE_PREFIX", str(fake_host / "dev" / "neuron"))
    pytester.makepyfile(test_mixed=MIXED)
    result = pytester.runpytest_subprocess(
        *BASE_ARGS,
        "--neuron-cores=0-7",
        "--neuron-scope=test",
        "--neuron-wait-timeout=0",
        f"--neuron-lock-dir={lock_dir}",
        timeout=120,
    )
    assert_outcomes(result, passed=1, failed=7, warnings=1)
    assert "initialised the Neuron runtime in this process" in result.stdout.str()
