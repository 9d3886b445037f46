"""Real ``pytest -n N`` runs on a simulated 8-core pool, checked from what the tests themselves saw.

Each inner test appends one JSON line (pid, xdist worker, NEURON_RT_VISIBLE_CORES, start and end on the
system-wide monotonic clock) to a shared log; the checks here rebuild who held which cores when from that
log alone.  Where a test starts the fake Neuron runtime (pytest_neuron.testing), the runtime's own
reservation log is checked too: it fails loudly ("NeuronCore(s) not available") if two processes ever ask
for one core, as the real runtime does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from itertools import combinations
from typing import TYPE_CHECKING, Any

import pytest
from conftest import BASE_ARGS, MARKED_FIXTURE_PLAIN, assert_outcomes
from e2e_helpers import contiguous, cores_of, read_records

from pytest_neuron.core.topology import identity_topology
from pytest_neuron.locks.lease import LeaseManager
from pytest_neuron.testing import check_log, summarize_log

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("neuron_env")

TIMEOUT = 90.0
RECORD_ENV = "PLUGIN_TEST_RECORD"

RECORDING_CONFTEST = f"""
import json, os, time
import pytest

AT_IMPORT = os.environ.get("NEURON_RT_VISIBLE_CORES")

def record(**fields):
    line = {{"pid": os.getpid(), "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
             "visible": os.environ.get("NEURON_RT_VISIBLE_CORES"), "at_import": AT_IMPORT, **fields}}
    fd = os.open(os.environ[{RECORD_ENV!r}], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\\n").encode())
    finally:
        os.close(fd)

@pytest.fixture(autouse=True)
def _record(request):
    start = time.monotonic()
    yield
    record(test=request.node.nodeid, start=start, end=time.monotonic())
"""


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The shared log every inner test appends to."""
    path = tmp_path / "records.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(path))
    return path


def assert_no_overlap_in_time(recs: list[dict[str, Any]]) -> None:
    """No two tests of different processes that ran at the same time saw a common core."""
    for a, b in combinations(recs, 2):
        if a["pid"] != b["pid"] and a["start"] < b["end"] and b["start"] < a["end"]:
            shared = cores_of(a["visible"]) & cores_of(b["visible"])
            assert not shared, f"{a} and {b} ran at once on cores {sorted(shared)}"


def assert_fake_runtime_clean(fake: Path, at_least: int) -> None:
    assert check_log(fake) == []
    assert summarize_log(fake).reservations >= at_least


def worker_slices(result: pytest.RunResult) -> dict[str, frozenset[int]]:
    """The "cores per worker" line of the terminal summary, parsed."""
    lines = [line for line in result.outlines if line.startswith("cores per worker: ")]
    assert len(lines) == 1, result.outlines
    pairs = (entry.split(" ") for entry in lines[0].removeprefix("cores per worker: ").split(", "))
    return {worker: cores_of(cores) for worker, cores in pairs}


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*BASE_ARGS, *args, timeout=TIMEOUT)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


# -- worker scope -------------------------------------------------------------------------------
SLICE_TESTS = """
import os, time
import pytest
from pytest_neuron.testing import init_runtime

@pytest.mark.parametrize("i", range({n}))
def test_slice(i):
    runtime = init_runtime()  # in the worker process, as torch-neuronx would
    assert runtime.visible_cores == os.environ["NEURON_RT_VISIBLE_CORES"]
    time.sleep({sleep})
"""


def test_four_workers_get_disjoint_slices(
    pytester: pytest.Pytester, lock_dir: Path, fake_host: Path, records: Path
) -> None:
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makepyfile(SLICE_TESTS.format(n=12, sleep=0.1))
    result = run(pytester, "-n", "4", "--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}")
    assert_outcomes(result, passed=12)
    slices = worker_slices(result)
    assert sorted(slices) == ["gw0", "gw1", "gw2", "gw3"]
    assert all(len(cores) == 2 and contiguous(cores) and min(cores) % 2 == 0 for cores in slices.values())
    assert frozenset().union(*slices.values()) == frozenset(range(8))  # pairwise disjoint: 4 x 2 = 8
    seen: dict[int, set[str]] = {}
    for rec in read_records(records):
        seen.setdefault(rec["pid"], set()).add(rec["visible"])
        assert cores_of(rec["visible"]) == slices[rec["worker"]], rec
        assert rec["at_import"] == rec["visible"], rec  # exported before conftest.py was imported
    assert all(len(visible) == 1 for visible in seen.values()), seen  # one slice per worker, for its life
    for a, b in combinations([cores_of(v.pop()) for v in seen.values()], 2):
        assert not a & b
    assert_fake_runtime_clean(fake_host, at_least=len(seen))


