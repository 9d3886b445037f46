"""A serial worker-scope run whose slice is the whole detected host leaves NEURON_RT_VISIBLE_CORES unset.

The runtime's default is every core, so the runtime sees the same set either way, but rank launchers
that check the variable break when it names more cores than ranks: torch-xla's
``remap_visible_cores`` requires the visible count to equal the local world size.  The rank launcher
here applies that rule (written from torch-xla's documented behaviour) on the fake runtime.  The host
is detected from a fake ``neuron-ls``; the cores stay locked for the run either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, assert_outcomes
from topology_fixtures import neuron_ls_json, printing_command

if TYPE_CHECKING:
    from pathlib import Path

RANK = """
import os, sys
from pytest_neuron.core.coreset import parse_coreset
from pytest_neuron.testing import init_runtime

rank, world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
visible = os.environ.get("NEURON_RT_VISIBLE_CORES")
if visible:  # the remap_visible_cores rule
    cores = sorted(parse_coreset(visible, "NEURON_RT_VISIBLE_CORES"))
    if not (len(cores) <= 1 and world == 1):
        if len(cores) != world:
            sys.exit(f"LOCAL_WORLD_SIZE={world} is not equal to count {len(cores)} "
                     f"from NEURON_RT_VISIBLE_CORES {cores}")
        os.environ["NEURON_RT_VISIBLE_CORES"] = str(cores[rank])
else:
    os.environ["NEURON_RT_VISIBLE_CORES"] = str(rank)
print(rank, init_runtime().visible_cores)
"""

SUITE = """
import json, os, subprocess, sys
import pytest

def launch(world_size, tmp_path):
    # one process per rank, as optimum-neuron's distributed test launcher starts them
    rank = tmp_path / "rank.py"
    rank.write_text(RANK)
    env = {**os.environ, "LOCAL_WORLD_SIZE": str(world_size)}
    procs = [subprocess.Popen([sys.executable, str(rank)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**env, "LOCAL_RANK": str(r)})
             for r in range(world_size)]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.strip().splitlines()[-1]
    return [out.strip() for out, _ in outs]

@pytest.mark.parametrize("world_size", [1, 2, 8])
@pytest.mark.neuron(cores="world_size")
def test_ranks(world_size, tmp_path):
    assert launch(world_size, tmp_path) == [f"{r} {r}" for r in range(world_size)]

def test_cores_are_locked_and_named(neuron_cores):
    out = subprocess.run([sys.executable, "-m", "pytest_neuron", "status", "--json",
                          "--lock-dir", os.environ["LOCK_DIR"]], capture_output=True, text=True, check=True)
    leases = [row for row in json.loads(out.stdout)["leases"] if row["state"] == "held"]
    assert sum(len(row["physical_core_list"]) for row in leases) == 8, out.stdout
    assert neuron_cores.visible_cores == "0-7" and neuron_cores.physical == tuple(range(8))
    print("VISIBLE", os.environ.get("NEURON_RT_VISIBLE_CORES"), "KEY" , "PYTEST_NEURON_KEY" in os.environ)
"""


@pytest.fixture
def detected_host(fake_host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock_dir: Path) -> Path:
    """An 8-core host that neuron-ls reports (4 devices x 2 cores), and the fake runtime on it."""
    command = printing_command(tmp_path / "bin", "neuron-ls", neuron_ls_json(4, 2))
    monkeypatch.setenv("PYTEST_NEURON_NEURON_LS", str(command))
    monkeypatch.setenv("LOCK_DIR", str(lock_dir))
    return fake_host


def run_suite(pytester: pytest.Pytester, lock_dir: Path, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_ranks=SUITE.replace("RANK)", repr(RANK) + ")"))
    return pytester.runpytest_subprocess(
        *BASE_ARGS, "-s", f"--neuron-lock-dir={lock_dir}", *args, timeout=120
    )


def test_serial_run_on_the_whole_host_keeps_rank_launchers_working(
    pytester: pytest.Pytester, detected_host: Path, lock_dir: Path
) -> None:
    result = run_suite(pytester, lock_dir)
    assert "neuron: pool 0-7 from neuron-ls" in result.stdout.str()
    assert_outcomes(result, passed=4)
    result.stdout.fnmatch_lines(["*VISIBLE None KEY True*"])


def test_test_scope_gives_each_launcher_exactly_its_world_size(
    pytester: pytest.Pytester, detected_host: Path, lock_dir: Path
) -> None:
    result = run_suite(pytester, lock_dir, "--neuron-scope=test", "-k", "not locked")
    assert_outcomes(result, passed=3)


def test_an_explicit_pool_is_exported_as_given(
    pytester: pytest.Pytester, detected_host: Path, lock_dir: Path
) -> None:
    """--neuron-cores is trusted as given, not known to be the whole host: it is exported, and the
    launcher's rule then refuses world sizes 1 and 2 (what every serial run did before)."""
    result = run_suite(pytester, lock_dir, "--neuron-cores=0-7")
    assert_outcomes(result, passed=2, failed=2)
    text = result.stdout.str()
    assert "LOCAL_WORLD_SIZE=2 is not equal to count 8" in text
    result.stdout.fnmatch_lines(["*VISIBLE 0-7 KEY True*"])


def test_xdist_workers_on_the_whole_host_still_get_their_slices(
    pytester: pytest.Pytester, detected_host: Path, lock_dir: Path
) -> None:
    pytester.makepyfile(
        """
        import os

        def test_slice(neuron_cores):
            assert os.environ["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
            assert len(neuron_cores.cores) == 4
        """
    )
    result = pytester.runpytest_subprocess(*BASE_ARGS, "-n", "2", f"--neuron-lock-dir={lock_dir}", timeout=60)
    assert_outcomes(result, passed=1)
