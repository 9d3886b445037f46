"""Real pytest runs whose tests leave subprocesses on their cores when the run dies (issue 15 §1).

Each scenario's first run is killed (SIGKILL of a worker or of pytest itself, SIGTERM as CI sends on
cancel, pytest-timeout's thread method, a ``--forked`` child outliving its worker) while a test's
subprocess holds cores in the fake runtime.  A second run then asks for the whole pool and starts the
fake runtime on it: it must never get "NeuronCore(s) not available", because the cores are handed on
only once no process that inherited the first lease is alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pytest
from conftest import assert_outcomes
from e2e_helpers import (  # noqa: F401  (fixtures: pytest finds them imported)
    POOL,
    Scenario,
    assert_every_core_free,
    assert_no_runtime_conflict,
    assert_runtime_log_clean,
    gone,
    procs_fixture,
    scenario_fixture,
    text_of,
    wait_for,
)

from pytest_neuron.host.procinfo import proc_state

pytestmark = [pytest.mark.usefixtures("neuron_env"), pytest.mark.slow]


#: A test that starts the fake runtime in a subprocess on its cores (for ``SECONDS``) and then hangs.
LEAVES_A_SUBPROCESS = """
import os, subprocess, sys, time
import pytest
from e2e_inner import write_json

@pytest.mark.neuron(4)
{extra}
def test_leaves_a_runtime_behind(neuron_cores):
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest_neuron.testing", "run", "--seconds", "{seconds}", "--cores-env-only"],
        stdout=subprocess.PIPE, text=True,
    )
    line = child.stdout.readline()
    assert "holds cores " + neuron_cores.visible_cores + " " in line, line
    write_json("running.json", {{"test": os.getpid(), "child": child.pid}})
    time.sleep({hang})
"""

WHOLE_POOL = f"""
from e2e_inner import runtime_in_subprocess

def test_whole_pool(neuron_cores):
    assert neuron_cores.visible_cores == {POOL!r}
    runtime_in_subprocess(neuron_cores.env, seconds=0)
"""


def next_run_gets_the_pool(scenario: Scenario, child: int) -> None:
    following = scenario.checkout("next", {"test_next.py": WHOLE_POOL})
    nxt = scenario.run(following, "--neuron-wait-timeout=40")
    assert_no_runtime_conflict(nxt)
    assert_outcomes(nxt, passed=1)
    assert gone(child)
    assert_runtime_log_clean(scenario.fake)


@pytest.mark.parametrize(
    ("how", "args"),
    [
        ("sigkill-worker", ("-n", "1", "--neuron-scope=test")),
        ("sigkill-single", ("--neuron-scope=test",)),
        pytest.param(
            "forked-child-outlives-its-worker",
            ("-n", "1", "--neuron-scope=test", "--forked"),
            marks=pytest.mark.skipif(
                tuple(int(p) for p in pytest.__version__.split(".")[:2]) >= (9, 2),
                reason="pytest-forked 1.7.5 fails every forked test on pytest 9.2 (a marshal error)",
            ),
        ),
    ],
)
def test_a_killed_holders_subprocess_keeps_its_cores(
    scenario: Scenario, how: str, args: tuple[str, ...]
) -> None:
    hang = 4 if how.startswith("forked") else 60
    files = {"test_leave.py": LEAVES_A_SUBPROCESS.format(extra="", seconds=6, hang=hang)}
    first = scenario.start(scenario.checkout("suite", files), *args)
    running = scenario.flags / "running.json"
    wait_for(running.exists, 45, "the test to start its runtime subprocess")
    pids = json.loads(running.read_text())
    victim = pids["test"]
    if how.startswith("forked"):  # the test runs in pytest-forked's child: kill its worker
        victim = proc_state(victim).ppid
        assert victim is not None
    os.kill(victim, signal.SIGKILL)
    first.communicate(timeout=60)  # the controller reports the crashed worker and ends
    assert first.returncode != 0
    assert not gone(pids["child"])
    next_run_gets_the_pool(scenario, pids["child"])


def test_sigterm_ends_the_tests_subprocesses(scenario: Scenario) -> None:
    suite = scenario.checkout(
        "suite", {"test_leave.py": LEAVES_A_SUBPROCESS.format(extra="", seconds=60, hang=60)}
    )
    first = scenario.start(suite, "--neuron-scope=test")
    running = scenario.flags / "running.json"
    wait_for(running.exists, 45, "the test to start its runtime subprocess")
    pids = json.loads(running.read_text())
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == -signal.SIGTERM
    wait_for(lambda: gone(pids["child"]), 10, "the test's subprocess to be ended")
    next_run_gets_the_pool(scenario, pids["child"])


def test_a_test_killed_by_pytest_timeouts_thread_method(scenario: Scenario) -> None:
    extra = '@pytest.mark.timeout(2, method="thread")'
    suite = scenario.checkout(
        "suite", {"test_leave.py": LEAVES_A_SUBPROCESS.format(extra=extra, seconds=6, hang=60)}
    )
    result = scenario.run(suite, "--neuron-scope=test")
    assert result.ret != 0, text_of(result)
    pids = json.loads((scenario.flags / "running.json").read_text())
    next_run_gets_the_pool(scenario, pids["child"])


# -- the stress run: three concurrent runs under random kills, SIGTERMs and SIGSTOPs ------------------
CHAOS_TESTS = """
import os, subprocess, sys, time
import pytest
from e2e_inner import runtime_in_subprocess

