"""Sharing a host (issue 11): whole runs reserve their cores, wait visibly, never wait for themselves.

Real ``python -m pytest`` sessions on a simulated 8-core pool (``--neuron-cores=0-7``) and the fake
runtime, started in-process by the inner tests exactly as the real runtime would be: a core handed
to two processes at once fails that test with "NeuronCore(s) not available", and the fake runtime's
log proves afterwards that no two reservations of one core overlapped in time.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from conftest import assert_outcomes
from e2e_helpers import (  # noqa: F401  (fixtures: pytest finds them imported)
    Scenario,
    assert_every_core_free,
    assert_no_overlap_in_time,
    assert_no_runtime_conflict,
    assert_runtime_log_clean,
    gone,
    procs_fixture,
    scenario_fixture,
    text_of,
    wait_for,
    worker_slices,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("neuron_env")

EIGHT = "--neuron-cores=0-7"


# -- three whole-pool runs at once --------------------------------------------------------------
WHOLE_POOL_TESTS = """
import os, signal, time
import pytest
from pytest_neuron.testing import init_runtime
from e2e_inner import flag

ME = os.environ["E2E_RUN"]

@pytest.mark.parametrize("i", range(8))
def test_work(i, neuron_cores):
    runtime = init_runtime()  # in the worker itself: holds its slice until the worker exits
    assert runtime.visible_cores == neuron_cores.visible_cores == os.environ["NEURON_RT_VISIBLE_CORES"]
    assert len(runtime.cores) == 2
    if os.environ.get("E2E_KILL_WORKER") == ME and i == 3 and not os.path.exists(flag(ME + ".killed")):
        open(flag(ME + ".killed"), "w").close()
        os.kill(os.getpid(), signal.SIGKILL)  # xdist restarts the worker, which gets its slice back
    time.sleep(0.3)
"""


def _start_runs(scenario: Scenario, names: tuple[str, ...], **env: str) -> dict[str, subprocess.Popen[str]]:
    started = {}
    for name in names:
        checkout = scenario.checkout(name, {"test_whole.py": WHOLE_POOL_TESTS})
        started[name] = scenario.start(checkout, "-n", "4", EIGHT, E2E_RUN=name, **env)
    return started


@pytest.mark.slow
def test_three_concurrent_whole_pool_runs_take_turns_and_all_pass(scenario: Scenario) -> None:
    names = ("alpha", "beta", "gamma")
    started = _start_runs(scenario, names)
    results = {name: scenario.procs.finish(proc, timeout=120) for name, proc in started.items()}
    for result in results.values():
        assert_outcomes(result, passed=8)
        assert_no_runtime_conflict(result)
        slices = worker_slices(result)
        assert sorted(slices) == ["gw0", "gw1", "gw2", "gw3"]
        assert frozenset().union(*slices.values()) == frozenset(range(8))  # each run had the whole pool
    recs = scenario.read_records()
    assert len(recs) == 24
    spans = sorted(
        (min(r["start"] for r in recs if r["run"] == n), max(r["end"] for r in recs if r["run"] == n))
        for n in names
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, spans  # whole-pool runs took turns: each started when the last one ended
    assert_no_overlap_in_time(recs)
    assert_runtime_log_clean(scenario.fake, reservations=len({r["pid"] for r in recs}))
    assert_every_core_free(scenario.lock_dir, scenario.fake)


@pytest.mark.slow
def test_concurrent_runs_survive_a_killed_worker_and_a_killed_controller(scenario: Scenario) -> None:
    # alpha loses a worker mid-run; beta's controller is SIGKILLed while its workers hold runtimes;
    # gamma must get the cores only after beta's orphaned workers and their runtimes are gone
    started = _start_runs(scenario, ("alpha", "beta"), E2E_KILL_WORKER="alpha")
    alpha, beta = started["alpha"], started["beta"]
    wait_for(
        lambda: any(r["run"] == "beta" for r in scenario.read_records()), 90, "beta to run its first test"
    )
    os.kill(beta.pid, signal.SIGKILL)
    killed_at = time.monotonic()  # the records' clock
    gamma = _start_runs(scenario, ("gamma",))["gamma"]
    result_alpha = scenario.procs.finish(alpha, timeout=120)
    result_gamma = scenario.procs.finish(gamma, timeout=120)
    assert_outcomes(result_alpha, crashed=True, passed=7, failed=1)
    assert_outcomes(result_gamma, passed=8)
    for result in (result_alpha, result_gamma):
        assert_no_runtime_conflict(result)
    recs = scenario.read_records()
    beta_workers = {r["pid"] for r in recs if r["run"] == "beta"}  # every worker that ran a test
    assert beta_workers
    assert all(gone(pid) for pid in beta_workers)
    # whichever run came next (gamma, or alpha if beta had the pool first) started after the last
    # test of beta's orphaned workers ended
    first_after = min(r["start"] for r in recs if r["run"] != "beta" and r["start"] > killed_at)
    assert all(r["end"] <= first_after for r in recs if r["run"] == "beta"), recs
    assert_no_overlap_in_time(recs)
    assert_runtime_log_clean(scenario.fake)
    assert_every_core_free(scenario.lock_dir, scenario.fake)


# -- waiting visibly, giving up once ------------------------------------------------------------
HOLDER = """
import sys, time
from pathlib import Path
from pytest_neuron.core.topology import identity_topology
from pytest_neuron.locks.lease import LeaseManager