CRASH_TESTS = """
import os, time
import pytest
from pytest_neuron.testing import init_runtime

def test_0_crash():
    flag = os.path.join(os.path.dirname(os.environ["PLUGIN_TEST_RECORD"]), "crashed")
    init_runtime()
    if not os.path.exists(flag):
        open(flag, "w").close()
        os._exit(1)

@pytest.mark.parametrize("i", range(16))
def test_after(i):
    init_runtime()
    time.sleep(0.15)
"""


@pytest.mark.slow
def test_a_crashed_worker_is_replaced_and_its_replacement_gets_a_slice(
    pytester: pytest.Pytester, lock_dir: Path, fake_host: Path, records: Path
) -> None:
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makepyfile(CRASH_TESTS)
    result = run(
        pytester, "-n", "2", "--max-worker-restart=1", "--neuron-cores=0-3", f"--neuron-lock-dir={lock_dir}"
    )
    assert_outcomes(result, crashed=True, passed=16, failed=1)
    crash = re.search(r"worker '(gw[01])' crashed while running '\S+::test_0_crash'", result.stdout.str())
    assert crash is not None, result.stdout.str()
    survivor = "gw1" if crash.group(1) == "gw0" else "gw0"
    slices = worker_slices(result)
    assert "gw2" in slices, slices  # the replacement leased a slice of its own...
    assert slices["gw2"] in (frozenset({0, 1}), frozenset({2, 3}))
    assert not slices["gw2"] & slices[survivor]  # ...beside the worker that lived on
    recs = read_records(records)
    assert {rec["worker"] for rec in recs} <= {survivor, "gw2"}
    for rec in recs:
        assert cores_of(rec["visible"]) == slices[rec["worker"]], rec
        assert rec["at_import"] == rec["visible"], rec
    assert_no_overlap_in_time(recs)
    assert_fake_runtime_clean(fake_host, at_least=2)


