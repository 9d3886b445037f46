"""A lease's cores are handed on only when no process that inherited the lease is alive.

Real processes: a holder (``lease_helpers.py spawn``) leases cores and starts a
subprocess under the lease the way a test does (the plugin's
``PYTEST_NEURON_LEASE``, with the lease id); then the holder is SIGKILLed, or
releases, or exits, while the subprocess lives on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from lease_helpers import Children, child_args, read_line, wait_for

from pytest_neuron.core.coreset import parse_coreset
from pytest_neuron.core.topology import identity_topology
from pytest_neuron.host.procinfo import proc_state
from pytest_neuron.locks.lease import LeaseManager, LeaseTimeout
from pytest_neuron.locks.status import STALE, read_report

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def stray() -> Iterator[list[int]]:
    """Pids the test leaves running on purpose; killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def manager(root: Path, cores: str = "0-3") -> LeaseManager:
    return LeaseManager(root, identity_topology(parse_coreset(cores, "test"), f"--neuron-cores={cores}"))


def alive(pid: int) -> bool:
    state = proc_state(pid)
    return state.exists and not state.zombie


def kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, f"pid {pid} to die")


def start_spawner(
    children: Children, root: Path, *extra: str, stdin: int | None = None, **options: object
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = children.start(*child_args("spawn", root=root, pool="0-3", k=4, **options), *extra, stdin=stdin)
    started = json.loads(read_line(proc, timeout=30))
    wait_for(lambda: alive(started["child"]), 10, "the subprocess to start")
    return proc, started


@pytest.mark.parametrize("orphan", [False, True], ids=["child", "orphaned-grandchild"])
def test_a_killed_holders_subprocess_keeps_its_cores(
    tmp_path: Path, children: Children, stray: list[int], orphan: bool
) -> None:
    root = tmp_path / "locks"
    proc, started = start_spawner(children, root, *(["--orphan"] if orphan else []))
    stray.append(started["child"])
    os.kill(started["pid"], signal.SIGKILL)
    proc.wait(timeout=10)
    assert alive(started["child"])

    mgr = manager(root)
    with pytest.raises(LeaseTimeout) as info:
        mgr.acquire(1, timeout=0.5)
    message = str(info.value)
    assert f"still used by pid {started['child']}" in message, message
    assert "\n" not in message
    # status agrees: the record is stale, and names the process that still uses the cores
    domain = read_report(root, "test").domain
    assert domain is not None
    assert {c.state for c in domain.cores} == {STALE}
    assert {c.survivors for c in domain.cores} == {(started["child"],)}

    kill_and_wait(started["child"])
    lease = mgr.acquire(4, timeout=10)
    assert lease.physical == (0, 1, 2, 3)
    mgr.release(lease)


@pytest.mark.parametrize("orphan", [False, True], ids=["child", "orphaned-grandchild"])
def test_release_lingers_while_a_subprocess_of_the_lease_runs(
    tmp_path: Path, children: Children, stray: list[int], orphan: bool
) -> None:
    root = tmp_path / "locks"
    extra = ["--orphan"] if orphan else []
    proc, started = start_spawner(children, root, *extra, then="release", stdin=subprocess.PIPE)
    stray.append(started["child"])
    assert started["released"]
    assert started["lingering"] == [started["child"]]

    mgr = manager(root)
    with pytest.raises(LeaseTimeout):
        mgr.acquire(1, timeout=0.3)  # the cores are still locked by the holder

    kill_and_wait(started["child"])
    assert proc.stdin is not None
    proc.stdin.write("settle\n")
    proc.stdin.flush()
    assert json.loads(read_line(proc, timeout=30)) == {"lingering": []}
    lease = mgr.acquire(4, timeout=10)
    mgr.release(lease)


def test_a_holder_that_exits_leaving_a_subprocess_hands_nothing_on(
    tmp_path: Path, children: Children, stray: list[int]
) -> None:
    root = tmp_path / "locks"
    proc, started = start_spawner(children, root, then="exit")
    stray.append(started["child"])
    assert proc.wait(timeout=30) == 0
    assert alive(started["child"])
    mgr = manager(root)
    with pytest.raises(LeaseTimeout, match=f"still used by pid {started['child']}"):
        mgr.acquire(2, timeout=0.5)
    kill_and_wait(started["child"])
    began = time.monotonic()
    lease = mgr.acquire(4, timeout=10)
    assert time.monotonic() - began < 10
    mgr.release(lease)
    assert os.listdir(root / "holders") == []


def test_a_lingering_lease_is_named_in_the_holders_own_timeout(tmp_path: Path, stray: list[int]) -> None:
    import sys

    from pytest_neuron.core.plan import HANDOFF_ENV
    from pytest_neuron.locks.holders import handoff_value

    mgr = manager(tmp_path / "locks", "0-1")
    lease = mgr.acquire(2, timeout=0, test="test_sloppy")
    env = {**os.environ, HANDOFF_ENV: handoff_value(mgr.root, lease.cores, lease_id=lease.lease_id)}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    stray.append(child.pid)
    # until it has exec'd: before that, /proc/<pid>/environ still shows the parent's start-up env
    wait_for(lambda: HANDOFF_ENV.encode() in _environ(child.pid), 10, "the subprocess to start")
    mgr.release(lease)
    assert lease.lingering == (child.pid,)
    with pytest.raises(LeaseTimeout) as info:
        mgr.acquire(1, timeout=0)
    assert f"released by test_sloppy are still used by pid {child.pid}" in str(info.value)
    child.kill()
    child.wait(timeout=10)
    again = mgr.acquire(2, timeout=5)  # settled: handed back once the subprocess is gone
    mgr.release(again)
    assert mgr.lingering() == []


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


SUBREAPER_PROBE = """
import os, sys, time
from pytest_neuron.host import procinfo

procinfo._PRCTL.append(getattr(procinfo, sys.argv[1])())
assert procinfo.become_subreaper()
me = os.getpid()
if os.fork() == 0:  # a child that leaves a grandchild behind
    if os.fork() == 0:
        deadline = time.monotonic() + 20
        while os.getppid() != me and time.monotonic() < deadline:  # re-parented once its parent exits
            time.sleep(0.01)
        os._exit(0 if os.getppid() == me else 1)
    os._exit(0)
os.wait()
pid, status = os.wait()  # only a subreaper can wait for its orphaned grandchild
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("lookup", ["_prctl_from_ctypes_core", "_prctl_from_ctypes"])
def test_prctl_makes_a_subreaper_through_either_lookup(lookup: str) -> None:
    """The cheap lookup (``_ctypes``, not a public module) must keep working on CPython: were it to
    fail, every process would silently pay for ``import ctypes`` (docs/performance.md)."""
    from pytest_neuron.host import procinfo

    if sys.implementation.name == "cpython":
        assert procinfo._prctl_from_ctypes_core() is not None, "_ctypes changed: prctl falls back to ctypes"
    done = subprocess.run(
        [sys.executable, "-c", SUBREAPER_PROBE, lookup],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