manager = LeaseManager(Path(sys.argv[1]), identity_topology(range(8), "test"), command="holder.py --all")
lease = manager.acquire(8, timeout=10, worker="the-holder")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_every_core(scenario: Scenario, tmp_path: Path, *, seconds: int) -> subprocess.Popen[str]:
    """Another process that holds cores 0-7 of the scenario's lock directory for ``seconds``."""
    holder_py = tmp_path / "holder.py"
    holder_py.write_text(HOLDER)
    holder = scenario.procs.start(
        [sys.executable, str(holder_py), str(scenario.lock_dir), str(seconds)], cwd=tmp_path
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_run_on_a_busy_host_says_what_it_waits_for_then_gives_up_once(
    scenario: Scenario, tmp_path: Path, xdist: list[str]
) -> None:
    holder = hold_every_core(scenario, tmp_path, seconds=30)
    checkout = scenario.checkout("suite", {"test_whole.py": WHOLE_POOL_TESTS})
    result = scenario.run(checkout, *xdist, EIGHT, "--neuron-wait-timeout=4", E2E_RUN="waiter")
    text = text_of(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "[gw" not in text, text  # no worker started, no test ran
    assert "Traceback" not in text, text
    waiting = [line for line in result.outlines + result.errlines if " waits for 8 cores " in line]
    assert waiting, text  # a waiting line, after about 2 s
    assert f"held by pid {holder.pid} " in waiting[0], waiting
    assert "the-holder" in waiting[0], waiting
    assert "gives up in" in waiting[0], waiting
    errors = [line for line in result.errlines if line.startswith("ERROR: ")]
    assert len(errors) == 1, text
    for part in (f"pid {holder.pid}", "holder.py --all", "--neuron-wait-timeout", "pytest-neuron status"):
        assert part in errors[0], errors


# -- overridden variables -----------------------------------------------------------------------
GW_CONFTEST = """
import os

def pytest_configure(config):
    # the hack this plugin replaces: worker gwN gets core N
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    os.environ["NEURON_RT_VISIBLE_CORES"] = worker[2:]
"""

GW_TESTS = """
import os

def test_sees(neuron_cores):
    assert neuron_cores.visible_cores == os.environ["NEURON_RT_VISIBLE_CORES"]
    assert neuron_cores.cores == (int(os.environ["PYTEST_XDIST_WORKER"][2:]),)
"""


def test_a_conftest_that_maps_workers_to_cores_is_reported_once(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    pytester.makeconftest(GW_CONFTEST)
    pytester.makepyfile(test_gw=GW_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", EIGHT, f"--neuron-lock-dir={lock_dir}", "-W", "default"
    )
    assert_outcomes(result, passed=1, warnings=1)
    text = result.stdout.str()
    assert text.count("NEURON_RT_VISIBLE_CORES was changed after pytest-neuron set it") == 1, text
    result.stdout.fnmatch_lines(["*(gw0 0-3 -> 0, gw1 4-7 -> 1; by a conftest, fixture or test)*"])
    result.stdout.fnmatch_lines(["cores per worker: gw0 0, gw1 1"])  # the value in effect


def test_an_override_is_an_error_under_neuron_require(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makeconftest(GW_CONFTEST)
    pytester.makepyfile(test_gw=GW_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", EIGHT, f"--neuron-lock-dir={lock_dir}", "--neuron-require"
    )
    assert_outcomes(result, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*NEURON_RT_VISIBLE_CORES was changed after pytest-neuron set it*"
            "failing because of --neuron-require*"
        ]
    )


# -- never waiting for ourselves ----------------------------------------------------------------
PINNED_EIGHT = """
import os, time
import pytest
from pytest_neuron.testing import init_runtime

@pytest.mark.neuron(8)
def test_big_pins_everything(neuron_cores):
    init_runtime()  # in this process: the runtime keeps cores 0-7 until the process exits

@pytest.mark.parametrize("i", range(4))
@pytest.mark.neuron(1)
def test_small(i, neuron_cores):
    assert neuron_cores.visible_cores == os.environ["NEURON_RT_VISIBLE_CORES"] == "0-7"
"""


def test_after_a_runtime_pinned_the_pool_smaller_tests_run_at_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lock_dir: Path, fake_host: Path
) -> None:
    monkeypatch.setenv("PYTEST_NEURON_DEVICE_PREFIX", str(fake_host / "dev" / "neuron"))
    pytester.makepyfile(test_pinned=PINNED_EIGHT)
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", EIGHT, "--neuron-scope=test", "--neuron-wait-timeout=30",
        f"--neuron-lock-dir={lock_dir}",
    )  # fmt: skip
    assert_outcomes(result, passed=5, warnings=1)
    assert time.monotonic() - started < 30  # no test waited the bound for its own process
    assert "gave up" not in result.stdout.str()
    assert "held by pid" not in result.stdout.str()  # nobody waited for a holder, least of all itself


# -- small ones (issue 15 §4) --------------------------------------------------------------------
def test_stacked_neuron_markers_on_one_test_are_one_clear_error(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.neuron(4)
        @pytest.mark.neuron(2)
        def test_stacked():
            pass

        pytestmark = pytest.mark.neuron(1)

        @pytest.mark.neuron(2)
        def test_overrides_the_module():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", EIGHT, f"--neuron-lock-dir={lock_dir}")
    assert_outcomes(result, passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.neuron on test_stacked*::test_stacked: given 2 times (neuron(*), neuron(*));"
            " give it once"
        ]
    )


def test_ctrl_c_while_a_serial_run_waits_is_one_line(scenario: Scenario, tmp_path: Path) -> None:
    hold_every_core(scenario, tmp_path, seconds=60)
    checkout = scenario.checkout("suite", {"test_whole.py": WHOLE_POOL_TESTS})
    argv = [*scenario.args(EIGHT, "--neuron-wait-timeout=60"), f"--basetemp={checkout / '.bt'}"]
    waiter = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv],
        cwd=checkout,
        env={**scenario.env(), "E2E_RUN": "waiter"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    scenario.procs.procs.append(waiter)
    wait_for(lambda: _waiter_registered(scenario.lock_dir), 30, "the run to register as a waiter")
    os.kill(waiter.pid, signal.SIGINT)
    out, err = waiter.communicate(timeout=60)
    text = out + err
    assert waiter.returncode == pytest.ExitCode.USAGE_ERROR, text
    assert "Traceback" not in text, text
    assert "KeyboardInterrupt" not in text, text
    assert "pytest-neuron: this run was interrupted while waiting for 8 cores" in err, text


def _waiter_registered(lock_dir: Path) -> bool:
    return any(lock_dir.glob("waiters/*.json"))
