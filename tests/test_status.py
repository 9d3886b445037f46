"""``pytest-neuron status`` against real leases held by real processes."""

from __future__ import annotations

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
from pytest_neuron.locks.holders import Holder, current_user
from pytest_neuron.locks.lockdir import find_lock, parse_proc_locks
from pytest_neuron.status import (
    FREE,
    HELD,
    HELD_NO_RECORD,
    STALE,
    Report,
    classify,
    collect,
    format_age,
    render_text,
    resolve_lock_dir,
    to_json,
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
def root(tmp_path: Path) -> Path:
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


def table_rows(text: str, indent: str = "") -> dict[int, list[str]]:
    """Rows of the core table at ``indent``, split on runs of two or more blanks."""
    rows: dict[int, list[str]] = {}
    for line in text.splitlines():
        if re.match(re.escape(indent) + r"\d+  ", line):
            cells = re.split(r"\s{2,}", line.strip())
            rows[int(cells[0])] = cells
    return rows


def test_held_and_free_cores(children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child, info = hold(children, root)
    code, out, err = status(capsys, "--lock-dir", str(root))
    assert (code, err) == (0, "")
    assert f"lock directory {root} (from --lock-dir)" in out
    assert "8 cores: 2 held, 6 free" in out
    rows = table_rows(out)
    assert sorted(rows) == list(range(8))
    for core in range(8):
        if core in info["physical"]:
            state, pid, user, _host, worker, _since, age, test = rows[core][1:]
            assert (state, pid, user, worker, test) == (HELD, str(child.pid), current_user(), "gw0", TEST_ID)
            assert age.endswith("s")
        else:
            assert rows[core][1:] == [FREE]
    assert child.stop() == 0
    code, out, _ = status(capsys, "--lock-dir", str(root))
    assert "8 cores: 8 free" in out


def test_json_agrees_with_table(
    children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child, info = hold(children, root)
    code, out, _ = status(capsys, "--lock-dir", str(root), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["lock_dir"] == str(root)
    assert doc["source"] == "--lock-dir"
    assert doc["waiters"] == []
    assert doc["nested"] == []
    assert [c["core"] for c in doc["cores"]] == list(range(8))
    for entry in doc["cores"]:
        if entry["core"] in info["physical"]:
            assert entry["state"] == HELD
            assert entry["lock_pid"] == child.pid
            holder = entry["holder"]
            assert (holder["pid"], holder["worker"], holder["test"]) == (child.pid, "gw0", TEST_ID)
            assert holder["physical"] == info["physical"]
        else:
            assert (entry["state"], entry["holder"]) == (FREE, None)


def test_subprocess_reads_lock_dir_from_environment(children: list[Child], root: Path) -> None:
    child, info = hold(children, root)
    env = {**os.environ, "PYTEST_NEURON_LOCK_DIR": str(root)}
    done = run_cli("status", env=env)
    assert (done.returncode, done.stderr) == (0, "")
    assert "(from environment variable PYTEST_NEURON_LOCK_DIR)" in done.stdout
    rows = table_rows(done.stdout)
    assert {core for core, row in rows.items() if row[1] == HELD} == set(info["physical"])
    assert all(rows[core][2] == str(child.pid) for core in info["physical"])


def test_sigkilled_holder_leaves_stale_record(
    children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child, info = hold(children, root)
    child.stop(signal.SIGKILL)
    code, out, _ = status(capsys, "--lock-dir", str(root))
    assert code == 0
    rows = table_rows(out)
    for core in info["physical"]:
        assert rows[core][1:3] == [f"{STALE} (pid gone)", str(child.pid)]
    assert "8 cores: 2 stale records, 6 free" in out
    _, out, _ = status(capsys, "--lock-dir", str(root), "--json")
    stale = [c for c in json.loads(out)["cores"] if c["state"] == STALE]
    assert [c["core"] for c in stale] == info["physical"]
    assert all(c["pid_gone"] is True and c["lock_pid"] is None for c in stale)


def test_lock_without_record(children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hold(children, root, 1)
    free = sorted(
        set(range(8)) - {int(c["core"]) for c in to_json(collect(root, "x"), 0)["cores"] if c["holder"]}
    )
    flocker = Child(FLOCKER, str(root / "cores" / f"core-{free[-1]:04d}.lock"))
    children.append(flocker)
    assert int(flocker.ready()) == flocker.pid
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert table_rows(out)[free[-1]][1:] == [HELD_NO_RECORD, str(flocker.pid)]


def test_waiters_in_ticket_order(
    children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hold(children, root)
    waiters: list[Child] = []
    # the smaller one first: ticket order is then not the biggest-first order waiters are served in
    for k, test in ((7, "tests/test_x.py::test_small"), (8, "tests/test_x.py::test_big")):
        waiter = lease_child(children, root, k, timeout=60, worker="gw1", test=test)
        deadline = time.monotonic() + 30
        while len(list((root / "waiters").glob("*.json"))) < len(waiters) + 1:
            assert waiter.proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.01)
        waiters.append(waiter)
    _, out, _ = status(capsys, "--lock-dir", str(root))
    lines = out.splitlines()
    at = lines.index("waiters, oldest ticket first:")
    assert re.split(r"\s{2,}", lines[at + 1].strip()) == ["PID", "WANTS", "RESERVED", "WAITING", "WHAT"]
    first, second = (re.split(r"\s{2,}", line.strip()) for line in lines[at + 2 : at + 4])
    assert (first[0], first[1], first[4]) == (str(waiters[0].pid), "7", "tests/test_x.py::test_small")
    assert (second[0], second[1], second[4]) == (str(waiters[1].pid), "8", "tests/test_x.py::test_big")
    _, out, _ = status(capsys, "--lock-dir", str(root), "--json")
    doc = json.loads(out)["waiters"]
    assert [(w["pid"], w["k"], w["alive"]) for w in doc] == [
        (waiters[0].pid, 7, True),
        (waiters[1].pid, 8, True),
    ]
    assert doc[0]["ticket"] < doc[1]["ticket"]
    for waiter in reversed(waiters):  # the newest first, or it would clear the older one's file
        waiter.stop(signal.SIGKILL)  # dies without removing its waiter file
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert f"{waiters[0].pid} (gone)" in out
    assert f"{waiters[1].pid} (gone)" in out


def test_nested_domain(children: list[Child], root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child, info = hold(children, root, nested=True)
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert f"  nested domain of holder pid {child.pid} (running), {info['nested_root']}:" in out
    inner = table_rows(out, "    ")
    assert {core: row[1] for core, row in inner.items()} == dict.fromkeys(info["nested"], HELD)
    assert all(inner[c][5] == "gw1" for c in info["nested"])
    _, out, _ = status(capsys, "--lock-dir", str(root), "--json")
    (nested,) = json.loads(out)["nested"]
    assert (nested["holder_pid"], nested["holder_alive"], nested["lock_dir"]) == (
        child.pid,
        True,
        info["nested_root"],
    )
    assert [(c["core"], c["state"], c["holder"]["test"]) for c in nested["cores"]] == [
        (core, HELD, "tests/test_x.py::test_inner") for core in info["nested"]
    ]
    assert child.stop() == 0
    _, out, _ = status(capsys, "--lock-dir", str(root))
    assert f"nested domain of holder pid {child.pid} (gone), {info['nested_root']}: 1 core, all free" in out


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


def test_missing_and_empty_lock_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing-here"
    assert status(capsys, "--lock-dir", str(missing)) == (
        0,
        f"no run has used lock directory {missing} (from --lock-dir) yet\n",
        "",
    )
    assert not missing.exists()
    _, out, _ = status(capsys, "--lock-dir", str(missing), "--json")
    assert json.loads(out) == {
        "lock_dir": str(missing),
        "source": "--lock-dir",
        "exists": False,
        "locks": "/proc/locks",
        "cores": [],
        "waiters": [],
        "nested": [],
    }
    empty = tmp_path / "empty"
    for sub in ("cores", "holders", "waiters"):
        (empty / sub).mkdir(parents=True)
    assert (
        status(capsys, "--lock-dir", str(empty))[1]
        == f"no run has used lock directory {empty} (from --lock-dir) yet\n"
    )


def test_file_instead_of_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    report = collect(root, "--lock-dir", proc_locks=root / "no-such-file")
    text = render_text(report, time.time())
    assert text.splitlines()[1].startswith("note: ")
    assert "records alone" in text
    rows = table_rows(text)
    assert {core for core, row in rows.items() if row[1] == HELD} == set(info["physical"])
    assert to_json(report, time.time())["locks"] == "records only"
    child.stop(signal.SIGKILL)
    rows = table_rows(render_text(collect(root, "x", proc_locks=root / "no-such-file"), time.time()))
    assert {core for core, row in rows.items() if row[1].startswith(STALE)} == set(info["physical"])


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


def test_render_empty_report() -> None:
    report = Report(Path("/l"), "default", None)
    assert render_text(report, 0) == "no run has used lock directory /l (from default) yet\n"


def test_lease_rows_group_cores_by_lease() -> None:
    from dataclasses import replace

    from pytest_neuron.status import CoreStatus, DomainStatus, lease_rows

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
