"""Faults of the lock layer with real processes (issue 15 §2-§4): stuck holders, planted files,
I/O errors, a replaced directory, untrusted records, impossible requests, pid namespaces."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from lease_helpers import (
    EXIT_LEASE,
    EXIT_LOCKDIR,
    EXIT_OK,
    Children,
    child_args,
    helper_command,
    read_line,
    result_of,
    wait_for,
)

from pytest_neuron.core.coreset import parse_coreset
from pytest_neuron.core.status_view import render_text, to_json
from pytest_neuron.host.procinfo import proc_state
from pytest_neuron.locks import lease as lease_module
from pytest_neuron.locks.holders import LIMITS, Holder, encode_holder
from pytest_neuron.locks.lease import LeaseManager, LeaseTimeout
from pytest_neuron.locks.lockdir import LockDirError, atomic_write
from pytest_neuron.locks.status import HELD, STALE, collect, read_report
from pytest_neuron.locks.untrusted import read_record
from pytest_neuron.locks.waiters import WaiterBoard, new_ticket

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def manager(root: Path, cores: str = "0-3") -> LeaseManager:
    from pytest_neuron.core.topology import identity_topology

    return LeaseManager(root, identity_topology(parse_coreset(cores, "test"), f"--neuron-cores={cores}"))


def one_line(message: str) -> str:
    assert "\n" not in message, message
    assert "Traceback" not in message, message
    return message


# -- §2: a process stopped inside alloc.lock ----------------------------------------------------------
def test_a_stopped_alloc_lock_holder_is_named_and_waited_for_at_most_the_bound(
    tmp_path: Path, children: Children
) -> None:
    root = tmp_path / "locks"
    holder = children.start(*child_args("mutex", root=root))
    pid = json.loads(read_line(holder, timeout=30))["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: proc_state(pid).state == "T", 10, "the holder to stop")
        # another process, with no wait at all: it must give up, not block (the bug: forever)
        asker = children.start(*child_args("try", root=root, pool="0-3", k=1, timeout=0))
        code, out, _ = children.finish(asker, timeout=60)
        assert code == 3, out
        message = one_line(result_of(out)["message"])
        assert f"held by pid {pid} (stopped)" in message, message
        assert "mutex" in message  # its command line
        report = render_text(collect(root, "test", detect=False), time.time())
        assert f"alloc.lock is held by pid {pid} (stopped)" in report, report
    finally:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
    holder.wait(timeout=10)
    mgr = manager(root)
    mgr.release(mgr.acquire(1, timeout=0))  # the kernel dropped the killed holder's alloc.lock


def test_a_fifo_at_the_old_guessable_temporary_name_does_not_hang_a_lease(
    tmp_path: Path, children: Children
) -> None:
    root = tmp_path / "locks"
    other = manager(root)
    other.release(other.acquire(4, timeout=0))  # the directories exist
    child = children.start(*child_args("cycle", root=root, pool="0-3", k=4, rounds=1), stdin=subprocess.PIPE)
    for name in [f".core-{p:04d}.json.{child.pid}.tmp" for p in range(4)]:
        os.mkfifo(root / "holders" / name)
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    assert json.loads(read_line(child, timeout=30)) == {"held": [0, 1, 2, 3]}


def test_temporary_names_are_unpredictable_and_never_opened_if_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "record.json"
    seen: set[str] = set()
    real_open = os.open

    def spy(path: str, flags: int, mode: int = 0o777) -> int:
        seen.add(str(path))
        assert flags & os.O_EXCL
        assert flags & os.O_NOFOLLOW
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    for _ in range(3):
        atomic_write(target, b"{}")
    monkeypatch.undo()
    assert len(seen) == 3
    assert not [p for p in tmp_path.iterdir() if p.name != "record.json"]


# -- §3: I/O errors on the lock directory --------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs with 40 inodes (root only)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=40,mode=0777", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> None:
    """Use up every block and inode below ``directory``."""
    n = 0
    with contextlib.suppress(OSError):
        while True:
            (directory / f"filler-{n}").write_bytes(b"x" * 4096)
            n += 1
    with contextlib.suppress(OSError):
        while True:
            (directory / f"empty-{n}").touch()
            n += 1


def test_a_full_disk_is_one_line_and_leaves_nothing_half_done(small_fs: Path) -> None:
    root = small_fs / "locks"
    mgr = manager(root)
    mgr.release(mgr.acquire(4, timeout=0))  # directories and lock files exist
    fill(small_fs)
    with pytest.raises(LockDirError) as info:
        mgr.acquire(2, timeout=0)
    message = one_line(str(info.value))
    assert "No space left on device (ENOSPC)" in message, message
    assert str(root / "holders") in message, message
    # nothing half-written: no record, no temporary file, and every core free for another process
    assert os.listdir(root / "holders") == []
    done = subprocess.run(
        helper_command(*child_args("try", root=root, pool="0-3", k=4, timeout=0)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "LockDirError" in done.stdout or done.returncode == EXIT_OK, done.stdout  # all four lockable
    if done.returncode == EXIT_LOCKDIR:
        assert "ENOSPC" in result_of(done.stdout)["message"]


def test_a_full_disk_before_the_first_lease(small_fs: Path) -> None:
    fill(small_fs)
    with pytest.raises(LockDirError) as info:
        manager(small_fs / "locks").acquire(1, timeout=0)
    message = one_line(str(info.value))
    assert "(ENOSPC)" in message, message
    assert repr(str(small_fs / "locks")) in message


def test_a_lock_file_swapped_for_a_symlink_mid_run(tmp_path: Path) -> None:
    root = tmp_path / "locks"
    mgr = manager(root)
    mgr.release(mgr.acquire(1, timeout=0))  # core 0's lock file is open; core 1's is not yet
    other = manager(root)
    other.release(other.acquire(4, timeout=0))
    (root / "cores" / "core-0001.lock").unlink()
    (root / "cores" / "core-0001.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LockDirError, match="is a symbolic link") as info:
        mgr.acquire(4, timeout=0)
    one_line(str(info.value))
    assert not (tmp_path / "elsewhere").exists()
    assert mgr.holders(range(4)) == {}


def test_a_lock_directory_removed_mid_run_stops_handing_out_leases(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "locks"
    mgr = manager(root)
    held = mgr.acquire(2, timeout=0)
    shutil.rmtree(root)
    other = manager(root)  # another run recreates it and takes every core: we cannot prevent that
    theirs = other.acquire(2, timeout=0)
    with pytest.raises(LockDirError, match="was removed while this process used it") as info:
        mgr.acquire(2, timeout=0)
    one_line(str(info.value))
    other.release(theirs)
    with contextlib.suppress(LockDirError):
        mgr.release(held)


# -- §4: requests that can never be granted ------------------------------------------------------------
@pytest.mark.parametrize(("pool", "k"), [("0-3,8-11", 8), ("4,6", 2)])
def test_a_pool_without_a_contiguous_window_fails_at_once(tmp_path: Path, pool: str, k: int) -> None:
    began = time.monotonic()
    done = subprocess.run(
        helper_command(*child_args("try", root=tmp_path / "locks", pool=pool, k=k, timeout=600)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_LEASE, done.stdout + done.stderr
    assert time.monotonic() - began < 60  # the bug: it waited out the 600 s bound
    message = one_line(result_of(done.stdout)["message"])
    assert f"cannot lease {k} cores from pool {pool}" in message, message
    assert f"no {k} consecutive cores" in message


# -- §4: records are untrusted input -------------------------------------------------------------------
GOOD = {
    "pid": 1,
    "starttime": None,
    "host": os.uname().nodename,
    "user": "u",
    "command": "c",
    "since": 1.0,
    "lease_id": "00000000000000aa",
    "cores": [0],
    "physical": [0],
}
BAD_RECORDS = [
    b'{"since": NaN}',
    json.dumps({**GOOD, "since": math.inf}).encode(),
    json.dumps({**GOOD, "since": 1e20}).encode(),
    json.dumps({**GOOD, "cores": [], "physical": []}).encode(),
    json.dumps({**GOOD, "cores": [[0]], "physical": [[0]]}).encode(),
    json.dumps({**GOOD, "pid": True}).encode(),
    json.dumps({**GOOD, "pid": 2**40}).encode(),
    json.dumps({**GOOD, "test": "x" * 100_000}).encode(),
    json.dumps({**GOOD, "physical": list(range(5000))}).encode(),
    b"[" * 100_000,
]


@pytest.mark.parametrize("content", BAD_RECORDS, ids=range(len(BAD_RECORDS)))
def test_a_planted_holder_record_is_ignored_by_lease_and_status(tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "locks"
    mgr = manager(root)
    mgr.release(mgr.acquire(1, timeout=0))
    path = root / "holders" / "00000000000000aa.json"
    path.write_bytes(content)
    assert read_record(path) is None
    lease = mgr.acquire(4, timeout=0)
    mgr.release(lease)
    report = collect(root, "test", detect=False)
    text = json.dumps(to_json(report, time.time()), allow_nan=False)  # the bug: NaN / Infinity
    assert "00000000000000aa" not in text
    render_text(report, time.time())


@pytest.mark.parametrize(
    "raw",
    [
        {"pid": 1, "starttime": None, "k": 1, "windows": [[[0]]], "reserved": [], "since": 1.0, "what": "x"},
        {"pid": 1, "starttime": None, "k": 1, "windows": [[0]], "reserved": [[0]], "since": 1.0, "what": "x"},
        {
            "pid": 1,
            "starttime": None,
            "k": 1,
            "windows": [[0]],
            "reserved": [],
            "since": math.nan,
            "what": "x",
        },
        {"pid": 1, "starttime": None, "k": 2, "windows": [[0]], "reserved": [], "since": 1.0, "what": "x"},
    ],
)
def test_a_planted_waiter_record_is_ignored(tmp_path: Path, raw: dict[str, object]) -> None:
    root = tmp_path / "locks"
    mgr = manager(root)
    mgr.release(mgr.acquire(1, timeout=0))
    (root / "waiters" / f"{new_ticket()}.json").write_text(json.dumps(raw))
    assert WaiterBoard(root / "waiters").read() == []
    held = mgr.acquire(4, timeout=0)
    with pytest.raises(LeaseTimeout):
        mgr.acquire(1, timeout=0.2)  # registers as a waiter next to the planted one
    mgr.release(held)
    collect(root, "test")


def test_a_record_without_cores_of_a_live_pid_does_not_break_the_timeout_message(tmp_path: Path) -> None:
    root = tmp_path / "locks"
    mgr = manager(root)
    held = mgr.acquire(4, timeout=0)
    (root / "holders" / "00000000000000bb.json").write_bytes(
        json.dumps({**GOOD, "pid": os.getpid(), "cores": [], "physical": []}).encode()
    )
    with pytest.raises(LeaseTimeout) as info:
        manager(root).acquire(1, timeout=0)
    one_line(str(info.value))
    mgr.release(held)


def test_a_huge_test_id_still_leaves_a_record(tmp_path: Path, children: Children) -> None:
    root = tmp_path / "locks"
    holder = children.start(*child_args("hold", root=root, pool="0-3", k=2, test="t" * 70_000))
    json.loads(read_line(holder, timeout=30))
    domain = read_report(root, "test").domain
    assert domain is not None
    states = {c.core: c for c in domain.cores}
    assert states[0].state == HELD, states  # the bug: "held (no record)"
    assert states[0].holder is not None
    assert len(states[0].holder.test or "") == LIMITS["test"]


def test_status_and_lease_agree_on_a_record_naming_a_live_unrelated_pid(
    tmp_path: Path, children: Children, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "locks"
    mgr = manager(root)
    mgr.release(mgr.acquire(4, timeout=0))
    bystander = children.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    wait_for(lambda: proc_state(bystander.pid).exists, 10, "the bystander")
    planted = Holder(
        pid=bystander.pid,
        starttime=proc_state(bystander.pid).starttime,
        host=os.uname().nodename,
        user="someone",
        command="unrelated",
        since=time.time(),
        lease_id="00000000000000cc",
        cores=(0, 1, 2, 3),
        physical=(0, 1, 2, 3),
    )
    (root / "holders" / "00000000000000cc.json").write_bytes(encode_holder(planted))
    domain = read_report(root, "test").domain
    assert domain is not None
    assert {c.state for c in domain.cores} == {STALE}
    assert "takes the core over" in render_text(collect(root, "test", detect=False), time.time())
    monkeypatch.setattr(lease_module, "TAKEOVER_WAIT", 0.5)
    lease = mgr.acquire(4, timeout=0)  # the bug: it waited for the bystander and failed
    assert lease.physical == (0, 1, 2, 3)
    mgr.release(lease)
    assert bystander.poll() is None  # nobody touched it


# -- §4: a waiter in another pid namespace -------------------------------------------------------------
def test_a_waiter_in_another_pid_namespace_is_not_removed(tmp_path: Path, children: Children) -> None:
    root = tmp_path / "locks"
    mgr = manager(root)
    held = mgr.acquire(4, timeout=0)
    argv = [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        *helper_command(*child_args("try", root=root, pool="0-3", k=4, timeout=20)),
    ]
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("cannot create a pid namespace here")
    waiter = children.popen(argv)
    board = WaiterBoard(root / "waiters")
    wait_for(lambda: len(board.read()) == 1, 30, "the namespaced waiter to register")
    for _ in range(20):  # the bug: our reader took its pid for a dead one and removed its record
        assert len(board.read()) == 1
        time.sleep(0.01)
    mgr.release(held)
    code, out, err = children.finish(waiter, timeout=60)
    assert code == EXIT_OK, out + err


# -- §3 through the plugin: a run that did not run all its tests never exits 0 ---------------------------
FILLS_THE_DISK = """
import pytest

