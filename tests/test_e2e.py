"""End to end: real ``pytest`` sessions on a simulated 32-core pool, against the fake Neuron runtime.

Each scenario runs one or more ``python -m pytest`` subprocesses (their own process groups, killed on
failure) whose tests start the fake runtime (pytest_neuron.testing) in-process, in a forked child or in
a subprocess, exactly as the real runtime would be started: any core handed to two processes at once
fails that test with "NeuronCore(s) not available".  Then every scenario checks, independently of
the plugin:

* the exact outcome counts, and that no worker crashed unless the scenario crashes one;
* no RuntimeBusyError anywhere, and no two reservations of one core at one time in the fake
  runtime's log (``check_log``), with exactly the reservations the tests made;
* no overlap in what the tests themselves saw (NEURON_RT_VISIBLE_CORES, start, end);
* that every core can be leased again at once, and the fake runtime started on 0-31.

Scenarios (issue 5): 1 worker scope -n 8; 2 test scope -n 8 with 1..32-core requests in
subprocesses; 3 test scope with --forked; 4 three concurrent runs on one lock directory; 5 faults (a
SIGKILLed worker, a SIGKILLed controller, pytest-timeout's thread method).  Scenario 6, bad input, is
tests/test_bad_input.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from itertools import combinations

import pytest
from conftest import assert_outcomes
from e2e_helpers import (  # noqa: F401  (fixtures: pytest finds them imported)
    POOL,
    POOL_SIZE,
    Scenario,
    assert_disjoint_slices,
    assert_every_core_free,
    assert_no_overlap_in_time,
    assert_no_runtime_conflict,
    assert_runtime_log_clean,
    contiguous,
    cores_of,
    gone,
    procs_fixture,
    scenario_fixture,
    text_of,
    wait_for,
    worker_slices,
)

pytestmark = pytest.mark.usefixtures("neuron_env")

#: The most seconds the workers of a SIGKILLed controller may outlive it (watchdog: 0.5 s polls,
#: 2 s grace for the children's SIGTERM), with room for a loaded 2-core machine.
ORPHAN_DEADLINE = 8.0


def finish(scenario: Scenario, result: pytest.RunResult, *, reservations: int) -> None:
    """The checks every scenario ends with, after its own."""
    assert_no_runtime_conflict(result)
    assert_runtime_log_clean(scenario.fake, reservations=reservations)
    assert_every_core_free(scenario.lock_dir, scenario.fake)


# -- 1. worker scope ----------------------------------------------------------------------------
WORKER_SCOPE_TESTS = """
import os, time
import pytest
from pytest_neuron.testing import init_runtime