def test_a_run_that_cannot_reserve_its_cores_ends_with_one_error_before_any_worker(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    pytester.makepyfile(MARKED_FIXTURE_PLAIN)
    pool = identity_topology(frozenset(range(4)), "--neuron-cores")
    manager = LeaseManager(lock_dir, pool)
    lease = manager.acquire(4, timeout=5, worker="the-test-that-holds-everything")
    try:
        result = run(
            pytester,
            "-n",
            "2",
            "--neuron-cores=0-3",
            "--neuron-wait-timeout=0.3",
            f"--neuron-lock-dir={lock_dir}",
        )
    finally:
        manager.release(lease)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = "\n".join(result.outlines + result.errlines)
    for absent in ("[gw", "Traceback", "INTERNALERROR"):
        assert absent not in text, text
    held_by = f"cores 0-3 held by pid {os.getpid()} "
    errors = [line for line in result.errlines if line.startswith("ERROR: ")]
    assert len(errors) == 1, text
    assert "this run (2 workers x 2 cores) gave up after" in errors[0], errors
    for part in (held_by, "the-test-that-holds-everything", "--neuron-wait-timeout", "pytest-neuron status"):
        assert part in errors[0], errors


@pytest.mark.parametrize(
    ("args", "workers", "slice_size"),
    [
        ([], min(8, cpu_count()), 8 // min(8, cpu_count())),
        (["--neuron-cores-per-worker=8"], 1, 8),
    ],
)
def test_n_auto_starts_as_many_workers_as_slices_fit_at_most_the_cpus(
    pytester: pytest.Pytester, lock_dir: Path, args: list[str], workers: int, slice_size: int
) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = run(pytester, "-n", "auto", "--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}", *args)
    assert_outcomes(result, passed=1)
    slices = worker_slices(result)
    assert sorted(slices) == [f"gw{i}" for i in range(workers)], slices
    assert all(len(cores) == slice_size for cores in slices.values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-n", "3", "--neuron-cores-per-worker=4"],
            "3 workers need 3 slices of 4 cores, but pool 0-7 (--neuron-cores=0-7) holds only 2; use -n 2 "
            "(or -n auto), or a smaller --neuron-cores-per-worker",
        ),
        (
            ["-n", "9"],
            # a smaller slice than 1 core is impossible: not suggested
            "9 workers need 9 slices of 1 core, but pool 0-7 (--neuron-cores=0-7) holds only 8; use -n 8 "
            "(or -n auto)\n",
        ),
        (
            ["-n", "2", "--neuron-cores-per-worker=9"],
            "invalid value '9' from --neuron-cores-per-worker: more than the 8 cores",
        ),
    ],
)
def test_more_workers_than_slices_is_a_usage_error(
    pytester: pytest.Pytester, lock_dir: Path, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = run(pytester, "--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = "\n".join(result.outlines + result.errlines)
    assert "Traceback" not in text
    assert "[gw" not in text  # no worker was started
    lines = [line for line in result.errlines if line.strip()]
    assert len(lines) == 1, text
    assert (lines[0] + "\n").startswith(f"ERROR: {message}"), text


# -- test scope ---------------------------------------------------------------------------------
TEST_SCOPE_TESTS = """
import os, subprocess, sys, time
import pytest

SIZES = [1, 2, 4, 8, 1, 2, 1, 2]

@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.neuron(n)) for n in SIZES])
def test_window(n, neuron_cores):
    assert len(neuron_cores.cores) == n
    # a subprocess starts the runtime, as torchrun or a CLI would: it fails if any core is taken
    out = subprocess.run(
        [sys.executable, "-m", "pytest_neuron.testing", "run", "--seconds", "0.05", "--cores-env-only"],
        env={**os.environ, **neuron_cores.env}, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "holds cores " + neuron_cores.visible_cores in out.stdout
"""


@pytest.mark.slow
def test_test_scope_windows_never_overlap(
    pytester: pytest.Pytester, lock_dir: Path, fake_host: Path, records: Path
) -> None:
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makepyfile(TEST_SCOPE_TESTS)
    result = run(
        pytester, "-n", "3", "--neuron-scope=test", "--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}"
    )
    assert_outcomes(result, passed=8)
    recs = read_records(records)
    assert len(recs) == 8
    for rec in recs:
        cores = cores_of(rec["visible"])
        assert contiguous(cores), rec
        assert min(cores) % len(cores) == 0, rec  # a contiguous, aligned window
    assert any(  # tests did run at the same time...
        a["start"] < b["end"] and b["start"] < a["end"] for a, b in combinations(recs, 2)
    )
    assert_no_overlap_in_time(recs)  # ...never on a common core
    assert_fake_runtime_clean(fake_host, at_least=8)
    result.stdout.fnmatch_lines(["8 tests leased cores; waited *s for cores over * lease requests"])


FORKED_TESTS = """
import os
import pytest
from pytest_neuron.testing import init_runtime

SIZES = [1, 2, 4, 8, 2, 1, 4, 8]

@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.neuron(n)) for n in SIZES])
def test_forked(n, neuron_cores):
    runtime = init_runtime()  # in the forked child: its exit frees the cores
    assert runtime.cores == neuron_cores.cores
    assert len(runtime.cores) == n
"""


@pytest.mark.skipif(
    tuple(int(p) for p in pytest.__version__.split(".")[:2]) >= (9, 2),
    reason="pytest-forked 1.7.5 fails every forked test on pytest 9.2 (a marshal error on the report)",
)
def test_forked_tests_initialise_the_runtime_in_process(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lock_dir: Path, fake_host: Path, records: Path
) -> None:
    monkeypatch.setenv("PYTEST_NEURON_DEVICE_PREFIX", str(fake_host / "dev" / "neuron"))
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makepyfile(FORKED_TESTS)
    result = run(
        pytester,
        "-n",
        "2",
        "--forked",
        "--neuron-scope=test",
        "--neuron-cores=0-7",
        f"--neuron-lock-dir={lock_dir}",
    )
    assert_outcomes(result, passed=8)
    assert "NeuronWarning" not in result.stdout.str()  # nothing is pinned in the workers themselves
    recs = read_records(records)
    assert len(recs) == 8
    assert_no_overlap_in_time(recs)
    assert_fake_runtime_clean(fake_host, at_least=8)


PINNED_TESTS = """
import os
import pytest
from pytest_neuron.testing import init_runtime

@pytest.mark.neuron(2)
def test_1_pins(neuron_cores):
    init_runtime()  # in the worker process itself: pins these cores until the worker exits
    assert init_runtime().visible_cores == neuron_cores.visible_cores

@pytest.mark.neuron(2)
def test_2_pins_again(neuron_cores):
    init_runtime()  # the same runtime: no second warning
    with open(os.environ["PLUGIN_TEST_RECORD"] + ".second", "w") as f:
        f.write(neuron_cores.visible_cores)

@pytest.mark.neuron(2)
def test_2b_after_the_runtime_was_initialised(neuron_cores):
    # the runtime kept test_1's cores: later tests that fit run on them, without a new lease
    with open(os.environ["PLUGIN_TEST_RECORD"] + ".third", "w") as f:
        f.write(neuron_cores.visible_cores)

@pytest.mark.neuron(4)
def test_3_whole_pool():
    pass
"""


def test_a_runtime_initialised_in_the_worker_pins_its_cores_until_the_worker_exits(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lock_dir: Path, fake_host: Path, records: Path
) -> None:
    monkeypatch.setenv("PYTEST_NEURON_DEVICE_PREFIX", str(fake_host / "dev" / "neuron"))
    pytester.makepyfile(test_pinned=PINNED_TESTS)
    result = run(
        pytester,
        "-n",
        "1",
        "--neuron-scope=test",
        "--neuron-order=collected",
        "--neuron-cores=0-3",
        "--neuron-wait-timeout=0.5",
        f"--neuron-lock-dir={lock_dir}",
    )
    # test_1 pinned 0-1: the tests that fit run on 0-1 without waiting for themselves; the whole pool
    # never comes free while the worker lives, so test_3 fails at once, naming test_1
    assert_outcomes(result, passed=3, errors=1, warnings=1)
    assert (records.parent / (records.name + ".second")).read_text() == "0-1"
    assert (records.parent / (records.name + ".third")).read_text() == "0-1"
    text = result.stdout.str()
    pin = "test_pinned.py::test_1_pins initialised the Neuron runtime in this process"
    assert text.count(pin) == 3, text  # the warnings summary, the neuron summary, test_3's error
    assert "test_2_pins_again initialised" not in text
    result.stdout.fnmatch_lines(
        ["*NeuronWarning: *::test_1_pins initialised the Neuron runtime*pins cores 0-1*"]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_3_whole_pool*",
            "*test_3_whole_pool needs 4 cores, but test_pinned.py::test_1_pins initialised the Neuron runtime"
            " in this process, which holds cores 0-1 until the process exits*--forked*",
        ]
    )
    assert "gave up after" not in text  # it never waited for itself
    # the worker has exited: every core is free again
    manager = LeaseManager(lock_dir, identity_topology(frozenset(range(4)), "--neuron-cores"))
    manager.release(manager.acquire(4, timeout=5))
    assert_fake_runtime_clean(fake_host, at_least=1)


TIMEOUT_TESTS = """
import os, time
import pytest

@pytest.mark.neuron(4)
@pytest.mark.timeout(30)
def test_holder():
    open(os.environ["HOLDING_FLAG"], "w").close()
    time.sleep(2)

@pytest.mark.neuron(4)
def test_waiter():
    pass
"""

GATE_CONFTEST = """
import os, time
import pytest

# Registered after pytest-neuron's session plugin, so this wrapper runs outside its lease: the waiter
# starts asking for cores only once the holder holds them.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item):
    if item.name == "test_waiter":
        deadline = time.monotonic() + 20
        while not os.path.exists(os.environ["HOLDING_FLAG"]) and time.monotonic() < deadline:
            time.sleep(0.01)
    return (yield)
"""


@pytest.mark.slow
def test_waiting_for_cores_does_not_use_the_pytest_timeout_budget(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lock_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOLDING_FLAG", str(tmp_path / "holding"))
    pytester.makeconftest(GATE_CONFTEST)
    pytester.makepyfile(TIMEOUT_TESTS)
    xml = tmp_path / "junit.xml"
    result = run(
        pytester,
        "-n",
        "2",
        "--dist=worksteal",  # starts both at once (the plugin's scheduler would start test_waiter after)
        "--timeout=1",
        "--neuron-scope=test",
        "--neuron-cores=0-3",
        f"--neuron-lock-dir={lock_dir}",
        f"--junitxml={xml}",
    )
    assert_outcomes(result, passed=2)
    waits = {
        case.get("name"): float(str(prop.get("value")))
        for case in ET.parse(xml).iter("testcase")
        for prop in case.iter("property")
        if prop.get("name") == "neuron_wait_seconds"
    }
    assert waits["test_waiter"] > 1.5, waits  # it waited longer than its whole --timeout, and passed
    result.stdout.fnmatch_lines(["longest waits: *::test_waiter ?.?s (0-3)*"])


# -- two runs on one host -----------------------------------------------------------------------
CONCURRENT_TESTS = """
import os, time
import pytest
from pytest_neuron.testing import init_runtime

FLAGS = os.path.dirname(os.environ["PLUGIN_TEST_RECORD"])

@pytest.mark.parametrize("i", range(6))
def test_{name}(i):
    runtime = init_runtime()
    assert runtime.visible_cores == os.environ["NEURON_RT_VISIBLE_CORES"]
    # a barrier: both runs hold their slices at once before either goes on
    open(os.path.join(FLAGS, "{name}.started"), "w").close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        os.path.exists(os.path.join(FLAGS, run + ".started")) for run in ("first", "second")
    ):
        time.sleep(0.01)
    time.sleep(0.2)
"""


@pytest.mark.slow
def test_two_concurrent_runs_share_one_lock_directory(
    lock_dir: Path, fake_host: Path, records: Path, tmp_path: Path
) -> None:
    procs: list[tuple[subprocess.Popen[str], float]] = []
    for name in ("first", "second"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "conftest.py").write_text(RECORDING_CONFTEST)
        (run_dir / f"test_{name}.py").write_text(CONCURRENT_TESTS.format(name=name))
        command = [
            sys.executable,
            "-m",
            "pytest",
            *BASE_ARGS,
            "-n",
            "2",
            "--neuron-cores=0-7",
            "--neuron-cores-per-worker=2",
            f"--neuron-lock-dir={lock_dir}",
            f"--basetemp={tmp_path / (name + '-basetemp')}",
        ]
        proc = subprocess.Popen(
            command, cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append((proc, time.monotonic()))
    results = []
    for proc, started in procs:
        out, err = proc.communicate(timeout=TIMEOUT)
        results.append(
            pytest.RunResult(proc.returncode, out.splitlines(), err.splitlines(), time.monotonic() - started)
        )
    for result in results:
        assert_outcomes(result, passed=6)
    recs = read_records(records)
    assert len(recs) == 12
    assert all(rec["at_import"] == rec["visible"] for rec in recs), recs
    first = [r for r in recs if "test_first" in r["test"]]
    second = [r for r in recs if "test_second" in r["test"]]
    assert max(r["end"] for r in first) > min(r["start"] for r in second)  # the runs really overlapped
    assert max(r["end"] for r in second) > min(r["start"] for r in first)
    slices = [worker_slices(result) for result in results]
    all_slices = [cores for run_slices in slices for cores in run_slices.values()]
    assert len(all_slices) == 4
    assert all(len(cores) == 2 for cores in all_slices)
    assert frozenset().union(*all_slices) == frozenset(range(8))  # four disjoint slices
    assert_no_overlap_in_time(recs)
    assert_fake_runtime_clean(fake_host, at_least=4)
