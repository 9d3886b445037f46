"""The scheduler and the durations cache in real ``pytest -n N`` runs (subprocesses) on a simulated pool."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest
from conftest import assert_outcomes

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("neuron_env")

TIMEOUT = 90.0
#: Like conftest.BASE_ARGS, but with pytest's cache: these tests are about it.
ARGS = ("-p", "no:hypothesispytest", "-p", "no:randomly")

MIXED_TESTS = """
import time
import pytest

SIZES = [4, 1, 2, 1, 4, 1, 2, 1, 1, 4, 1, 2, 1, 2, 4, 1]


PARAMS = [pytest.param(k, marks=pytest.mark.neuron(k), id=f"{i}-{k}c") for i, k in enumerate(SIZES)]


@pytest.mark.parametrize("k", PARAMS)
def test_job(k, neuron_cores):
    assert len(neuron_cores.cores) == k
    time.sleep(0.02 * k)
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*ARGS, *args, timeout=TIMEOUT)


def scope_args(lock_dir: Path, *more: str) -> tuple[str, ...]:
    return ("--neuron-scope=test", "--neuron-cores=0-3", f"--neuron-lock-dir={lock_dir}", *more)


def test_every_test_starts_only_when_its_cores_are_free(pytester: pytest.Pytester, lock_dir: Path) -> None:
    # --neuron-wait-timeout=0: a test whose cores are busy when it starts fails at once.  The
    # scheduler starts a test only when its cores are free, so none fails, with 3 workers on 4 cores
    # and 4-core tests among the others (xdist's load scheduler starts them while cores are taken).
    pytester.makepyfile(test_mixed=MIXED_TESTS)
    result = run(
        pytester, "-n", "3", "-v", "-p", "no:cacheprovider", *scope_args(lock_dir, "--neuron-wait-timeout=0")
    )
    assert_outcomes(result, passed=16)
    result.stdout.fnmatch_lines(["scheduling tests via NeuronScheduling"])


