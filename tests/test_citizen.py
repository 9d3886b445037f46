"""Issue 16: other people's test suites give the same outcomes with the plugin installed on a Neuron host.

Every run here is a real ``python -m pytest`` subprocess on a simulated 4-core Neuron host: a fake
``neuron-ls`` first on ``PATH`` (which counts its runs) and no pytest-neuron flag at all, as a user
of another plugin's suite would have it.  tests/third_party.py runs a whole third-party suite that way
(tests/test_third_party.py); the tests here pin each item of the issue down on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, assert_outcomes
from e2e_helpers import gone, text_of, wait_for, worker_slices

from pytest_neuron.core.plan import HOST_ENV, Controller
from pytest_neuron.core.report import summary_lines
from pytest_neuron.core.runtime_env import MASTER_PORT, ROOT_COMM_ID, split_worker_env
from pytest_neuron.core.topology import Host
from pytest_neuron.host import watchdog
from pytest_neuron.host.hostcache import host_value, inherited_host, parse_host_value
from pytest_neuron.locks.nested import remove_domain, sweep_nested
from pytest_neuron.plugins.xdist import count_workers

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

TIMEOUT = 90.0
HOST_JSON = json.dumps(
    [
        {"neuron_device": 0, "nc_count": 2, "neuroncore_ids": [0, 1]},
        {"neuron_device": 1, "nc_count": 2, "neuroncore_ids": [2, 3]},
    ]
)


class NeuronHost:
    """A simulated 4-core host: a fake neuron-ls on PATH that appends a line to ``runs`` each time."""

    def __init__(self, tmp: Path, lock_dir: Path) -> None:
        self.lock_dir = lock_dir
        self.runs = tmp / "neuron-ls.runs"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        script = self.bin / "neuron-ls"
        script.write_text(f"#!/bin/sh\necho run >> '{self.runs}'\necho '{HOST_JSON}'\n")
        script.chmod(0o755)

    def detections(self) -> int:
        return len(self.runs.read_text().split()) if self.runs.exists() else 0

    def nested_domains(self) -> list[Path]:
        return sorted(self.lock_dir.glob("**/nested/*"))


@pytest.fixture
def host(neuron_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lock_dir: Path) -> NeuronHost:
    fake = NeuronHost(tmp_path, lock_dir)
    monkeypatch.delenv("PYTEST_NEURON_NEURON_LS")  # the default command: neuron-ls on PATH
    monkeypatch.setenv("PATH", f"{fake.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTEST_NEURON_LOCK_DIR", str(lock_dir))
    monkeypatch.setenv("PYTEST_NEURON_WAIT_TIMEOUT", "20")  # a regression fails instead of hanging
    return fake


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*BASE_ARGS, *args, timeout=TIMEOUT)


COUNTING_CONFTEST = """
import os

def pytest_configure(config):
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        open(os.path.join(os.environ["WORKERS_DIR"], worker), "w").close()
"""


def started_workers(directory: Path) -> int:
    """How many workers the inner run started: each leaves a file (COUNTING_CONFTEST)."""
    return len(list(directory.iterdir()))


# -- item 1: workers counted the way xdist counts them --------------------------------------------
@pytest.mark.parametrize(
    "tx",
    [
        [],
        ["popen"],
        ["2*popen"],
        ["3*popen", "popen"],
        ["popen//python=python3", "2*popen//chdir=/tmp"],
        ["0*popen", "popen"],
        ["x*popen"],
        ["ssh=host//python=python3"],
    ],
)
def test_workers_are_counted_as_xdist_counts_them(tx: list[str]) -> None:
    from xdist.workermanage import parse_tx_spec_config  # type: ignore[import-untyped]  # not public API

    class Config:
        def getvalue(self, name: str) -> list[str]:
            assert name == "tx"
            return tx

    try:
        expected = len(parse_tx_spec_config(Config()))
    except pytest.UsageError:  # xdist: "MISSING test execution (tx) nodes"
        expected = 0
    assert count_workers(tx) == expected


SLICE_TESTS = """
import os, pytest
@pytest.mark.parametrize("i", range(4))
def test_slice(i, neuron_cores):
    assert neuron_cores.visible_cores == os.environ["NEURON_RT_VISIBLE_CORES"]