@pytest.mark.parametrize("i", range(16))
def test_slice(i, neuron_cores):
    runtime = init_runtime()  # in the worker, as torch-neuronx would: it keeps these cores for its life
    assert runtime.visible_cores == os.environ["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
    assert runtime.local_ids == (0, 1, 2, 3)
    time.sleep(0.05)
"""


@pytest.mark.slow
def test_1_worker_scope_eight_workers_initialise_the_runtime_in_process(scenario: Scenario) -> None:
    checkout = scenario.checkout("suite", {"test_slices.py": WORKER_SCOPE_TESTS})
    result = scenario.run(checkout, "-n", "8")
    assert_outcomes(result, passed=16)
    slices = worker_slices(result)
    assert sorted(slices) == [f"gw{i}" for i in range(8)], slices
    assert_disjoint_slices(slices, 4)
    assert frozenset().union(*slices.values()) == frozenset(range(POOL_SIZE))
    recs = scenario.read_records()
    assert len(recs) == 16
    pids: dict[int, str] = {}
    for rec in recs:
        assert cores_of(rec["visible"]) == slices[rec["worker"]], rec
        assert pids.setdefault(rec["pid"], rec["worker"]) == rec["worker"], rec  # one process per worker
    assert_no_overlap_in_time(recs)
    finish(scenario, result, reservations=len(pids))  # one runtime per worker process, held to its exit


# -- 2. test scope, the runtime in subprocesses --------------------------------------------------
TEST_SCOPE_SIZES = (1, 2, 4, 8, 32, 1, 2, 4)
TEST_SCOPE_TESTS = f"""
import os
import pytest
from e2e_inner import runtime_in_subprocess

@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.neuron(n)) for n in {TEST_SCOPE_SIZES}])
def test_window(n, neuron_cores):
    assert len(neuron_cores.cores) == n
    assert os.environ["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
    runtime_in_subprocess(neuron_cores.env, seconds=0.1)
"""


@pytest.mark.slow
def test_2_test_scope_windows_of_1_to_32_cores_in_subprocesses(scenario: Scenario) -> None:
    checkout = scenario.checkout("suite", {"test_windows.py": TEST_SCOPE_TESTS})
    result = scenario.run(checkout, "-n", "8", "--neuron-scope=test")
    assert_outcomes(result, passed=len(TEST_SCOPE_SIZES))
    result.stdout.fnmatch_lines(
        [f"{len(TEST_SCOPE_SIZES)} tests leased cores; waited *s for cores over * lease requests"]
    )
    recs = scenario.read_records()
    windows = [cores_of(rec["visible"]) for rec in recs]
    assert sorted(map(len, windows)) == sorted(TEST_SCOPE_SIZES), recs
    assert all(contiguous(w) and min(w) % len(w) == 0 for w in windows), recs  # contiguous, aligned
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for a, b in combinations(recs, 2))
    assert_no_overlap_in_time(recs)
    assert assert_runtime_log_clean(scenario.fake).max_cores_held == POOL_SIZE  # the 32-core test ran
    finish(scenario, result, reservations=len(TEST_SCOPE_SIZES))


# -- 3. test scope with --forked ----------------------------------------------------------------
FORKED_SIZES = (1, 2, 4, 8, 32, 4, 2, 1)
FORKED_TESTS = f"""
import os, time
import pytest
from pytest_neuron.testing import init_runtime

WORKER_PID = os.getpid()  # imported in the worker, before any fork

@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.neuron(n)) for n in {FORKED_SIZES}])
def test_forked(n, neuron_cores):
    assert os.getpid() != WORKER_PID  # pytest-forked's child
    runtime = init_runtime()  # in the forked child: its exit frees the cores
    assert runtime.cores == neuron_cores.cores
    assert len(runtime.cores) == n
    time.sleep(0.05)
"""


@pytest.mark.slow
@pytest.mark.skipif(
    tuple(int(p) for p in pytest.__version__.split(".")[:2]) >= (9, 2),
    reason="pytest-forked 1.7.5 fails every forked test on pytest 9.2 (a marshal error on the report)",
)
def test_3_forked_tests_initialise_the_runtime_in_the_child(scenario: Scenario) -> None:
    checkout = scenario.checkout("suite", {"test_forked.py": FORKED_TESTS})
    result = scenario.run(checkout, "-n", "4", "--forked", "--neuron-scope=test")
    assert_outcomes(result, passed=len(FORKED_SIZES))
    assert "NeuronWarning" not in text_of(result)  # no worker pinned cores: the children held them
    recs = scenario.read_records()
    assert sorted(len(cores_of(rec["visible"])) for rec in recs) == sorted(FORKED_SIZES)
    assert len({rec["pid"] for rec in recs}) == len(FORKED_SIZES)  # one child per test
    assert_no_overlap_in_time(recs)
    # a forked child ends with os._exit: its reservation is ended by the next holder of its cores
    finish(scenario, result, reservations=len(FORKED_SIZES))


# -- 4. three runs at once on one lock directory ------------------------------------------------
CONCURRENT_SIZES = (1, 2, 1, 2, 1, 2)
CONCURRENT_TESTS = f"""
import os, time
import pytest
from pytest_neuron.testing import init_runtime
from e2e_inner import barrier, runtime_in_subprocess

ME, SCOPE = os.environ["E2E_RUN"], os.environ["E2E_SCOPE"]

@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.neuron(n)) for n in {CONCURRENT_SIZES}])
def test_work(n, neuron_cores):
    if SCOPE == "worker":
        runtime = init_runtime()
        assert runtime.visible_cores == neuron_cores.visible_cores
        assert len(runtime.cores) == 4
    else:
        assert len(neuron_cores.cores) == n
        runtime_in_subprocess(neuron_cores.env, seconds=0.05)
    barrier(ME, ("alpha", "beta", "gamma"))  # all three runs hold cores at once
    time.sleep(0.1)
