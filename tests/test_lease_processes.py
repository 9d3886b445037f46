"""Leases across real processes: exclusion, crash takeover, deadlock freedom, fairness, nesting, uids.

The children are ``python tests/lease_helpers.py <command>`` processes (fresh
interpreters, never forks of this one); an independent checker reads their
shared log and looks for two holders of one physical core at one time.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from subprocess import PIPE
from typing import TYPE_CHECKING

import pytest
from lease_helpers import (
    EXIT_NO_HANDOFF,
    EXIT_OK,
    EXIT_TIMEOUT,
    HELPER,
    Children,
    Interval,
    OtherUser,
    append_line,
    child_args,
    find_overlaps,
    helper_command,
    other_user,
    read_intervals,
    read_line,
    result_of,
    run_as,
    shared_tmpdir,
    wait_for,
)

from pytest_neuron.core.coreset import parse_coreset
from pytest_neuron.core.plan import HANDOFF_ENV
from pytest_neuron.core.topology import identity_topology
from pytest_neuron.host.procinfo import is_running, proc_state
from pytest_neuron.locks.holders import Holder, encode_holder, handoff_value
from pytest_neuron.locks.lease import TAKEOVER_WAIT, LeaseManager
from pytest_neuron.locks.lockdir import atomic_write

if TYPE_CHECKING:
    from pathlib import Path


def manager(root: Path, cores: str) -> LeaseManager:
    return LeaseManager(root, identity_topology(parse_coreset(cores, "test"), f"--neuron-cores={cores}"))


def fake_holder(pid: int, starttime: int | None, cores: tuple[int, ...]) -> Holder:
    """A record of ``pid`` holding ``cores``, as if written by that process."""
    return Holder(
        pid=pid,
        starttime=starttime,
        host=os.uname().nodename,  # what holders.py compares with (gethostname() on Linux)
        user="someone",
        command="python held_by_someone.py",
        since=time.time(),
        lease_id=f"{pid:016x}",
        cores=cores,
        physical=cores,
    )


def plant(root: Path, holder: Holder) -> Path:
    """Write ``holder``'s record where its lease's record goes."""
    path = root / "holders" / f"{holder.lease_id}.json"
    atomic_write(path, encode_holder(holder))
    return path


def assert_no_overlap(intervals: list[Interval]) -> None:
    overlaps = find_overlaps(intervals)
    assert not overlaps, f"{len(overlaps)} overlapping holds, first: {overlaps[0]}"


# -- the checker checks -----------------------------------------------------------------


def test_checker_finds_two_holders_of_one_core(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    for pid, physical, start, end in [
        (1, [0, 1], 0.0, 1.0),
        (2, [2, 3], 0.5, 1.5),  # disjoint cores: fine
        (3, [0], 1.0, 2.0),  # starts exactly when pid 1 ended: fine
        (4, [3, 4], 1.4, 1.6),  # holds 3 while pid 2 does
    ]:
        record = {"pid": pid, "lease_id": str(pid), "cores": physical, "physical": physical}
        append_line(log, {**record, "start": start, "end": end})
    overlaps = find_overlaps(read_intervals(log))
    assert [(o.core, o.first.pid, o.second.pid) for o in overlaps] == [(3, 2, 4)]
    assert "physical core 3: pid 2" in str(overlaps[0])


def test_appended_lines_from_many_processes_stay_whole(tmp_path: Path, children: Children) -> None:
    # Four children append 50 lines each to one log; every line must parse.
    log = tmp_path / "log.jsonl"
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
        "from lease_helpers import append_line\n"
        "for i in range(50):\n"
        "    append_line(Path(sys.argv[2]), {'kind': 'x', 'pid': os.getpid(), 'pad': 'y' * 3000})"
    )
    procs = [children.popen([sys.executable, "-c", code, str(HELPER.parent), str(log)]) for _ in range(4)]
    for proc in procs:
        assert children.finish(proc, timeout=30)[0] == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["kind"] == "x" for line in lines)


# -- many processes, no overlap -----------------------------------------------------


@pytest.mark.slow
def test_stress_random_sizes_never_overlap(tmp_path: Path, children: Children) -> None:
    root, log = tmp_path / "locks", tmp_path / "log.jsonl"
    n_procs, per_proc = 12, 15
    procs = [
        children.start(
            *child_args(
                "loop",
                root=root,
                pool="0-31",
                sizes="1,2,4,8,32",
                count=per_proc,
                hold_min=0.005,
                hold_max=0.030,
                timeout=60,
                log=log,
                seed=seed,
                worker=f"gw{seed}",
            )
        )
        for seed in range(n_procs)
    ]
    results = [children.finish(proc, timeout=100) for proc in procs]
    for status, out, err in results:
        assert status == EXIT_OK, f"a child failed ({status}): {out} {err}"
        assert result_of(out)["done"] == per_proc
    intervals = read_intervals(log)
    assert len(intervals) == n_procs * per_proc
    assert {len(i.physical) for i in intervals} == {1, 2, 4, 8, 32}
    assert len({i.lease_id for i in intervals}) == len(intervals)
    for interval in intervals:
        k = len(interval.physical)
        assert interval.physical == tuple(range(interval.physical[0], interval.physical[0] + k))
        assert interval.physical[0] % k == 0, f"unaligned window {interval.physical}"
    assert_no_overlap(intervals)
    assert os.listdir(root / "waiters") == []
    assert [n for n in os.listdir(root / "holders") if not n.startswith(".")] == []


# -- a SIGKILLed holder ----------------------------------------------------------------------


@pytest.mark.parametrize("reap", ["after", "concurrently"])
def test_sigkilled_holder_is_taken_over_at_once(tmp_path: Path, children: Children, reap: str) -> None:
    root = tmp_path / "locks"
    holder = children.start(*child_args("hold", root=root, pool="0-3", k=4, test="doomed"))
    held = json.loads(read_line(holder, timeout=30))
    assert held["physical"] == [0, 1, 2, 3]
    mgr = manager(root, "0-3")
    before = mgr.holders(range(4))
    assert {h.pid for h in before.values()} == {holder.pid}

    os.kill(holder.pid, signal.SIGKILL)
    killed = time.monotonic()
    reaper = threading.Thread(target=holder.wait) if reap == "concurrently" else None
    if reaper is not None:
        reaper.start()
    lease = mgr.acquire(4, timeout=5, test="survivor")
    took = time.monotonic() - killed
    state = proc_state(holder.pid)
    gone = not is_running(holder.pid, held["starttime"])
    if reaper is not None:
        reaper.join(timeout=10)
    assert holder.wait(timeout=10) == -signal.SIGKILL

    assert took < 1.0, f"the takeover took {took:.3f} s"
    assert lease.cores == (0, 1, 2, 3)
    assert gone, f"acquire returned while the killed holder was still running ({state})"
    if reap == "after":
        assert state.zombie, "the unreaped child should still have been a zombie"
    after = mgr.holders(range(4))
    assert {h.pid for h in after.values()} == {os.getpid()}
    assert {h.lease_id for h in after.values()} == {lease.lease_id}
    assert {h.test for h in after.values()} == {"survivor"}
    mgr.release(lease)
    assert mgr.holders(range(4)) == {}


def test_takeover_waits_until_the_recorded_holder_is_gone(tmp_path: Path, children: Children) -> None:
    # The kernel drops a dying holder's flock a moment before the process is gone
    # (and its runtime has closed the device).  Stage that moment: a live process
    # is recorded on core 0, but nothing locks the core.
    root = tmp_path / "locks"
    mgr = manager(root, "0")
    mgr.release(mgr.acquire(1, timeout=0))
    dying = children.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    starttime = proc_state(dying.pid).starttime
    plant(root, fake_holder(dying.pid, starttime, (0,)))
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        dying.kill()

    timer = threading.Timer(0.4, kill)
    started = time.monotonic()
    timer.start()
    try:
        lease = mgr.acquire(1, timeout=5)
        returned = time.monotonic()
    finally:
        timer.cancel()
    assert killed_at, "acquire returned before the recorded holder was killed"
    assert returned >= killed_at[0]
    assert not is_running(dying.pid, starttime)
    assert lease.wait_seconds >= 0.3, lease.wait_seconds  # it waited for the kill (bound checked above)
    assert returned - started < TAKEOVER_WAIT  # it did not wait out the whole bound
    assert {h.lease_id for h in mgr.holders([0]).values()} == {lease.lease_id}
    mgr.release(lease)
    dying.wait(timeout=10)


def test_dead_holder_record_with_a_free_lock_is_replaced_at_once(tmp_path: Path) -> None:
    root = tmp_path / "locks"
    mgr = manager(root, "0-1")
    mgr.release(mgr.acquire(2, timeout=0))
    code = "import os; print(os.getpid())"
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    plant(root, fake_holder(dead_pid, 1, (0, 1)))
    lease = mgr.acquire(2, timeout=0)
    assert lease.cores == (0, 1)
    assert {h.pid for h in mgr.holders([0, 1]).values()} == {os.getpid()}
    mgr.release(lease)


# -- deadlock freedom and fairness ------------------------------------------------------


def test_overlapping_requests_from_two_processes_both_finish(tmp_path: Path, children: Children) -> None:
    root, log = tmp_path / "locks", tmp_path / "log.jsonl"
    procs = [
        children.start(
            *child_args(
                "loop",
                root=root,
                pool="0-3",
                sizes=size,
                count=25,
                hold_min=0.001,
                hold_max=0.004,
                timeout=20,
                log=log,
            )
        )
        for size in ("2", "4")
    ]
    for proc in procs:
        status, out, err = children.finish(proc, timeout=60)
        assert status == EXIT_OK, f"({status}) {out} {err}"
        assert result_of(out)["done"] == 25
    intervals = read_intervals(log)
    assert sorted({len(i.physical) for i in intervals}) == [2, 4]
    assert len(intervals) == 50
    assert_no_overlap(intervals)


def test_a_waiter_gets_released_cores_at_once(tmp_path: Path, children: Children) -> None:
    root = tmp_path / "locks"
    rounds = 4
    holder = children.start(*child_args("cycle", root=root, pool="0", rounds=rounds, hold=0.3), stdin=PIPE)
    assert holder.stdin is not None
    mgr = manager(root, "0")
    latencies: list[float] = []
    for _ in range(rounds):
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert "held" in json.loads(read_line(holder, timeout=30))
        lease = mgr.acquire(1, timeout=10)  # waits while the holder holds core 0 for 0.3 s
        granted = time.monotonic()
        released = json.loads(read_line(holder, timeout=10))["released"]
        latencies.append(granted - released)
        mgr.release(lease)
    assert max(latencies) < 0.1, "waiters got released cores after " + ", ".join(
        f"{t * 1e3:.0f} ms" for t in latencies
    )


@pytest.mark.slow
def test_an_aged_small_waiter_and_a_big_waiter_do_not_block_each_other(
    tmp_path: Path, children: Children
) -> None:
    # A holds the whole 4-core pool for 3 s.  S asks for 1 core at once and waits long
    # enough to reserve one; B asks for all 4 later.  When A releases, every core is free:
    # S (older, waiting for one core) must get it without waiting for its timeout.
    root = tmp_path / "locks"
    holder = children.start(*child_args("hold", root=root, pool="0-3", k=4, hold=3.0))
    read_line(holder, timeout=30)
    held_at = time.monotonic()
    small = children.start(*child_args("try", root=root, pool="0-3", k=1, timeout=4.5, test="small"))
    time.sleep(1.8)
    big = children.start(*child_args("try", root=root, pool="0-3", k=4, timeout=4.5, test="big"))
    status, out, err = children.finish(small, timeout=30)
    finished = time.monotonic() - held_at
    assert status == EXIT_OK, (
        f"the 1-core request failed {finished:.1f} s in, with every core free: {out} {err}"
    )
    assert result_of(out)["wait"] < 4.0
    status, out, err = children.finish(big, timeout=30)
    assert status == EXIT_OK, f"({status}) {out} {err}"


@pytest.mark.slow
def test_a_whole_pool_request_is_not_starved_by_single_core_requests(
    tmp_path: Path, children: Children
) -> None:
    root, log, stop = tmp_path / "locks", tmp_path / "log.jsonl", tmp_path / "stop"
    readies = [tmp_path / f"ready-{n}" for n in range(6)]
    loopers = [
        children.start(
            *child_args(
                "loop",
                root=root,
                pool="0-7",
                sizes="1",
                stop=stop,
                ready=ready,
                hold_min=0.03,
                hold_max=0.03,
                timeout=30,
                log=log,
            )
        )
        for ready in readies
    ]
    wait_for(lambda: all(r.exists() for r in readies), 30, "the six single-core loops to start")
    time.sleep(0.2)  # let them settle into their loop
    mgr = manager(root, "0-7")
    started = time.monotonic()
    lease = mgr.acquire(8, timeout=10, test="whole pool")
    granted = time.monotonic()
    waited = granted - started
    time.sleep(0.05)
    end = time.monotonic()
    mgr.release(lease)
    stop.touch()
    results = [children.finish(proc, timeout=30) for proc in loopers]

    assert waited < 2.0, f"the 8-core request waited {waited:.3f} s behind single-core loops"
    for status, out, err in results:
        assert status == EXIT_OK, f"({status}) {out} {err}"
    intervals = read_intervals(log)
    singles_before = [i for i in intervals if i.start < started]
    assert len({i.pid for i in singles_before}) == 6, "not all loops were running when the request came"
    mine = Interval(os.getpid(), lease.lease_id, lease.cores, lease.physical, granted, end)
    assert_no_overlap([*intervals, mine])


# -- nested runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("via_shell", [False, True], ids=["child", "grandchild"])
def test_nested_process_leases_the_handed_down_cores(
    tmp_path: Path, children: Children, via_shell: bool
) -> None:
    root = tmp_path / "locks"
    mgr = manager(root, "0-7")
    lease = mgr.acquire(2, timeout=0, test="outer")
    env = {HANDOFF_ENV: handoff_value(root, lease.cores)}
    argv = helper_command(*child_args("nested", k=2, timeout=0))
    if via_shell:  # the holder is the grandparent: a shell stands between
        argv = ["/bin/sh", "-c", " ".join(shlex.quote(a) for a in argv) + "; exit $?"]
    proc = children.popen(argv, env=env)
    status, out, err = children.finish(proc, timeout=30)
    assert status == EXIT_OK, f"({status}) {out} {err}"
    result = result_of(out)
    assert result["ok"] is True
    assert result["handoff"] == {"root": str(root), "pid": os.getpid(), "cores": list(lease.cores)}
    assert result["cores"] == list(lease.cores)
    assert result["wait"] < 0.5
    assert result["nested_root"].startswith(str(root / "nested" / f"{os.getpid()}-"))
    # The parent still holds its cores in the main domain throughout.
    assert {h.lease_id for h in mgr.holders(lease.physical).values()} == {lease.lease_id}
    mgr.release(lease)


def test_a_handoff_from_a_process_that_is_not_an_ancestor_is_ignored(
    tmp_path: Path, children: Children
) -> None:
    root = tmp_path / "locks"
    sibling = children.start(*child_args("hold", root=root, pool="0-1", k=2))
    held = json.loads(read_line(sibling, timeout=30))
    value = json.dumps({"dir": str(root), "pid": held["pid"], "start": held["starttime"], "cores": "0-1"})
    proc = children.start(*child_args("nested", k=2, timeout=0), env={HANDOFF_ENV: value})
    status, out, err = children.finish(proc, timeout=30)
    assert status == EXIT_NO_HANDOFF, f"({status}) {out} {err}"
    assert not (root / "nested").exists()


# -- two real uids --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nobody() -> OtherUser:
    user, why = other_user("nobody")
    if user is None:
        pytest.skip(f"cannot run a child as another uid: {why}")
    return user


def test_two_uids_share_one_lock_directory(nobody: OtherUser) -> None:
    with shared_tmpdir() as shared:
        root = shared / "locks"
        mine = manager(root, "0-1")
        mine.release(mine.acquire(1, timeout=0))  # root creates the domain and core 0's lock file
        assert (root / "cores" / "core-0000.lock").stat().st_uid == 0

        # Another uid locks root's lock file, and creates core 1's.
        try_both = child_args("try", root=root, pool="0-1", k=2, timeout=5)
        status, out, err = run_as(nobody, *try_both, cwd=shared)
        assert status == EXIT_OK, f"({status}) {out} {err}"
        result = result_of(out)
        assert result["uid"] == nobody.uid
        assert result["physical"] == [0, 1]
        assert (root / "cores" / "core-0001.lock").stat().st_uid == nobody.uid

        # Exclusion holds across uids: while root holds core 0, the other uid is refused.
        lease = mine.acquire(2, timeout=0, test="root's test")
        try_one = child_args("try", root=root, pool="0-1", k=1, timeout=0)
        status, out, err = run_as(nobody, *try_one, cwd=shared)
        assert status == EXIT_TIMEOUT, f"({status}) {out} {err}"
        assert f"pid {os.getpid()}" in result_of(out)["message"]
        assert "root's test" in result_of(out)["message"]
        mine.release(lease)
        assert mine.holders([0, 1]) == {}


def test_two_uids_each_get_a_nested_domain(nobody: OtherUser) -> None:
    with shared_tmpdir() as shared:
        root = shared / "locks"
        mine = manager(root, "0")
        mine.release(mine.acquire(1, timeout=0))
        nested = LeaseManager(root / "nested" / "100-200", identity_topology(frozenset({0}), "handoff"))
        nested.release(nested.acquire(1, timeout=0))
        try_nested = child_args("try", root=root / "nested" / "300-400", pool="0", timeout=0)
        status, out, err = run_as(nobody, *try_nested, cwd=shared)
        assert status == EXIT_OK, f"({status}) {out.strip()} {err.strip()[-300:]}"