"""


def test_tx_with_a_multiplier_gives_each_worker_its_share(
    pytester: pytest.Pytester, host: NeuronHost
) -> None:
    pytester.makepyfile(SLICE_TESTS)
    result = run(pytester, "-d", "--tx=2*popen")
    assert_outcomes(result, passed=4)
    slices = worker_slices(result)
    assert sorted(slices) == ["gw0", "gw1"]
    assert [len(cores) for cores in slices.values()] == [2, 2], slices


def test_tx_in_addopts_is_counted_too(pytester: pytest.Pytester, host: NeuronHost) -> None:
    pytester.makeini("[pytest]\naddopts = -d --tx=3*popen\n")
    pytester.makepyfile(SLICE_TESTS)
    result = run(pytester)
    assert_outcomes(result, passed=4)
    slices = worker_slices(result)
    assert sorted(slices) == ["gw0", "gw1", "gw2"]
    assert all(len(cores) == 1 for cores in slices.values()), slices


# -- item 2: the user's -n auto choice wins, capped at the slices that fit ------------------------
PLAIN_TESTS = """
import pytest
@pytest.mark.parametrize("i", range(4))
def test_plain(i): pass
"""
CAP = "asks for {n} workers, but pool 0-3 (neuron-ls) holds only 4 slices of 1 core; started 4"


ONE_WORKER_HOOK = "def pytest_xdist_auto_num_workers(config):\n    return 1\n"
AUTO_CASES = [
    pytest.param({"PYTEST_XDIST_AUTO_NUM_WORKERS": "1"}, "", ["-n", "auto"], 1, None, id="env"),
    pytest.param(
        {},
        ONE_WORKER_HOOK,
        ["-n", "auto"],
        1,
        None,
        id="conftest",
    ),
    pytest.param(
        {"PYTEST_XDIST_AUTO_NUM_WORKERS": "6"},
        "",
        ["-n", "auto"],
        4,
        "-n auto: PYTEST_XDIST_AUTO_NUM_WORKERS=6 " + CAP.format(n=6),
        id="env-capped",
    ),
    pytest.param(
        {},
        "def pytest_xdist_auto_num_workers(config):\n    return 5\n",
        ["-n", "auto"],
        4,
        "the pytest_xdist_auto_num_workers hook of ",
        id="conftest-capped",
    ),
    pytest.param(
        {},
        "import os\nos.sched_getaffinity = lambda pid: set(range(99))\n",
        ["-n", "logical"],
        4,
        "-n logical: the logical CPU count " + CAP.format(n=99),
        id="logical-capped",
    ),
    pytest.param(
        {},
        "import os\nos.sched_getaffinity = lambda pid: {0, 1, 2}\n",
        ["-n", "auto"],
        3,
        None,
        id="plugin-answers",
    ),
]


def count_here(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, conftest: str) -> Path:
    counted = pytester.path / "workers"
    counted.mkdir()
    monkeypatch.setenv("WORKERS_DIR", str(counted))
    pytester.makeconftest(COUNTING_CONFTEST + conftest)
    return counted


@pytest.mark.parametrize(("env", "conftest", "args", "workers", "notice"), AUTO_CASES)
def test_the_users_choice_of_auto_workers_wins(
    pytester: pytest.Pytester,
    host: NeuronHost,
    monkeypatch: pytest.MonkeyPatch,
    *,
    env: Mapping[str, str],
    conftest: str,
    args: list[str],
    workers: int,
    notice: str | None,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    counted = count_here(pytester, monkeypatch, conftest)
    pytester.makepyfile(PLAIN_TESTS)
    result = run(pytester, *args, "-q")
    assert_outcomes(result, passed=4)
    assert started_workers(counted) == workers, text_of(result)
    lines = [line for line in result.outlines if "asks for" in line]
    if notice is None:
        assert lines == [], text_of(result)
    else:  # one line, even at -q
        assert len(lines) == 1, text_of(result)
        assert notice in lines[0], lines


def test_a_bad_auto_workers_variable_keeps_xdists_warning(
    pytester: pytest.Pytester, host: NeuronHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "lots")
    counted = count_here(pytester, monkeypatch, "")
    pytester.makepyfile(PLAIN_TESTS)
    result = run(pytester, "-n", "auto", "-W", "default")
    assert "PYTEST_XDIST_AUTO_NUM_WORKERS is not a number" in text_of(result)
    assert_outcomes(result, passed=4)
    assert started_workers(counted) == min(4, len(os.sched_getaffinity(0)))  # the plugin's own answer


# -- item 3: pytest's verbosity conventions --------------------------------------------------------
@pytest.mark.parametrize(("flags", "section"), [((), True), (("-q",), False), (("-qq",), False)])
def test_the_summary_follows_the_verbosity(
    pytester: pytest.Pytester, host: NeuronHost, flags: tuple[str, ...], section: bool
) -> None:
    pytester.makepyfile(PLAIN_TESTS)
    result = run(pytester, "-n", "2", *flags)
    if "-qq" in flags:  # not even the outcome line
        assert result.ret == 0, text_of(result)
    else:
        assert_outcomes(result, passed=4)
    text = text_of(result)
    assert ("neuron" in text) is section, text
    assert ("gw" in text) is section, text  # pytest-xdist's own test of -q


def test_quiet_keeps_what_went_wrong_and_qq_drops_everything() -> None:
    workers = {"gw0": {"cores": "0-1"}, "gw1": {"error": "gw1 got no cores: timed out"}}
    every = summary_lines("worker", [], workers, None, None, notices=["capped"], verbosity=0)
    assert every == ["cores per worker: gw0 0-1", "capped", "gw1: gw1 got no cores: timed out"]
    assert summary_lines("worker", [], workers, None, None, notices=["capped"], verbosity=-1) == every[1:]
    assert summary_lines("worker", [], workers, None, None, notices=["capped"], verbosity=-2) == []


# -- item 6: the host is detected once per run -----------------------------------------------------
NESTED_CONFTEST = """
pytest_plugins = "pytester"
"""
NESTED_TESTS = """
import os, threading
from unittest import mock

