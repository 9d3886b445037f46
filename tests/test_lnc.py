"""Per-test LNC: ``@pytest.mark.neuron(2, lnc=2)`` and ``--neuron-lnc``.

The window is placed in that LNC's numbering and locked by the physical cores it covers, so an
LNC=1 and an LNC=2 test never share a physical core; the test's environment carries
NEURON_LOGICAL_NC_CONFIG, and the fixture has both the logical and the physical cores.  The real
runs use the fake runtime, which numbers a process's cores at its NEURON_LOGICAL_NC_CONFIG.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, assert_outcomes
from e2e_helpers import assert_no_runtime_conflict, assert_runtime_log_clean

from pytest_neuron.core.lnc import check_host_lnc, lnc_problem, topology_at_lnc
from pytest_neuron.core.marker import MarkerError, parse_marker
from pytest_neuron.core.topology import Topology, TopologyError, identity_topology

if TYPE_CHECKING:
    from pathlib import Path

NODE = "test_x.py::test_c"


@pytest.mark.parametrize(
    ("pool", "pool_lnc", "lnc", "cores", "physical"),
    [
        ((0, 1, 2, 3, 4, 5, 6, 7), 1, 2, (0, 1, 2, 3), {0: (0, 1), 3: (6, 7)}),
        ((0, 1, 2, 3), 2, 1, (0, 1, 2, 3, 4, 5, 6, 7), {0: (0,), 7: (7,)}),
        ((1, 2, 3, 4), 1, 2, (1,), {1: (2, 3)}),  # physical 1 and 4 have no partner
        ((2, 3), 2, 2, (2, 3), {2: (4, 5)}),
    ],
)
def test_topology_at_lnc(
    pool: tuple[int, ...],
    pool_lnc: int,
    lnc: int,
    cores: tuple[int, ...],
    physical: dict[int, tuple[int, ...]],
) -> None:
    topo = topology_at_lnc(identity_topology(pool, "--neuron-cores", lnc=pool_lnc), lnc)
    assert topo.cores == cores
    assert topo.lnc == lnc
    assert all(topo.physical[c] == p for c, p in physical.items())
    assert set(topo.physical_cores(topo.cores)) <= {
        p for c in pool for p in range(c * pool_lnc, (c + 1) * pool_lnc)
    }


def test_a_pool_with_no_whole_core_at_that_lnc_is_one_error() -> None:
    with pytest.raises(TopologyError, match=r"has no whole core at lnc=2"):
        topology_at_lnc(identity_topology((3,), "--neuron-cores=3"), 2)


def test_a_host_that_cannot_do_lnc_2() -> None:
    trn1 = Topology((0, 1), {0: (0,), 1: (1,)}, "neuron-ls", instance_type="trn1.32xlarge")
    with pytest.raises(TopologyError) as info:
        check_host_lnc(trn1, 2, NODE)
    assert str(info.value) == (
        f"{NODE}: lnc=2 is not possible on trn1.32xlarge: only trn2, trn2u, trn3 instances have a "
        "logical NeuronCore config of 2"
    )
    check_host_lnc(trn1, 1, NODE)
    check_host_lnc(Topology((0,), {0: (0, 1)}, "x", lnc=2, instance_type="trn2.48xlarge"), 1, NODE)


def test_worker_scope_refuses_another_lnc_than_the_pools() -> None:
    pool = identity_topology(tuple(range(8)), "--neuron-cores=0-7")
    assert lnc_problem(pool, 1, "worker", NODE) is None
    message = lnc_problem(pool, 2, "worker", NODE)
    assert message is not None
    assert "per-test LNC needs --neuron-scope=test" in message
    assert lnc_problem(pool, 2, "test", NODE) is None


@pytest.mark.parametrize(
    ("kwargs", "params", "message"),
    [
        (
            {"lnc": 3},
            None,
            "invalid value 3 from @pytest.mark.neuron on test_x.py::test_c (lnc=): expected a logical",
        ),
        ({"lnc": "lnc"}, {"lnc": 4}, "invalid value 4 from"),
        ({"lnc": "lnc"}, None, "lnc='lnc' names a parameter, but this test is not parametrized"),
        ({"cores": 5, "lnc": 2}, None, "cores=5 is more than the pool's 4 cores at lnc=2"),
    ],
)
def test_bad_lnc_marker(kwargs: dict[str, object], params: dict[str, object] | None, message: str) -> None:
    with pytest.raises(MarkerError) as info:
        parse_marker((), kwargs, nodeid=NODE, pool_size=8, params=params)
    assert message in str(info.value)


def test_lnc_from_a_parameter() -> None:
    request = parse_marker(
        (), {"cores": "ranks", "lnc": "lnc"}, nodeid=NODE, pool_size=8, params={"ranks": 2, "lnc": 2}
    )
    assert (request.cores, request.settings["lnc"]) == (2, 2)
    # 8 logical cores at LNC=1 in a pool numbered at LNC=2 (4 cores, 8 physical)
    assert parse_marker((8,), {"lnc": 1}, nodeid=NODE, pool_size=4, pool_lnc=2).cores == 8


COLLECTIVES = """
import json, os, subprocess, sys, time
import pytest