@pytest.mark.neuron(1)
@pytest.mark.parametrize("i", range(4))
def test_fills(i, neuron_cores):
    pass
"""

#: fills the disk just before the third test's lease (outside every test: no test frees it again)
FILLING_CONFTEST = """
import contextlib, os
import pytest

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item):
    if item.name == "test_fills[2]":
        n = 0
        with contextlib.suppress(OSError):
            while True:
                with open(os.path.join(os.environ["FILL_DIR"], f"f{n}"), "wb") as f:
                    f.write(b"x" * 4096)
                n += 1
    return (yield)
"""


@pytest.mark.usefixtures("neuron_env")
@pytest.mark.parametrize("xdist", [(), ("-n", "1")], ids=["single", "n1"])
def test_a_disk_that_fills_mid_run_fails_the_run(
    small_fs: Path, tmp_path: Path, xdist: tuple[str, ...]
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_fill.py").write_text(FILLS_THE_DISK)
    (suite / "conftest.py").write_text(FILLING_CONFTEST)
    env = {**os.environ, "FILL_DIR": str(small_fs)}
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        *xdist,
        "--neuron-cores=0-3",
        "--neuron-scope=test",
        f"--neuron-lock-dir={small_fs / 'locks'}",
        f"--basetemp={tmp_path / 'bt'}",
    ]
    done = subprocess.run(argv, cwd=suite, env=env, capture_output=True, text=True, timeout=120, check=False)
    text = done.stdout + done.stderr
    # the bug: 0, with "3 passed"; now the third test's lease fails with one line, and the run stops
    # there (a lock directory that cannot be written fails every later lease the same way)
    assert done.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "INTERNALERROR" not in text, text
    assert "Traceback" not in text, text
    assert "No space left on device (ENOSPC)" in text, text
    assert "2 passed, 1 error" in text, text
    assert "pytest-neuron: no cores for the rest of this run (see the first error)" in text, text


# -- §4: umask, clock ---------------------------------------------------------------------------------
def test_records_are_readable_by_every_user_whatever_the_umask(tmp_path: Path, children: Children) -> None:
    import shlex

    root = tmp_path / "locks"
    mgr = manager(root)
    held = mgr.acquire(4, timeout=0)  # keeps the next one waiting
    helper = " ".join(shlex.quote(a) for a in helper_command(*child_args("try", root=root, pool="0-3", k=1)))
    waiter = children.popen(["sh", "-c", f"umask 077; exec {helper}"])
    board = WaiterBoard(root / "waiters")
    wait_for(lambda: len(board.read()) == 1, 30, "the waiter to register")
    for path in (root / "waiters").iterdir():
        assert path.stat().st_mode & 0o777 == 0o666, path  # the bug: 0600, unreadable to another user
    mgr.release(held)
    code, out, _ = children.finish(waiter)
    assert code == EXIT_OK, out


def test_fairness_age_is_immune_to_a_wall_clock_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    board = WaiterBoard(tmp_path)
    waiter, bell = board.register(new_ticket(), 4, ((0, 1, 2, 3),), "big")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # the wall clock stepped back an hour
    time.sleep(0.05)
    (read,) = board.read()
    assert 0.04 <= read.waited() < 60  # the bug: negative, so the big waiter never aged and never reserved
    assert new_ticket() > waiter.ticket  # and tickets still sort by arrival
    board.remove(waiter.ticket, bell)


def test_a_lock_file_another_user_cannot_open_is_one_line() -> None:
    from lease_helpers import other_user, run_as, shared_tmpdir

    user, why = other_user("nobody")
    if user is None:
        pytest.skip(f"cannot run a child as another uid: {why}")
    with shared_tmpdir() as shared:
        root = shared / "locks"
        mgr = manager(root)
        mgr.release(mgr.acquire(4, timeout=0))
        (root / "cores" / "core-0002.lock").chmod(0o600)  # root's, as a run with umask 077 would leave it
        code, out, err = run_as(user, *child_args("try", root=root, pool="0-3", k=4, timeout=0), cwd=shared)
    assert code == EXIT_LOCKDIR, out + err  # the bug: a PermissionError traceback
    message = one_line(result_of(out)["message"])
    assert f"cannot open {str(root / 'cores' / 'core-0002.lock')!r}" in message, message
    assert "Permission denied (EACCES)" in message