"""
RUNS = {
    "alpha": ("worker", ["-n", "2", "--neuron-cores-per-worker=4"]),
    "beta": ("worker", ["-n", "2", "--neuron-cores-per-worker=4"]),
    "gamma": ("test", ["-n", "4", "--neuron-scope=test"]),
}


@pytest.mark.slow
def test_4_three_concurrent_runs_share_one_lock_directory(scenario: Scenario) -> None:
    started = {
        name: scenario.start(
            scenario.checkout(name, {"test_suite.py": CONCURRENT_TESTS}), *args, E2E_RUN=name, E2E_SCOPE=scope
        )
        for name, (scope, args) in RUNS.items()
    }
    results = {name: scenario.procs.finish(proc) for name, proc in started.items()}
    for result in results.values():
        assert_outcomes(result, passed=len(CONCURRENT_SIZES))
        assert_no_runtime_conflict(result)
    slices = {f"{name}/{w}": c for name in ("alpha", "beta") for w, c in worker_slices(results[name]).items()}
    assert len(slices) == 4
    assert_disjoint_slices(slices, 4)  # across both worker-scope runs
    recs = scenario.read_records()
    assert len(recs) == 3 * len(CONCURRENT_SIZES)
    spans = {
        name: (
            min(r["start"] for r in recs if r["run"] == name),
            max(r["end"] for r in recs if r["run"] == name),
        )
        for name in RUNS
    }
    for a, b in combinations(spans.values(), 2):
        assert a[0] < b[1], spans  # the runs really ran at once
        assert b[0] < a[1], spans
    for rec in recs:
        if rec["run"] != "gamma":
            assert cores_of(rec["visible"]) == slices[f"{rec['run']}/{rec['worker']}"], rec
    assert_no_overlap_in_time(recs)
    worker_pids = {rec["pid"] for rec in recs if rec["run"] != "gamma"}
    assert_runtime_log_clean(scenario.fake, reservations=len(worker_pids) + len(CONCURRENT_SIZES))
    assert_every_core_free(scenario.lock_dir, scenario.fake)


# -- 5a. a worker SIGKILLed mid-test ------------------------------------------------------------
KILLED_WORKER_TESTS = """
import os, signal, time
import pytest
from pytest_neuron.testing import init_runtime
from e2e_inner import flag

def test_0_killed(neuron_cores):
    init_runtime()
    if not os.path.exists(flag("killed")):  # once: a rerun would pass
        with open(flag("killed"), "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)

@pytest.mark.parametrize("i", range(12))
def test_after(i, neuron_cores):
    runtime = init_runtime()
    assert runtime.visible_cores == neuron_cores.visible_cores
    time.sleep(0.1)
"""


@pytest.mark.slow
def test_5a_a_sigkilled_worker_is_replaced_and_its_replacement_gets_a_slice(scenario: Scenario) -> None:
    checkout = scenario.checkout("suite", {"test_killed.py": KILLED_WORKER_TESTS})
    result = scenario.run(checkout, "-n", "2")
    assert_outcomes(result, crashed=True, passed=12, failed=1)
    crash = re.search(r"worker '(gw[01])' crashed while running '\S+::test_0_killed'", result.stdout.str())
    assert crash is not None, text_of(result)
    survivor = "gw1" if crash.group(1) == "gw0" else "gw0"
    killed_pid = int((scenario.flags / "killed").read_text())
    slices = worker_slices(result)
    assert "gw2" in slices, slices  # the replacement leased a slice of its own...
    assert_disjoint_slices({w: slices[w] for w in (survivor, "gw2")}, 16)  # ...beside the survivor
    recs = scenario.read_records()
    assert {rec["worker"] for rec in recs} <= {survivor, "gw2"}
    for rec in recs:
        assert cores_of(rec["visible"]) == slices[rec["worker"]], rec
    assert_no_overlap_in_time(recs)
    finish(scenario, result, reservations=len({rec["pid"] for rec in recs} | {killed_pid}))


# -- 5b. the controller SIGKILLed mid-run --------------------------------------------------------
ORPHAN_TESTS = """
import os, subprocess, sys, time
import pytest
from e2e_inner import write_json

@pytest.mark.parametrize("i", range(2))
def test_long(i, neuron_cores):
    child = subprocess.Popen(  # a child that holds the worker's cores in the runtime
        [sys.executable, "-m", "pytest_neuron.testing", "run", "--seconds", "60", "--cores-env-only"],
        stdout=subprocess.PIPE, text=True,
    )
    line = child.stdout.readline()
    assert "holds cores " + neuron_cores.visible_cores + " " in line, line
    write_json(os.environ["PYTEST_XDIST_WORKER"] + ".json", {"worker": os.getpid(), "child": child.pid})
    time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["worker", "test"])