RANK = "from pytest_neuron.testing import init_runtime; import json, time; r = init_runtime(); " \\
       "print(json.dumps([r.cores, r.physical])); time.sleep(0.3)"

@pytest.mark.parametrize(("ranks", "lnc"), [(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (2, 2), (1, 2), (2, 1)])
@pytest.mark.neuron(cores="ranks", lnc="lnc")
def test_collective(ranks, lnc, neuron_cores):
    assert os.environ["NEURON_LOGICAL_NC_CONFIG"] == str(lnc) == neuron_cores.env["NEURON_LOGICAL_NC_CONFIG"]
    assert neuron_cores.lnc == lnc and len(neuron_cores.cores) == ranks
    cover = tuple(p for c in neuron_cores.cores for p in range(c * lnc, c * lnc + lnc))
    assert neuron_cores.physical == cover
    out = subprocess.run([sys.executable, "-c", RANK], env={**os.environ, **neuron_cores.env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cores, physical = json.loads(out.stdout)
    assert tuple(cores) == neuron_cores.cores and tuple(physical) == neuron_cores.physical
    with open(os.environ["RECORDS"], "a") as f:
        f.write(json.dumps({"test": os.environ["PYTEST_CURRENT_TEST"], "physical": physical}) + "\\n")
"""


@pytest.mark.parametrize("workers", ["2", "3"])
def test_lnc_1_and_lnc_2_tests_share_a_run_without_sharing_a_physical_core(
    pytester: pytest.Pytester,
    fake_host: Path,
    lock_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
) -> None:
    records = pytester.path / "records.jsonl"
    monkeypatch.setenv("RECORDS", str(records))
    pytester.makepyfile(test_collectives=COLLECTIVES)
    result = pytester.runpytest_subprocess(
        *BASE_ARGS,
        "-n",
        workers,
        "--neuron-cores=0-7",
        "--neuron-scope=test",
        f"--neuron-lock-dir={lock_dir}",
        timeout=120,
    )
    assert_outcomes(result, passed=8)
    assert_no_runtime_conflict(result)
    seen = [json.loads(line)["physical"] for line in records.read_text().splitlines()]
    assert len(seen) == 8
    assert sorted(len(p) for p in seen) == [1, 2, 2, 2, 2, 4, 4, 4]
    assert_runtime_log_clean(fake_host)  # the fake runtime: no physical core had two holders at once


def test_run_default_and_worker_scope(pytester: pytest.Pytester, lock_dir: Path, fake_host: Path) -> None:
    pytester.makepyfile(
        """
        import os
        import pytest

        def test_default(neuron_cores):
            assert neuron_cores.lnc == 2 and os.environ["NEURON_LOGICAL_NC_CONFIG"] == "2"
            assert len(neuron_cores.physical) == 2 * len(neuron_cores.cores)

        @pytest.mark.neuron(lnc=1)
        def test_marker_wins(neuron_cores):
            assert neuron_cores.lnc == 1 and os.environ["NEURON_LOGICAL_NC_CONFIG"] == "1"
        """
    )
    args = ["--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}", "--neuron-lnc=2"]
    result = pytester.runpytest_subprocess(*BASE_ARGS, "--neuron-scope=test", *args, timeout=60)
    assert_outcomes(result, passed=2)
    # worker scope: the run-wide default is one usage error; a marker's lnc fails only its test
    result = pytester.runpytest_subprocess(*BASE_ARGS, *args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line][-1] == (
        "ERROR: lnc 2 from --neuron-lnc differs from the pool's LNC=1 (--neuron-cores=0-7), and in worker "
        "scope every test runs on its worker's slice as numbered there; per-test LNC needs "
        "--neuron-scope=test, or set NEURON_LOGICAL_NC_CONFIG=2 so the pool itself is numbered at LNC=2"
    )
    result = pytester.runpytest_subprocess(*BASE_ARGS, *args[:2], "-k", "marker", timeout=60)
    assert_outcomes(result, passed=1)
    pytester.makepyfile(
        test_worker="""
        import pytest

        @pytest.mark.neuron(lnc=2)
        def test_other_lnc(neuron_cores):
            pass
        """
    )
    result = pytester.runpytest_subprocess(*BASE_ARGS, *args[:2], "test_worker.py", timeout=60)
    assert_outcomes(result, errors=1)
    assert "test_other_lnc runs at lnc=2 but its worker's cores are numbered at LNC=1" in result.stdout.str()
