"""Helpers of the end-to-end suite (tests/test_e2e.py, tests/test_bad_input.py).

Every run here is a real ``python -m pytest`` subprocess started in a session (process group) of its
own, on a simulated 32-core pool (``--neuron-cores=0-31``) and a 32-core fake Neuron host
(pytest_neuron.testing).  :class:`Procs` kills every group it started when the test ends, so a
failing or hanging scenario leaves no worker, grandchild or fake runtime holder behind.

The checks share no code with the plugin's lease implementation: inner tests record what they saw
(pid, xdist worker, NEURON_RT_VISIBLE_CORES, start and end on the system-wide monotonic clock),
the fake runtime logs every reservation, and :func:`assert_every_core_free` proves afterwards that
the whole pool can be leased and initialised at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import BASE_ARGS

from pytest_neuron.core.topology import identity_topology
from pytest_neuron.locks.lease import LeaseManager
from pytest_neuron.testing import ENV_CORES, ENV_DIR, LogSummary, check_log, summarize_log

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

POOL_SIZE = 32
POOL = f"0-{POOL_SIZE - 1}"
POOL_ARG = f"--neuron-cores={POOL}"
RUN_TIMEOUT = 60.0  # seconds any one inner pytest run may take
RECORDS_ENV = "E2E_RECORDS"  # where inner tests append what they saw
FLAGS_ENV = "E2E_FLAGS"  # a directory for barrier and "crashed once" flags
DEVICE_PREFIX_ENV = "PYTEST_NEURON_DEVICE_PREFIX"

#: The fake runtime's refusals: none may appear in any scenario's output.
CONFLICT_TEXTS = ("RuntimeBusyError", "NeuronCore(s) not available")

#: conftest.py of every inner suite: each test appends one JSON line of what it saw.
RECORDING_CONFTEST = f"""
import json, os, time
import pytest

