"""``pytest-neuron status`` against real leases held by real processes, real pytest runs and a
foreign process holding a (fake) Neuron device; the pure view and its JSON schema."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pytest_neuron
from pytest_neuron.__main__ import main
from pytest_neuron.core.status_view import (
    SCHEMA_VERSION,
    ForeignHolder,
    LeaseRow,
    Run,
    View,
    WaitRow,
    format_age,
    render_text,
    to_json,
)
from pytest_neuron.locks.holders import Holder, current_user
from pytest_neuron.locks.proclocks import find_lock, parse_proc_locks
from pytest_neuron.locks.status import (
    FREE,
    HELD,
    HELD_NO_RECORD,
    STALE,
    StatusError,
    classify,
    collect,
    resolve_lock_dir,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

TEST_ID = "tests/test_x.py::test_y"

CHILD = r"""
import json, os, sys
from pathlib import Path
from pytest_neuron.locks.lease import LeaseManager
from pytest_neuron.host.procinfo import my_starttime
from pytest_neuron.core.topology import identity_topology

args = json.loads(sys.argv[1])
root = Path(args["root"])
manager = LeaseManager(root, identity_topology(frozenset(range(8)), "--neuron-cores"))
lease = manager.acquire(args["k"], timeout=args["timeout"], worker=args["worker"], test=args["test"])
info = {"pid": os.getpid(), "physical": list(lease.physical)}
if args["nested"]:
    inner_root = root / "nested" / f"{os.getpid()}-{my_starttime()}"
    inner = LeaseManager(inner_root, identity_topology(frozenset(lease.cores), "PYTEST_NEURON_LEASE"))
    inner_lease = inner.acquire(1, timeout=5, worker="gw1", test="tests/test_x.py::test_inner")
    info["nested"] = list(inner_lease.physical)
    info["nested_root"] = str(inner_root)
print(json.dumps(info), flush=True)
sys.stdin.readline()
if args["nested"]:
    inner.release(inner_lease)
manager.release(lease)
"""

FLOCKER = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print(os.getpid(), flush=True)
sys.stdin.readline()
"""