INNER = "def test_inner(): pass\\n"

def test_nested_in_process(pytester):
    pytester.makepyfile(INNER)
    with mock.patch("time.sleep") as sleep:
        result = pytester.runpytest("-p", "no:cacheprovider")
        threading.Event().wait(1.5)  # long enough for a polling watchdog to show
    result.assert_outcomes(passed=1)
    assert sleep.call_args_list == []

def test_nested_subprocess(pytester):
    pytester.makepyfile(INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)

def test_nested_xdist(pytester):
    pytester.makepyfile(INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1")
    result.assert_outcomes(passed=1)

def test_no_watchdog_thread():
    assert [t.name for t in threading.enumerate() if "neuron" in t.name] == []
"""


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["single", "xdist"])
def test_nested_runs_neither_detect_again_nor_leave_domains(
    pytester: pytest.Pytester, host: NeuronHost, args: tuple[str, ...]
) -> None:
    pytester.makeconftest(NESTED_CONFTEST)
    pytester.makepyfile(NESTED_TESTS)
    result = run(pytester, *args)
    assert_outcomes(result, passed=4)
    assert host.detections() == 1  # the outer run's, handed down to every nested session and worker
    assert host.nested_domains() == []  # item 8: removed when the lease that handed them down ended
    assert HOST_ENV not in os.environ


def test_a_handed_down_host_is_used_only_by_descendants() -> None:
    host = Host((0, 1), {0: (0,), 1: (1,)}, {0: 0, 1: 0}, 1, "neuron-ls", "inf2.xlarge")
    value = host_value(host)
    assert inherited_host({HOST_ENV: value}) == host  # this process wrote it
    assert parse_host_value(value) is not None
    stranger = json.loads(value) | {"pid": 1, "start": 0}  # not this process nor an ancestor at that start
    assert inherited_host({HOST_ENV: json.dumps(stranger)}) is None
    for bad in ("", "{", "[]", json.dumps({"pid": os.getpid()}), value.replace('"lnc":1', '"lnc":"x"')):
        assert inherited_host({HOST_ENV: bad}) is None


# -- item 7: the watchdog needs no thread ----------------------------------------------------------
ORPHAN_CHILD = """
import os, sys, time
from pytest_neuron.core.plan import Controller
from pytest_neuron.host import procinfo, watchdog
controller = Controller(procinfo.boot_id(), int(sys.argv[1]), None)
print(watchdog.watch_parent(controller, grace=0.5), flush=True)
time.sleep(60)
"""


def test_a_worker_whose_controller_dies_exits_with_its_children(tmp_path: Path) -> None:
    # A middle process plays the controller: it starts the "worker", which arms the watchdog, then dies.
    middle = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, os\n"
            f"child = subprocess.Popen([sys.executable, '-c', {ORPHAN_CHILD!r}, str(os.getpid())],"
            " stdout=subprocess.PIPE, text=True)\n"
            "print(child.pid, child.stdout.readline().strip(), flush=True)\n"
            "os._exit(0)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    pid, armed = middle.communicate(timeout=TIMEOUT)[0].split()
    assert armed == "True"
    wait_for(lambda: gone(int(pid)), TIMEOUT, "the orphaned worker to exit")


def test_a_worker_whose_controller_is_already_gone_exits_at_once() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    code = (
        "from pytest_neuron.core.plan import Controller\n"
        "from pytest_neuron.host import procinfo, watchdog\n"
        f"watchdog.watch_parent(Controller(procinfo.boot_id(), {dead.pid}, 1))\n"
        "print('still here')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == watchdog.ORPHAN_EXIT_CODE, done
    assert "still here" not in done.stdout


def test_no_watchdog_for_a_controller_elsewhere_or_none() -> None:
    assert watchdog.watch_parent(None) is False
    assert watchdog.watch_parent(Controller("another-host", os.getppid(), None)) is False


# -- item 8: nested lock domains are removed -------------------------------------------------------
def _domain(root: Path, name: str) -> Path:
    domain = root / "nested" / name
    for sub in ("cores", "holders", "waiters"):
        (domain / sub).mkdir(parents=True)
    (domain / "alloc.lock").touch()
    (domain / "cores" / "core-0000.lock").touch()
    (domain / "holders" / "core-0000.json").write_text("{}")
    return domain


def test_dead_holders_domains_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = _domain(tmp_path, f"{dead.pid}-1")
    _domain(gone, "77777777-5")  # three deep
    from pytest_neuron.host.procinfo import my_starttime

    alive = _domain(tmp_path, f"{os.getpid()}-{my_starttime()}")
    odd = tmp_path / "nested" / "not-a-holder"
    odd.mkdir()
    assert sweep_nested(tmp_path) == 1
    assert not gone.exists()
    assert alive.exists()
    assert odd.exists()


def test_a_domain_with_a_held_lock_is_kept(tmp_path: Path) -> None:
    import fcntl

    domain = _domain(tmp_path, "1-1")
    inner = _domain(domain, "2-2")
    with (inner / "cores" / "core-0000.lock").open("r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert remove_domain(domain) is False
        assert (inner / "cores" / "core-0000.lock").exists()
    assert remove_domain(domain) is True
    assert not domain.exists()


def test_a_run_sweeps_what_dead_holders_left(pytester: pytest.Pytester, host: NeuronHost) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = _domain(host.lock_dir, f"{dead.pid}-1")
    pytester.makepyfile(PLAIN_TESTS)
    assert_outcomes(run(pytester), passed=4)
    assert not left.exists()


# -- item 9: what a test that did not ask for cores sees -------------------------------------------
ENV_TESTS = """
import json, os, pytest

def record(name):
    names = ("MASTER_PORT", "NEURON_RT_ROOT_COMM_ID", "NEURON_RT_VISIBLE_CORES")
    with open(os.environ["SEEN_FILE"], "a") as out:
        out.write(json.dumps({"test": name, **{n: os.environ.get(n) for n in names}}) + "\\n")

def test_1_plain():
    record("plain")

@pytest.mark.neuron
def test_2_marked():
    record("marked")

def test_3_fixture(neuron_cores):
    record("fixture")
    assert neuron_cores.env["MASTER_PORT"] == os.environ["MASTER_PORT"]

def test_4_plain_again():
    record("plain again")
"""


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["single", "xdist"])
def test_master_port_is_set_only_for_tests_that_ask_for_cores(
    pytester: pytest.Pytester, host: NeuronHost, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    seen_file = pytester.path / "seen.jsonl"
    monkeypatch.setenv("SEEN_FILE", str(seen_file))
    pytester.makepyfile(ENV_TESTS)
    result = run(pytester, *args)
    assert_outcomes(result, passed=4)
    seen = {rec["test"]: rec for rec in map(json.loads, seen_file.read_text().splitlines())}
    serial = "-n" not in args
    for name in ("plain", "plain again"):
        assert seen[name][MASTER_PORT] is None, seen
        assert seen[name][ROOT_COMM_ID] is not None, seen  # Neuron's own: for the worker's life
        # a serial run's slice is the whole detected host: left to the runtime's default (issue 12)
        assert (seen[name]["NEURON_RT_VISIBLE_CORES"] is None) == serial, seen
    for name in ("marked", "fixture"):
        assert seen[name][MASTER_PORT] is not None, seen


def test_the_worker_env_splits_master_port_off() -> None:
    process, asked = split_worker_env({"NEURON_RT_VISIBLE_CORES": "0", ROOT_COMM_ID: "x", MASTER_PORT: "1"})
    assert process == {"NEURON_RT_VISIBLE_CORES": "0", ROOT_COMM_ID: "x"}
    assert asked == {MASTER_PORT: "1"}


# -- items 4 and 5: nested in-process configs lease lazily (the lead's design) --------------------
NESTED_CONFIG_TESTS = """
import os
pytest_plugins = "pytester"

def test_parseconfig_leases_nothing(pytester):
    before = os.environ.get("PYTEST_NEURON_LEASE")
    lock_dir = os.environ["PYTEST_NEURON_LOCK_DIR"]
    pytester.parseconfigure()
    held = [p for p in __import__("pathlib").Path(lock_dir).glob("nested/**/holders/*.json")]
    assert held == []
    config = pytester.parseconfig()
    del config
    assert os.environ.get("PYTEST_NEURON_LEASE") == before
"""


def test_a_nested_config_that_runs_no_tests_leases_nothing(
    pytester: pytest.Pytester, host: NeuronHost
) -> None:
    pytester.makepyfile(NESTED_CONFIG_TESTS)
    assert_outcomes(run(pytester), passed=1)


NESTED_MANY_WORKERS = """
pytest_plugins = "pytester"

def test_more_nested_workers_than_cores(pytester):
    pytester.makepyfile("import pytest\\n@pytest.mark.parametrize('i', range(3))\\ndef test_x(i): pass\\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "3")
    result.assert_outcomes(passed=3)
"""


def test_a_nested_run_may_start_more_workers_than_its_slice_has_cores(
    pytester: pytest.Pytester, host: NeuronHost
) -> None:
    pytester.makepyfile(NESTED_MANY_WORKERS)
    assert_outcomes(run(pytester, "-n", "2"), passed=1)


def test_the_simulated_host_is_what_the_tests_think(pytester: pytest.Pytester, host: NeuronHost) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = run(pytester, "-v")
    assert "neuron: pool 0-3 from neuron-ls; scope worker" in text_of(result), text_of(result)
    assert host.detections() == 1