def test_xdist_s_load_scheduler_would_start_tests_whose_cores_are_busy(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    # the same run with xdist's work-stealing scheduler: the check above can tell the two apart
    pytester.makepyfile(test_mixed=MIXED_TESTS)
    result = run(
        pytester,
        "-n",
        "3",
        "-v",
        "--dist=worksteal",
        "-p",
        "no:cacheprovider",
        *scope_args(lock_dir, "--neuron-wait-timeout=0"),
    )
    result.stdout.fnmatch_lines(["scheduling tests via WorkStealingScheduling"])
    assert result.parseoutcomes().get("errors", 0) >= 1, result.stdout.str()


def test_durations_are_recorded_and_order_the_next_run(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makepyfile(test_mixed=MIXED_TESTS)
    first = run(pytester, "-n", "2", *scope_args(lock_dir))
    assert_outcomes(first, passed=16)
    first.stdout.fnmatch_lines(["neuron: order biggest-first (default until a run records durations)"])
    cache = pytester.path / ".pytest_cache" / "v" / "neuron" / "durations"
    recorded = json.loads(cache.read_text())
    assert len(recorded) == 16
    cores, seconds, call, wait = recorded["test_mixed.py::test_job[0-4c]"]
    assert cores == 4
    assert seconds >= call >= 0.08
    assert wait >= 0
    second = run(pytester, "-n", "2", *scope_args(lock_dir))
    assert_outcomes(second, passed=16)
    second.stdout.fnmatch_lines(
        ["neuron: order durations (default once durations are recorded), from 16 recorded tests"]
    )
    # an explicit order wins over the default
    third = run(pytester, "-n", "2", *scope_args(lock_dir, "--neuron-order=biggest-first"))
    third.stdout.fnmatch_lines(["neuron: order biggest-first (--neuron-order)"])
    # --cache-clear forgets them; -p no:cacheprovider never had them
    cleared = run(pytester, "-n", "2", "--cache-clear", *scope_args(lock_dir))
    cleared.stdout.fnmatch_lines(["neuron: order biggest-first (default until a run records durations)"])
    uncached = run(pytester, "-n", "2", "-p", "no:cacheprovider", *scope_args(lock_dir))
    uncached.stdout.fnmatch_lines(
        ["neuron: order biggest-first (default; no cache (-p no:cacheprovider), so no durations)"]
    )
    assert_outcomes(uncached, passed=16)


ORDER_TESTS = """
import time
import pytest

@pytest.mark.neuron(1)
def test_a_short():
    pass

@pytest.mark.neuron(1)
def test_b_long():
    time.sleep(0.3)

@pytest.mark.neuron(1)
def test_c_medium():
    time.sleep(0.1)
"""


def test_without_xdist_the_second_run_runs_the_longest_test_first(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    pytester.makepyfile(test_order=ORDER_TESTS)
    first = run(pytester, "-v", *scope_args(lock_dir))
    assert_outcomes(first, passed=3)
    first.stdout.fnmatch_lines(["*test_a_short PASSED*", "*test_b_long PASSED*", "*test_c_medium PASSED*"])
    second = run(pytester, "-v", *scope_args(lock_dir))
    second.stdout.fnmatch_lines(
        [
            "neuron: order durations (default once durations are recorded), from 3 recorded tests",
            "*test_b_long PASSED*",
            "*test_c_medium PASSED*",
            "*test_a_short PASSED*",
        ]
    )
    # the durations order with nothing recorded yet is biggest-first, and says so
    fresh = run(pytester, "-v", "--cache-clear", *scope_args(lock_dir, "--neuron-order=durations"))
    fresh.stdout.fnmatch_lines(
        [
            "neuron: order durations (--neuron-order), from 0 recorded tests; "
            "biggest-first until a run records some"
        ]
    )


@pytest.mark.parametrize(("value", "shown"), [("collected", "collection"), ("collection", "collection")])
def test_collection_order_and_its_old_name(
    pytester: pytest.Pytester, lock_dir: Path, value: str, shown: str
) -> None:
    pytester.makepyfile(test_order=ORDER_TESTS)
    result = run(pytester, "-v", "-p", "no:cacheprovider", *scope_args(lock_dir, f"--neuron-order={value}"))
    assert_outcomes(result, passed=3)
    result.stdout.fnmatch_lines([f"neuron: order {shown} (--neuron-order)"])


def test_a_bad_order_is_one_line(
    pytester: pytest.Pytester, lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_NEURON_ORDER", "fastest")
    pytester.makepyfile(test_order=ORDER_TESTS)
    result = run(pytester, "-p", "no:cacheprovider", *scope_args(lock_dir))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: invalid value 'fastest' from environment variable PYTEST_NEURON_ORDER: "
            "expected biggest-first, durations or collection"
        ]
    )
    assert "Traceback" not in result.stderr.str()


KILL_TESTS = """
import os, signal, time
import pytest

@pytest.mark.neuron(2)
def test_0_killed(neuron_cores):
    flag = os.path.join(os.environ["KILL_FLAGS"], "killed")
    if not os.path.exists(flag):
        open(flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)

@pytest.mark.neuron(1)
@pytest.mark.parametrize("i", range(10))
def test_after(i, neuron_cores):
    time.sleep(0.02)
"""


def test_a_worker_killed_mid_run_is_replaced_and_its_waiting_test_runs_elsewhere(
    pytester: pytest.Pytester, lock_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILL_FLAGS", str(tmp_path))
    pytester.makepyfile(test_kill=KILL_TESTS)
    result = run(pytester, "-n", "2", "-p", "no:cacheprovider", *scope_args(lock_dir))
    assert_outcomes(result, crashed=True, passed=10, failed=1)
    assert re.search(r"worker 'gw[01]' crashed while running '\S+::test_0_killed'", result.stdout.str())
    result.stdout.fnmatch_lines(["*replacing crashed worker gw*"])


FAIL_TESTS = """
import time
import pytest

@pytest.mark.neuron(1)
def test_0_fails():
    assert False

@pytest.mark.neuron(1)
@pytest.mark.parametrize("i", range(30))
def test_more(i):
    time.sleep(0.05)
"""


@pytest.mark.parametrize("stop", ["-x", "--maxfail=1"])
def test_stopping_after_a_failure_ends_the_run(pytester: pytest.Pytester, lock_dir: Path, stop: str) -> None:
    pytester.makepyfile(test_fail=FAIL_TESTS)
    result = run(pytester, "-n", "2", stop, "-p", "no:cacheprovider", *scope_args(lock_dir))
    assert result.ret == pytest.ExitCode.INTERRUPTED  # xdist ends a stopped run this way
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1, result.stdout.str()
    assert outcomes.get("passed", 0) < 30, result.stdout.str()  # it stopped early
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])
    assert "crashed" not in result.stdout.str()


def test_other_dist_modes_keep_xdist_s_scheduler(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makepyfile(test_order=ORDER_TESTS)
    result = run(
        pytester, "-n", "2", "-v", "--dist=loadscope", "-p", "no:cacheprovider", *scope_args(lock_dir)
    )
    assert_outcomes(result, passed=3)
    result.stdout.fnmatch_lines(["scheduling tests via LoadScopeScheduling"])