class Child:
    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def ready(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            assert self.proc.stderr is not None
            pytest.fail(f"child exited {self.proc.returncode}: {self.proc.stderr.read()}")
        return line

    def stop(self, sig: int | None = None) -> int:
        if self.proc.returncode is None:
            if sig is not None:
                self.proc.send_signal(sig)
            else:
                assert self.proc.stdin is not None
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
        self.proc.communicate(timeout=10)
        return self.proc.returncode


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.proc.returncode is None:
            child.proc.kill()
        child.proc.communicate(timeout=10)


@pytest.fixture
def root(tmp_path: Path, neuron_env: None) -> Path:
    """A lock directory; host detection finds nothing (no neuron-ls, an empty host root)."""
    return tmp_path / "locks"


def lease_child(children: list[Child], root: Path, k: int, **kw: Any) -> Child:
    args = {"root": str(root), "k": k, "timeout": 5, "worker": "gw0", "test": TEST_ID, "nested": False, **kw}
    child = Child(CHILD, json.dumps(args))
    children.append(child)
    return child


def hold(children: list[Child], root: Path, k: int = 2, **kw: Any) -> tuple[Child, dict[str, Any]]:
    """A child holding ``k`` cores, after an earlier run has created all 8 lock files."""
    if not (root / "cores").exists():
        warm = lease_child(children, root, 8)
        warm.ready()
        assert warm.stop() == 0
    child = lease_child(children, root, k, **kw)
    info: dict[str, Any] = json.loads(child.ready())
    return child, info


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest_neuron", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def lease_table(text: str, indent: str = "  ") -> dict[str, list[str]]:
    """Rows of the lease tables at ``indent`` by their CORES cell, split on runs of two or more blanks."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if re.match(re.escape(indent) + r"(\d[\d,-]*|wants \d+)  ", line):
            cells = re.split(r"\s{2,}", line.strip())
            rows[cells[0]] = cells
    return rows


def coreset(cores: list[int]) -> str:
    from pytest_neuron.core.coreset import format_coreset

    return format_coreset(cores)


def test_one_row_per_lease_and_free_cores_collapsed(
    children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child, info = hold(children, root, 4)
    code, out, err = status(capsys, "--lock-dir", str(root))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"lock directory {root} (from --lock-dir)"
    assert lines[1] == "pool 0-7 (8 cores) from the cores this lock directory has seen"
    assert lines[2] == "4 held, 4 free; 1 run, 0 waiting requests"
    held = coreset(info["physical"])
    rows = lease_table(out)
    assert list(rows) == [held]  # one row for the 4-core lease, not four
    state, pid, _since, age, test = rows[held][1:]
    assert (state, pid, test) == (HELD, str(child.pid), TEST_ID)
    assert age.endswith("s")
    free = sorted(set(range(8)) - set(info["physical"]))
    assert f"free: {coreset(free)}" in lines
    assert all(len(line) <= 80 for line in lines[1:])
    # the totals are over the pool when one is given, not over the cores ever locked
    _, out, _ = status(capsys, "--lock-dir", str(root), "--cores", "0-31")
    assert "pool 0-31 (32 cores) from --cores=0-31\n4 held, 28 free;" in out
    assert child.stop() == 0
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert "4 held" not in out
    assert "0 held, 8 free; 0 runs, 0 waiting requests" in out
    assert "free: 0-7" in out.splitlines()


def test_json_schema_agrees_with_table(
    children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child, info = hold(children, root)
    code, out, _ = status(capsys, "--lock-dir", str(root), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert (doc["lock_dir"], doc["lock_dir_source"], doc["lock_dir_exists"]) == (
        str(root),
        "--lock-dir",
        True,
    )
    assert doc["lock_state_source"] == "/proc/locks"
    assert doc["pool"] == {
        "cores": "0-7",
        "core_list": list(range(8)),
        "source": "the cores this lock directory has seen",
    }
    assert doc["totals"] == {
        "pool_cores": 8,
        "held": 2,
        "held_without_record": 0,
        "stale": 0,
        "free": 6,
        "held_outside_pool": 0,
        "runs": 1,
        "waiting_requests": 0,
        "foreign_holders": 0,
    }
    (lease,) = doc["leases"]
    assert lease["physical_cores"] == coreset(info["physical"])
    assert lease["physical_core_list"] == info["physical"]
    assert (lease["state"], lease["holder_pid"], lease["holder_exited"]) == (HELD, child.pid, False)
    assert (lease["worker"], lease["test"], lease["user"]) == ("gw0", TEST_ID, current_user())
    assert lease["run"] == f"{os.uname().nodename}:{child.pid}"
    (run,) = doc["runs"]
    assert (run["run"], run["pid"], run["leases"], run["waiting_requests"]) == (lease["run"], child.pid, 1, 0)
    assert doc["waiting_requests"] == []
    assert doc["nested_domains"] == []
    assert doc["foreign_holders"] == []

    # every key is a word or words, never a letter
    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        if isinstance(node, list):
            return {k for v in node for k in keys(v)}
        return set()

    assert all(len(key) > 2 for key in keys(doc)), sorted(k for k in keys(doc) if len(k) <= 2)


def test_subprocess_reads_lock_dir_from_environment(children: list[Child], root: Path) -> None:
    child, info = hold(children, root)
    env = {**os.environ, "PYTEST_NEURON_LOCK_DIR": str(root)}
    done = run_cli("status", env=env)
    assert (done.returncode, done.stderr) == (0, "")
    assert "(from environment variable PYTEST_NEURON_LOCK_DIR)" in done.stdout
    rows = lease_table(done.stdout)
    assert rows[coreset(info["physical"])][1:3] == [HELD, str(child.pid)]


def test_sigkilled_holder_leaves_stale_record(
    children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child, info = hold(children, root)
    child.stop(signal.SIGKILL)
    code, out, _ = status(capsys, "--lock-dir", str(root))
    assert code == 0
    assert "stale records (their holders exited without cleaning up):" in out
    row = lease_table(out)[coreset(info["physical"])]
    assert row[1:3] == [f"{STALE} (pid gone)", str(child.pid)]
    assert "0 held, 2 stale, 6 free; 0 runs" in out
    _, out, _ = status(capsys, "--lock-dir", str(root), "--json")
    (stale,) = json.loads(out)["leases"]
    assert (stale["state"], stale["holder_exited"], stale["run"]) == (STALE, True, None)
    assert stale["physical_core_list"] == info["physical"]


def test_lock_without_record(children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, info = hold(children, root, 1)
    free = sorted(set(range(8)) - set(info["physical"]))
    flocker = Child(FLOCKER, str(root / "cores" / f"core-{free[-1]:04d}.lock"))
    children.append(flocker)
    assert int(flocker.ready()) == flocker.pid
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert lease_table(out)[str(free[-1])][1:3] == [HELD_NO_RECORD, str(flocker.pid)]
    assert "2 held (1 without a record)" in out
    assert f"run {flocker.pid} by {current_user()}@" in out  # its run, from /proc


def test_waiters_with_user_and_run(
    children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hold(children, root)
    waiters: list[Child] = []
    for k, test in ((7, "tests/test_x.py::test_small"), (8, "tests/test_x.py::test_big")):
        waiter = lease_child(children, root, k, timeout=60, worker="gw1", test=test)
        deadline = time.monotonic() + 30
        while len(list((root / "waiters").glob("*.json"))) < len(waiters) + 1:
            assert waiter.proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.01)
        waiters.append(waiter)
    _, out, _ = status(capsys, "--lock-dir", str(root))
    rows = lease_table(out)
    assert rows["wants 7"][2] == str(waiters[0].pid)
    assert rows["wants 8"][2] == str(waiters[1].pid)
    assert rows["wants 8"][-1] == "tests/test_x.py::test_big"
    for waiter in waiters:  # each waits in a run of its own (its own process), named with its user
        assert f"run {waiter.pid} by {current_user()}@{os.uname().nodename}: python -c " in out
    _, out, _ = status(capsys, "--lock-dir", str(root), "--json")
    doc = json.loads(out)
    got = [(w["pid"], w["cores_wanted"], w["alive"], w["user"], w["for"]) for w in doc["waiting_requests"]]
    assert got == [
        (waiters[0].pid, 7, True, current_user(), "tests/test_x.py::test_small"),
        (waiters[1].pid, 8, True, current_user(), "tests/test_x.py::test_big"),
    ]
    assert [w["run"] for w in doc["waiting_requests"]] == [f"{os.uname().nodename}:{w.pid}" for w in waiters]
    assert doc["waiting_requests"][0]["ticket"] < doc["waiting_requests"][1]["ticket"]
    assert doc["totals"]["waiting_requests"] == 2
    assert doc["totals"]["runs"] == 3
    for waiter in waiters:  # stopped first: a live waiter removes the records of dead ones
        os.kill(waiter.pid, signal.SIGSTOP)
    for waiter in waiters:
        waiter.stop(signal.SIGKILL)  # dies without removing its waiter file
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert f"{waiters[0].pid} (gone)" in out
    assert f"{waiters[1].pid} (gone)" in out
    assert "run unknown (its process cannot be seen from here):" in out


def test_nested_domain(children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child, info = hold(children, root, nested=True)
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert f"nested domain of holder pid {child.pid} (running), {info['nested_root']}:" in out
    inner = lease_table(out, "    ")
    assert inner[coreset(info["nested"])][1] == HELD
    assert inner[coreset(info["nested"])][-1] == "tests/test_x.py::test_inner"
    _, out, _ = status(capsys, "--lock-dir", str(root), "--json")
    (nested,) = json.loads(out)["nested_domains"]
    assert (nested["holder_pid"], nested["holder_alive"], nested["lock_dir"]) == (
        child.pid,
        True,
        info["nested_root"],
    )
    assert [(r["physical_core_list"], r["state"], r["test"]) for r in nested["leases"]] == [
        (info["nested"], HELD, "tests/test_x.py::test_inner")
    ]
    assert child.stop() == 0
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert f"nested domain of holder pid {child.pid} (gone), {info['nested_root']}: nothing held" in out


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    found = {}
    for path in [directory, *directory.rglob("*")]:
        st = path.lstat()
        found[str(path)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def _my_locks() -> set[str]:
    mine = str(os.getpid())
    return {line for line in Path("/proc/locks").read_text().splitlines() if line.split()[4:5] == [mine]}


def test_status_takes_no_lock_and_writes_nothing(
    children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hold(children, root, nested=True)
    # A waiter killed while waiting leaves its file (a live one may rewrite it); status must not touch it.
    waiter = lease_child(children, root, 8, timeout=60, test="tests/test_x.py::test_big")
    while not list((root / "waiters").glob("*.json")):
        assert waiter.proc.poll() is None
        time.sleep(0.01)
    waiter.stop(signal.SIGKILL)
    before, locks_before = _snapshot(root), _my_locks()
    events: list[tuple[str, tuple[Any, ...]]] = []
    watching = [True]

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if watching and (event == "open" or event.startswith(("fcntl.", "os."))):
            events.append((event, args))

    sys.addaudithook(audit)  # hooks cannot be removed; this one goes quiet after the call
    try:
        code, out, _ = status(capsys, "--lock-dir", str(root))
        status(capsys, "--lock-dir", str(root), "--json")
    finally:
        watching.clear()
    assert code == 0
    assert "held" in out
    assert f"{waiter.pid} (gone)" in out
    assert not [e for e in events if e[0].startswith("fcntl.")]
    write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    opened = [args for event, args in events if event == "open"]
    assert any(str(args[0]).endswith(".json") for args in opened)
    assert not [
        args for args in opened if (isinstance(args[2], int) and args[2] & write) or "w" in str(args[1])
    ]
    assert not [args for args in opened if str(args[0]).endswith(".lock")]
    changing = {"os.remove", "os.unlink", "os.rename", "os.replace", "os.mkdir", "os.chmod", "os.truncate"}
    assert not [e for e in events if e[0] in changing]
    assert _snapshot(root) == before
    assert _my_locks() == locks_before
    done = run_cli("status", "--lock-dir", str(root))
    assert done.returncode == 0
    assert _snapshot(root) == before


def test_missing_and_empty_lock_dir(
    tmp_path: Path, neuron_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing-here"
    code, out, err = status(capsys, "--lock-dir", str(missing))
    assert (code, err) == (0, "")
    assert (
        out.splitlines()[0]
        == f"lock directory {missing} (from --lock-dir) does not exist yet: no run has used it"
    )
    assert not missing.exists()
    _, out, _ = status(capsys, "--lock-dir", str(missing), "--json")
    doc = json.loads(out)
    assert (doc["schema_version"], doc["lock_dir_exists"], doc["leases"], doc["runs"]) == (2, False, [], [])
    empty = tmp_path / "empty"
    for sub in ("cores", "holders", "waiters"):
        (empty / sub).mkdir(parents=True)
    _, out, _ = status(capsys, "--lock-dir", str(empty), "--cores", "0-3")
    assert out.splitlines()[1:3] == [
        "pool 0-3 (4 cores) from --cores=0-3",
        "0 held, 4 free; 0 runs, 0 waiting requests",
    ]


def test_bad_cores_is_one_line(tmp_path: Path, neuron_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = status(capsys, "--lock-dir", str(tmp_path), "--cores", "3-1")
    assert (code, out) == (2, "")
    assert err.startswith("pytest-neuron status: error: ")
    assert err.count("\n") == 1
    assert "--cores" in err
    assert "'3-1'" in err


def test_file_instead_of_directory(
    tmp_path: Path, neuron_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a-file"
    path.write_text("")
    code, out, err = status(capsys, "--lock-dir", str(path))
    assert (code, out) == (2, "")
    assert (
        err
        == f"pytest-neuron status: error: lock directory {str(path)!r} (from --lock-dir) is not a directory\n"
    )
    done = run_cli("status", "--lock-dir", str(path))
    assert (done.returncode, done.stdout, done.stderr) == (2, "", err)


def test_without_proc_locks_records_alone(children: list[Child], root: Path) -> None:
    child, info = hold(children, root)
    view = collect(root, "--lock-dir", proc_locks=root / "no-such-file", detect=False)
    text = render_text(view, time.time())
    assert text.splitlines()[1].startswith("note: ")
    assert "records alone" in text
    assert lease_table(text)[coreset(info["physical"])][1] == HELD
    assert to_json(view, time.time())["lock_state_source"] == "holder records only"
    child.stop(signal.SIGKILL)
    text = render_text(collect(root, "x", proc_locks=root / "no-such-file", detect=False), time.time())
    assert lease_table(text)[coreset(info["physical"])][1].startswith(STALE)


def test_usage_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: pytest-neuron" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "status" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"pytest-neuron {pytest_neuron.__version__}\n"
    assert main(["status", "--bogus"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    done = run_cli("--version")
    assert done.stdout == f"pytest-neuron {pytest_neuron.__version__}\n"


# -- the pure part ---------------------------------------------------------------------------------------
def test_parse_proc_locks() -> None:
    text = (
        "1: FLOCK  ADVISORY  WRITE 12345 00:2f:123456 0 EOF\n"
        "1: -> FLOCK  ADVISORY  WRITE 999 00:2f:123456 0 EOF\n"
        "2: POSIX  ADVISORY  WRITE 777 fd:01:42 0 EOF\n"
        "3: OFDLCK ADVISORY  READ  -1 fd:01:43 0 EOF\n"
        "4: FLOCK  ADVISORY  WRITE 0 103:0a:7 0 EOF\n"
        "garbage\n"
    )
    assert parse_proc_locks(text) == {(0, 0x2F, 123456): 12345, (0x103, 0x0A, 7): 0}


def test_find_lock_matches_device_when_it_can() -> None:
    table = {(0, 0x2F, 100): 11, (8, 1, 200): 22}
    assert find_lock(table, os.makedev(0, 0x2F), 100) == 11
    assert find_lock(table, os.makedev(0, 0x2F), 200) is None  # same device seen: inode 200 is elsewhere
    assert find_lock(table, os.makedev(0, 0x30), 200) == 22  # device never seen (overlayfs): inode alone
    assert find_lock(table, os.makedev(0, 0x30), 300) is None


def _holder(pid: int = 42) -> Holder:
    return Holder(pid=pid, starttime=1, host="h", user="u", command="pytest", since=0.0, lease_id="x")


@pytest.mark.parametrize(
    ("record", "lock_pid", "gone", "known", "state"),
    [
        (True, 42, False, True, HELD),
        (False, 42, None, True, HELD_NO_RECORD),
        (False, None, None, True, FREE),
        (True, None, True, True, STALE),
        (True, None, False, True, STALE),
        (True, 43, True, True, HELD_NO_RECORD),  # a takeover before the new record
        (True, None, False, False, HELD),
        (True, None, True, False, STALE),
        (False, None, None, False, FREE),
    ],
)
def test_classify(record: bool, lock_pid: int | None, gone: bool | None, known: bool, state: str) -> None:
    assert classify(3, _holder() if record else None, lock_pid, gone, known=known).state == state


def test_format_age() -> None:
    assert [format_age(s) for s in (-1, 3.25, 125, 7260, 90000)] == [
        "0.0s",
        "3.2s",
        "2m05s",
        "2h01m",
        "1d01h",
    ]


def test_resolve_lock_dir() -> None:
    assert resolve_lock_dir("/x", {"PYTEST_NEURON_LOCK_DIR": "/y"}) == (Path("/x"), "--lock-dir")
    assert resolve_lock_dir(None, {"PYTEST_NEURON_LOCK_DIR": "/y"}) == (
        Path("/y"),
        "environment variable PYTEST_NEURON_LOCK_DIR",
    )
    assert resolve_lock_dir(None, {"PYTEST_NEURON_LOCK_DIR": " "}) == (Path("/tmp/pytest-neuron"), "default")


def test_render_missing_directory() -> None:
    view = View("/l", "default", False, (), "nothing: no run has used it")
    assert (
        render_text(view, 0).splitlines()[0]
        == "lock directory /l (from default) does not exist yet: no run has used it"
    )


def _view_of_two_runs(now: float) -> View:
    runs = {
        "vm:100": Run(
            "vm:100", 100, "vm", "ann", "python -m pytest -n 2 --neuron-cores=0-15 " + "-k x " * 30
        ),
        "vm:200": Run("vm:200", 200, "vm", "bob", "pytest --neuron-scope=test"),
    }
    long_test = "tests/test_models.py::TestBig::test_tp8_" + "x" * 60
    leases = (
        LeaseRow((0, 1, 2, 3), HELD, 101, "vm:100", "ann", "vm", worker="gw0", since=now - 30),
        LeaseRow((4, 5, 6, 7), HELD, 102, "vm:100", "ann", "vm", worker="gw1", since=now - 30),
        LeaseRow((8, 9), HELD, 200, "vm:200", "bob", "vm", test=long_test, since=now - 2),
        LeaseRow(
            (10, 11, 12, 13, 14, 15), HELD, 100, "vm:100", "ann", "vm", slices=("gw2 10-12", "gw3 13-15")
        ),
    )
    waiters = (
        WaitRow("t1", 201, 4, (0, 1, 2, 3), now - 5, "tests/test_a.py::test_b", True, "vm:200", "bob"),
    )
    foreign = (ForeignHolder(300, "eve", "python serve.py", ("/dev/neuron9",), None, "/proc/*/fd"),)
    return View("/tmp/l", "default", True, tuple(range(20)), "neuron-ls", leases, waiters, runs, foreign)


def test_render_groups_runs_and_fits_80_columns() -> None:
    now = 1_800_000_000.0
    text = render_text(_view_of_two_runs(now), now, width=80)
    lines = text.splitlines()
    assert lines[1:3] == [
        "pool 0-19 (20 cores) from neuron-ls",
        "16 held, 4 free; 2 runs, 1 waiting request, 1 foreign holder",
    ]
    first = next(
        i for i, line in enumerate(lines) if line.startswith("run 100 by ann@vm: python -m pytest -n 2")
    )
    second = next(
        i for i, line in enumerate(lines) if line.startswith("run 200 by bob@vm: pytest --neuron-scope=test")
    )
    assert first < second
    rows = lease_table(text)
    assert rows["0-3"][-1] == "gw0"
    assert rows["4-7"][-1] == "gw1"
    assert rows["10-15"][-1] == "reserved for the run: gw2 10-12, gw3 13-15"
    assert rows["wants 4"][1:3] == ["waiting, reserves 0-3", "201"]
    assert "free: 16-19" in lines
    assert "  300  eve   /dev/neuron9  ?      python serve.py" in lines
    long_lines = [line for line in lines if len(line) > 80]
    assert all("tests/test_models.py" in line for line in long_lines), long_lines  # only the full test id
    doc = to_json(_view_of_two_runs(now), now)
    assert [r["run"] for r in doc["runs"]] == ["vm:100", "vm:200"]
    assert doc["leases"][3]["reservation"] == ["gw2 10-12", "gw3 13-15"]
    assert doc["foreign_holders"][0]["devices"] == ["/dev/neuron9"]
    assert doc["totals"]["held"] == 16
    assert doc["free_cores"] == "16-19"


# -- two real runs and a foreign holder ----------------------------------------------------------------
RUN_A = """
import os, subprocess, sys, time
import pytest

def wait_for_flag():
    deadline = time.monotonic() + 90
    while not os.path.exists(os.environ["VIEW_FLAG"]) and time.monotonic() < deadline:
        time.sleep(0.05)

@pytest.mark.neuron(4)
def test_hold_with_device_child():
    # a child of a holder with the device open belongs to the run: it is no foreign holder
    code = "import sys; f = open(sys.argv[1], 'rb'); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code, os.environ["VIEW_DEVICE"]], stdin=subprocess.PIPE)
    wait_for_flag()
    child.communicate(b"", timeout=30)

@pytest.mark.neuron(4)
def test_hold():
    wait_for_flag()
"""

RUN_B = """
import pytest

@pytest.mark.neuron(2)
def test_waits_for_two():
    pass
"""

FOREIGN = "import sys, time; f = open(sys.argv[1], 'rb'); print('open', flush=True); time.sleep(300)"


@pytest.fixture
def procs() -> Iterator[Any]:
    from e2e_helpers import Procs

    started = Procs()
    yield started
    started.cleanup()


def status_json(root: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    done = run_cli("status", "--lock-dir", str(root), "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def wait_until(predicate: Any, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_concurrent_runs_and_a_foreign_holder(
    tmp_path: Path, root: Path, procs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import assert_outcomes

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "test_a.py").write_text(RUN_A)
    (tmp_path / "b" / "test_b.py").write_text(RUN_B)
    devices = tmp_path / "dev"
    devices.mkdir()
    for n in (0, 1):
        (devices / f"neuron{n}").write_bytes(b"")
    flag = tmp_path / "release"
    env = {
        **os.environ,
        "VIEW_FLAG": str(flag),
        "VIEW_DEVICE": str(devices / "neuron1"),
        "PYTEST_NEURON_DEVICE_PREFIX": str(devices / "neuron"),
    }
    common = ("--neuron-cores=0-7", f"--neuron-lock-dir={root}", "-q")
    run_a = procs.start_pytest("-n", "2", *common, cwd=tmp_path / "a", env=env)

    def slices(doc: dict[str, Any]) -> list[dict[str, Any]]:
        """Run A's controller reserves the cores; its workers lease their slices in its nested domain."""
        return [lease for nested in doc["nested_domains"] for lease in nested["leases"]]

    wait_until(lambda: len(slices(status_json(root, env))) == 2, "run A's two worker slices")
    run_b = procs.start_pytest(
        *common, "--neuron-scope=test", "--neuron-wait-timeout=90", cwd=tmp_path / "b", env=env
    )
    foreign = procs.start([sys.executable, "-c", FOREIGN, str(devices / "neuron0")], cwd=tmp_path, env=env)
    assert foreign.stdout is not None
    assert foreign.stdout.readline() == "open\n"
    wait_until(lambda: len(status_json(root, env)["waiting_requests"]) == 1, "run B's waiting request")
    wait_until(lambda: "device child" in _device_children(devices), "run A's test child opening a device")

    doc = status_json(root, env)
    here = os.uname().nodename
    assert doc["totals"]["runs"] == 2
    assert doc["totals"]["held"] == 8
    assert doc["totals"]["free"] == 0
    run_ids = [r["run"] for r in doc["runs"]]
    assert run_ids == [f"{here}:{run_a.pid}", f"{here}:{run_b.pid}"]
    first, second = doc["runs"]
    assert first["command"].startswith("python -m pytest -p no:cacheprovider -p no:hypothesispytest -n 2")
    assert "site-packages" not in first["command"]
    assert second["command"].startswith("python -m pytest ")
    assert (first["leases"], first["waiting_requests"], second["leases"], second["waiting_requests"]) == (
        1,
        0,
        0,
        1,
    )
    (reservation,) = doc["leases"]
    assert (reservation["holder_pid"], reservation["physical_cores"]) == (run_a.pid, "0-7")
    assert sorted(lease["worker"] for lease in slices(doc)) == ["gw0", "gw1"]
    assert {lease["run"] for lease in [*doc["leases"], *slices(doc)]} == {first["run"]}
    (waiting,) = doc["waiting_requests"]
    assert (waiting["pid"], waiting["user"], waiting["run"]) == (run_b.pid, current_user(), second["run"])
    assert waiting["for"] == "test_b.py::test_waits_for_two"
    (holder,) = doc["foreign_holders"]  # not run A's device child
    assert (holder["pid"], holder["source"]) == (foreign.pid, "/proc/*/fd")
    assert holder["devices"] == [str(devices / "neuron0")]
    assert holder["command"].startswith("python -c ")

    done = run_cli("status", "--lock-dir", str(root), env={**env, "COLUMNS": "80"})
    text = done.stdout
    assert f"run {run_a.pid} by {current_user()}@{here}: python -m pytest" in text
    assert f"run {run_b.pid} by {current_user()}@{here}: python -m pytest" in text
    assert text.index(f"run {run_a.pid} ") < text.index(f"run {run_b.pid} ")
    assert "foreign holders: a Neuron device open outside pytest-neuron (from /proc/*/fd):" in text
    assert re.search(rf"^  {foreign.pid}\s+{current_user()}\s+{re.escape(str(devices)[:20])}", text, re.M)

    flag.write_text("")
    assert_outcomes(procs.finish(run_a), passed=2)
    assert_outcomes(procs.finish(run_b), passed=1)


def _device_children(devices: Path) -> str:
    """``device child`` once some process other than this one has ``devices/neuron1`` open."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{name}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{name}/fd/{fd}") == str(devices / "neuron1"):
                            return "device child"
    return ""


def test_foreign_holders_from_neuron_ls(tmp_path: Path, root: Path) -> None:
    listing = [
        {
            "neuron_device": 0,
            "nc_count": 2,
            "neuroncore_ids": [0, 1],
            "neuron_processes": [{"pid": os.getpid(), "command": "python serve.py"}],
        },
        {"neuron_device": 1, "nc_count": 2, "neuroncore_ids": [2, 3], "neuron_processes": []},
    ]
    fake = tmp_path / "neuron-ls"
    fake.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(listing))})\n")
    fake.chmod(0o755)
    env = {**os.environ, "PYTEST_NEURON_NEURON_LS": str(fake)}
    done = run_cli("status", "--lock-dir", str(root), "--json", env=env)
    doc = json.loads(done.stdout)
    assert doc["pool"] == {"cores": "0-3", "core_list": [0, 1, 2, 3], "source": "neuron-ls"}
    (holder,) = doc["foreign_holders"]
    assert holder == {
        "pid": os.getpid(),
        "user": current_user(),
        "command": "python serve.py",
        "devices": ["neuron0"],
        "physical_cores": "0-1",
        "source": "neuron-ls",
    }


def test_lease_rows_group_cores_by_lease() -> None:
    from pytest_neuron.core.record import replace
    from pytest_neuron.locks.status import CoreStatus, DomainStatus, lease_rows

    a, b = replace(_holder(42), lease_id="a" * 16), replace(_holder(43), lease_id="b" * 16)
    cores = (
        CoreStatus(0, HELD, a, 42, False),
        CoreStatus(1, HELD, a, 42, False),
        CoreStatus(2, STALE, b, None, True, survivors=(99,)),
        CoreStatus(3, HELD_NO_RECORD, None, 7),
        CoreStatus(4, FREE),
    )
    rows = lease_rows(DomainStatus(Path("/x"), cores, ()))
    assert [(r.holder.lease_id[0], r.state, r.cores, r.survivors) for r in rows] == [
        ("a", HELD, (0, 1), ()),
        ("b", STALE, (2,), (99,)),
    ]


def test_an_unreadable_waiters_directory_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "locks"
    for sub in ("cores", "holders"):
        (root / sub).mkdir(parents=True)
    (root / "waiters").write_text("not a directory")
    code, out, err = status(capsys, "--lock-dir", str(root))
    assert (code, out) == (2, "")
    assert err.startswith("pytest-neuron status: error: cannot list ")
    assert "waiters" in err
    assert "(ENOTDIR)" in err
    assert err.count("\n") == 1


def test_the_lock_dir_follows_the_runs_grammar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_lock_dir(None, {"PYTEST_NEURON_LOCK_DIR": "~/locks"}) == (
        tmp_path / "locks",
        "environment variable PYTEST_NEURON_LOCK_DIR",
    )
    assert resolve_lock_dir("/x/y/", {}) == (Path("/x/y"), "--lock-dir")
    with pytest.raises(StatusError, match=r"'relative/locks'.*from --lock-dir.*absolute directory path"):
        resolve_lock_dir("relative/locks", {})