def record(**fields):
    line = {{"pid": os.getpid(), "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
             "run": os.environ.get("E2E_RUN", ""), "visible": os.environ.get("NEURON_RT_VISIBLE_CORES"),
             **fields}}
    fd = os.open(os.environ[{RECORDS_ENV!r}], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
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

#: A helper module of the inner suites: the fake runtime in a subprocess, a barrier, flags.
INNER_HELPERS = f"""
import json, os, subprocess, sys, time

FLAGS = os.environ[{FLAGS_ENV!r}]

def runtime_in_subprocess(env, seconds=0.1):
    # as torchrun or a CLI would: the subprocess fails if any of its cores is taken
    out = subprocess.run(
        [sys.executable, "-m", "pytest_neuron.testing", "run", "--seconds", str(seconds), "--cores-env-only"],
        env={{**os.environ, **env}}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "holds cores " + env["NEURON_RT_VISIBLE_CORES"] + " " in out.stdout, out.stdout
    return out.stdout

def flag(name):
    return os.path.join(FLAGS, name)

def barrier(me, everyone, timeout=30.0):
    # announce this run, then wait until every run in `everyone` has announced itself
    open(flag(me + ".started"), "w").close()
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(flag(name + ".started")) for name in everyone):
        assert time.monotonic() < deadline, "barrier: not every run started within %ss" % timeout
        time.sleep(0.01)

def write_json(name, data):
    tmp = flag(name + ".tmp%d" % os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, flag(name))
"""


# -- processes ---------------------------------------------------------------------------------
def pytest_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *BASE_ARGS, *(os.fspath(a) for a in args)]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Procs:
    """Processes started by one test, each the leader of a new session: :meth:`cleanup` kills the
    whole group of each (workers, grandchildren) and reaps the leader."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        user: tuple[int, int] | None = None,
    ) -> subprocess.Popen[str]:
        extra: dict[str, Any] = {}
        if user is not None:
            extra = {"user": user[0], "group": user[1], "extra_groups": []}
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(os.environ if env is None else env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **extra,
        )
        self.procs.append(proc)
        return proc

    def start_pytest(
        self, *args: str | os.PathLike[str], cwd: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """``python -m pytest`` in ``cwd``, with its own --basetemp (never the shared default root,
        whose pruning could remove another run's temporary directories)."""
        return self.start(pytest_command(*args, f"--basetemp={cwd / '.basetemp'}"), cwd=cwd, env=env)

    def finish(self, proc: subprocess.Popen[str], timeout: float = RUN_TIMEOUT) -> pytest.RunResult:
        """Wait for ``proc``: its outcome as pytester's RunResult (the group is killed on timeout)."""
        started = time.monotonic()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group(proc)
            out, err = proc.communicate(timeout=10)
            raise AssertionError(
                f"{proc.args!r} did not finish within {timeout}s; killed.\nstdout:\n{out}\nstderr:\n{err}"
            ) from None
        return pytest.RunResult(
            proc.returncode, out.splitlines(), err.splitlines(), time.monotonic() - started
        )

    def run(
        self,
        *args: str | os.PathLike[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = RUN_TIMEOUT,
    ) -> pytest.RunResult:
        return self.finish(self.start_pytest(*args, cwd=cwd, env=env), timeout)

    @staticmethod
    def kill_group(proc: subprocess.Popen[str]) -> None:
        if group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def cleanup(self) -> None:
        for proc in self.procs:
            self.kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                proc.communicate(timeout=10)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def gone(pid: int) -> bool:
    """``pid`` has exited (a zombie counts: it holds no file, lock or device any more)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rfind(")") + 2] in "ZX"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


# -- inner suites ------------------------------------------------------------------------------
def make_checkout(directory: Path, files: Mapping[str, str]) -> Path:
    """A small suite in ``directory``: the recording conftest, the helper module and ``files``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "conftest.py").write_text(RECORDING_CONFTEST)
    (directory / "e2e_inner.py").write_text(INNER_HELPERS)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def fake_env(fake_dir: Path) -> dict[str, str]:
    """The variables of a 32-core fake host whose device files the plugin recognises as Neuron's."""
    return {
        ENV_DIR: str(fake_dir),
        ENV_CORES: str(POOL_SIZE),
        DEVICE_PREFIX_ENV: str(fake_dir / "dev" / "neuron"),
    }


# -- reading what happened ---------------------------------------------------------------------
def text_of(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cores_of(visible: str) -> frozenset[int]:
    """NEURON_RT_VISIBLE_CORES as a set (parsed here, independently of the plugin)."""
    cores: set[int] = set()
    for part in visible.split(","):
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return frozenset(cores)


def contiguous(cores: frozenset[int]) -> bool:
    return max(cores) - min(cores) + 1 == len(cores)


def worker_slices(result: pytest.RunResult) -> dict[str, frozenset[int]]:
    """The "cores per worker" line of the neuron summary, parsed."""
    lines = [line for line in result.outlines if line.startswith("cores per worker: ")]
    assert len(lines) == 1, text_of(result)
    pairs = (entry.split(" ") for entry in lines[0].removeprefix("cores per worker: ").split(", "))
    return {worker: cores_of(cores) for worker, cores in pairs}


def assert_disjoint_slices(slices: Mapping[str, frozenset[int]], size: int) -> None:
    for worker, cores in slices.items():
        assert len(cores) == size, (worker, sorted(cores))
        assert contiguous(cores), (worker, sorted(cores))
    for (a, ca), (b, cb) in combinations(slices.items(), 2):
        assert not ca & cb, f"{a} and {b} share cores {sorted(ca & cb)}"


def assert_no_overlap_in_time(recs: Sequence[Mapping[str, Any]]) -> None:
    """No two tests of different processes that ran at the same time saw a common core."""
    for a, b in combinations(recs, 2):
        if a["pid"] != b["pid"] and a["start"] < b["end"] and b["start"] < a["end"]:
            shared = cores_of(a["visible"]) & cores_of(b["visible"])
            assert not shared, f"{a} and {b} ran at once on cores {sorted(shared)}"


def assert_no_runtime_conflict(result: pytest.RunResult) -> None:
    """The fake runtime refused nobody (tests would fail too; this names the refusal)."""
    text = text_of(result)
    for marker in CONFLICT_TEXTS:
        assert marker not in text, text


def assert_runtime_log_clean(fake_dir: Path, *, reservations: int | None = None) -> LogSummary:
    """No two reservations of the fake runtime's log held one core at once; ``reservations``, when
    given, is how many there must be."""
    overlaps = check_log(fake_dir)
    assert overlaps == [], "\n".join(map(str, overlaps))
    summary = summarize_log(fake_dir)
    if reservations is not None:
        assert summary.reservations == reservations, summary
    return summary


def assert_every_core_free(lock_dir: Path, fake_dir: Path, *, within: float = 5.0) -> float:
    """No lease outlived its holder: no live process holds a record, a LeaseManager on ``lock_dir``
    takes all 32 cores at once within ``within`` seconds, and then a fresh fake runtime starts on
    0-31.  Afterwards every reservation in the fake log has ended (a holder that died without
    closing is ended by the next holder of its cores: here, the 0-31 runtime).  Returns the wait."""
    manager = LeaseManager(lock_dir, identity_topology(frozenset(range(POOL_SIZE)), POOL_ARG))
    if lock_dir.exists():
        live = {p: h.describe() for p, h in manager.holders(range(POOL_SIZE)).items() if h.is_alive()}
        assert not live, f"leases outlived the run: {live}"
    started = time.monotonic()
    lease = manager.acquire(POOL_SIZE, timeout=5, worker="e2e: every core at once")
    waited = time.monotonic() - started
    manager.release(lease)
    assert waited < within, f"leasing every core took {waited:.2f}s"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURON_RT_")}
    env.update(fake_env(fake_dir), NEURON_RT_VISIBLE_CORES=POOL)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_neuron.testing", "run", "--seconds", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"holds cores {POOL} " in done.stdout, done.stdout
    summary = assert_runtime_log_clean(fake_dir)
    assert summary.open == 0, summary
    return waited


# -- one scenario's directories and checks -----------------------------------------------------
class Scenario:
    """One end-to-end scenario: its lock directory, fake host, records, flags and processes."""

    def __init__(self, tmp: Path, lock_dir: Path, fake: Path, procs: Procs) -> None:
        self.tmp = tmp
        self.lock_dir = lock_dir
        self.fake = fake
        self.procs = procs
        self.records = tmp / "records.jsonl"
        self.flags = tmp / "flags"
        self.flags.mkdir(exist_ok=True)

    def env(self) -> dict[str, str]:
        """The inner runs' environment: this process's (a clean, fake 32-core host) plus ours."""
        return {**os.environ, RECORDS_ENV: str(self.records), FLAGS_ENV: str(self.flags)}

    def checkout(self, name: str, files: Mapping[str, str]) -> Path:
        return make_checkout(self.tmp / name, files)

    def args(self, *extra: str) -> list[str]:
        return [POOL_ARG, f"--neuron-lock-dir={self.lock_dir}", *extra]

    def start(self, cwd: Path, *extra: str, **env: str) -> subprocess.Popen[str]:
        return self.procs.start_pytest(*self.args(*extra), cwd=cwd, env={**self.env(), **env})

    def run(self, cwd: Path, *extra: str, **env: str) -> pytest.RunResult:
        return self.procs.finish(self.start(cwd, *extra, **env))

    def read_records(self) -> list[dict[str, Any]]:
        return read_records(self.records)


# -- fixtures the end-to-end modules share (imported by them: pytest finds imported fixtures) -----
@pytest.fixture(name="procs")
def procs_fixture() -> Iterator[Procs]:
    """Processes this test starts; every group is killed when it ends."""
    started = Procs()
    yield started
    started.cleanup()


@pytest.fixture(name="scenario")
def scenario_fixture(
    neuron_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lock_dir: Path, procs: Procs
) -> Scenario:
    """A 32-core fake host for the runs this test starts (and their lock directory)."""
    fake = tmp_path / "fake-host"
    for name, value in fake_env(fake).items():
        monkeypatch.setenv(name, value)
    return Scenario(tmp_path, lock_dir, fake, procs)