SIZES = [1, 2, 4, 8, 1, 2, 1, 4]

@pytest.mark.parametrize("i", [pytest.param(i, marks=pytest.mark.neuron(SIZES[i % 8])) for i in range(48)])
def test_work(i, neuron_cores):
    runtime_in_subprocess(neuron_cores.env, seconds=0.05)

@pytest.mark.parametrize("i", range(48))
@pytest.mark.neuron(2)
def test_runtime(i, neuron_cores):
    runtime_in_subprocess(neuron_cores.env, seconds=0.2)
    if i % 6 == 0:  # leave a runtime behind on the test's cores, as a sloppy test does
        subprocess.Popen(
            [sys.executable, "-m", "pytest_neuron.testing", "run", "--seconds", "1.5", "--cores-env-only"],
            stdout=subprocess.DEVNULL,
        )
"""


def _descendant_pids(pid: int) -> list[int]:
    from pytest_neuron.host.procinfo import descendants

    return descendants(pid)


def _children(pid: int) -> list[int]:
    from pytest_neuron.host.procinfo import children_of

    return children_of(pid)


def _cmdline(pid: int) -> str:
    from pytest_neuron.host.processes import command_line

    return command_line(pid, limit=400)


@pytest.mark.timeout(300)
def test_three_runs_under_kills_sigterms_and_sigstops(scenario: Scenario) -> None:
    import random
    import time

    from pytest_neuron.locks.proclocks import flock_holder

    rng = random.Random(15)
    runs = {
        name: scenario.start(
            scenario.checkout(name, {"test_chaos.py": CHAOS_TESTS}),
            "-n",
            "2",
            "--neuron-scope=test",
            "--neuron-wait-timeout=30",
            E2E_RUN=name,
        )
        for name in ("alpha", "beta", "gamma")
    }
    controllers = {proc.pid: name for name, proc in runs.items()}
    done_to: dict[str, str] = {}
    actions: list[str] = []
    stopped: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(p.poll() is None for p in runs.values()):
        time.sleep(rng.uniform(0.2, 0.6))
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        stopped.clear()
        live = [pid for pid, name in controllers.items() if runs[name].poll() is None]
        if not live:
            break
        tree = [p for c in live for p in _descendant_pids(c)]
        workers = [p for c in live for p in _children(c) if not gone(p)]  # execnet's python -c workers
        runtimes = [p for p in tree if "pytest_neuron.testing run" in _cmdline(p) and not gone(p)]
        choice = rng.random() if len(actions) >= 10 else rng.random() * 0.8  # controllers last
        try:
            if choice < 0.25 and runtimes:
                victim = rng.choice(runtimes)
                os.kill(victim, signal.SIGKILL)
                actions.append(f"SIGKILL runtime {victim}")
            elif choice < 0.35 and workers:
                victim = rng.choice(workers)
                os.kill(victim, signal.SIGKILL)
                actions.append(f"SIGKILL worker {victim}")
            elif choice < 0.8:
                alloc = scenario.lock_dir / "alloc.lock"
                holder = None
                for _ in range(3000):  # catch a process inside alloc.lock
                    with contextlib.suppress(OSError):
                        holder = flock_holder(os.stat(alloc))
                    if holder:
                        break
                if holder:
                    os.kill(holder, signal.SIGSTOP)
                    stopped.append(holder)
                    actions.append(f"SIGSTOP alloc.lock holder {holder}")
            elif "sigterm" not in done_to.values():
                victim = rng.choice(live)
                os.kill(victim, signal.SIGTERM)
                done_to[controllers[victim]] = "sigterm"
                actions.append(f"SIGTERM controller {victim}")
            elif "sigkill" not in done_to.values():
                victim = rng.choice([p for p in live if controllers[p] not in done_to] or live)
                os.kill(victim, signal.SIGKILL)
                done_to[controllers[victim]] = "sigkill"
                actions.append(f"SIGKILL controller {victim}")
        except ProcessLookupError:
            pass
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    results = {name: scenario.procs.finish(proc, timeout=150) for name, proc in runs.items()}  # none hung
    print("\n".join(actions))
    assert any(a.startswith("SIGSTOP") for a in actions), actions
    for result in results.values():
        # never "NeuronCore(s) not available" (a worker killed while xdist brings it up may end its run
        # with xdist's own INTERNALERROR: that is not this plugin's to prevent)
        assert_no_runtime_conflict(result)
    # every runtime left behind or orphaned has ended by now, or ends soon: then every core is free
    wait_for(
        lambda: not any("pytest_neuron.testing run" in _cmdline(p) for p in _all_pids()), 30, "stray runtimes"
    )
    assert_runtime_log_clean(scenario.fake)  # no two holders of one core at one time
    assert_every_core_free(scenario.lock_dir, scenario.fake)


def _all_pids() -> list[int]:
    from pytest_neuron.host.procinfo import all_pids

    return all_pids()