def test_5b_workers_of_a_sigkilled_controller_exit_with_their_children(
    scenario: Scenario, scope: str
) -> None:
    checkout = scenario.checkout("suite", {"test_long.py": ORPHAN_TESTS})
    controller = scenario.start(checkout, "-n", "2", f"--neuron-scope={scope}")
    running = [scenario.flags / f"gw{i}.json" for i in range(2)]
    wait_for(lambda: all(path.exists() for path in running), 45, "both workers to start their long test")
    pids = {role: [json.loads(path.read_text())[role] for path in running] for role in ("worker", "child")}
    assert not any(gone(pid) for pid in pids["worker"] + pids["child"])
    os.kill(controller.pid, signal.SIGKILL)
    orphaned = time.monotonic()
    assert controller.wait(timeout=10) == -signal.SIGKILL
    left = wait_for(
        lambda: all(gone(pid) for pid in pids["worker"] + pids["child"]),
        ORPHAN_DEADLINE,
        f"the orphaned workers {pids['worker']} and their children {pids['child']} to exit",
    )
    print(f"orphaned workers and children gone {left:.2f}s after the controller was killed")
    assert time.monotonic() - orphaned < ORPHAN_DEADLINE
    # the children were stopped with SIGTERM first, so they ended their reservations themselves
    summary = assert_runtime_log_clean(scenario.fake, reservations=2)
    assert summary.open == 0, summary
    assert_every_core_free(scenario.lock_dir, scenario.fake)


# -- 5c. a test killed by pytest-timeout's thread method -------------------------------------------
TIMEOUT_TESTS = """
import os, time
import pytest
from pytest_neuron.testing import init_runtime
from e2e_inner import flag, runtime_in_subprocess

SCOPE = os.environ["E2E_SCOPE"]

@pytest.mark.neuron(4)
@pytest.mark.timeout(1, method="thread")
def test_0_hangs(neuron_cores):
    init_runtime()  # in-process: pinned until the process exits
    with open(flag("hung"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(30)

@pytest.mark.neuron(2)
@pytest.mark.parametrize("i", range(6))
def test_after(i, neuron_cores):
    if SCOPE == "worker":
        assert init_runtime().visible_cores == neuron_cores.visible_cores
    else:
        runtime_in_subprocess(neuron_cores.env, seconds=0.05)
"""

NEXT_RUN_TESTS = f"""
from pytest_neuron.testing import init_runtime

def test_every_core(neuron_cores):
    assert neuron_cores.visible_cores == {POOL!r}
    assert init_runtime().visible_cores == {POOL!r}
"""


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["test", "worker"])
def test_5c_a_test_killed_by_pytest_timeout_leaves_no_lease(scenario: Scenario, scope: str) -> None:
    checkout = scenario.checkout("suite", {"test_hangs.py": TIMEOUT_TESTS})
    result = scenario.run(checkout, "-n", "2", f"--neuron-scope={scope}", E2E_SCOPE=scope)
    assert_outcomes(result, crashed=True, passed=6, failed=1)
    assert re.search(r"worker '?gw[01]'? crashed while running '\S+::test_0_hangs'", text_of(result))
    assert result.duration < 20, result.duration  # killed by the 1 s timeout, not after its 30 s sleep
    hung_pid = int((scenario.flags / "hung").read_text())
    assert gone(hung_pid)
    assert_no_runtime_conflict(result)
    recs = scenario.read_records()
    assert len(recs) == 6
    assert_no_overlap_in_time(recs)
    made = len({rec["pid"] for rec in recs} | {hung_pid}) if scope == "worker" else 6 + 1
    assert_runtime_log_clean(scenario.fake, reservations=made)
    # the next run gets every core within seconds, the runtime's included
    following = scenario.checkout("next", {"test_next.py": NEXT_RUN_TESTS})
    started = time.monotonic()
    nxt = scenario.run(following, "--neuron-wait-timeout=5")
    assert_outcomes(nxt, passed=1)
    assert time.monotonic() - started < 15, nxt.duration
    nxt.stdout.fnmatch_lines([f"this process held cores {POOL}"])
    assert_every_core_free(scenario.lock_dir, scenario.fake)
