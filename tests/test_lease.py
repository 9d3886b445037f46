"""LeaseManager in one process: windows, records, refusals, LNC=2 and the nested domain.

Several processes are in tests/test_lease_processes.py; the only children
started here run as another uid, to see a directory this uid cannot write.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import time
from pathlib import Path

import pytest
from lease_helpers import EXIT_LOCKDIR, OtherUser, child_args, other_user, result_of, run_as, shared_tmpdir

from pytest_neuron.core.plan import HANDOFF_ENV
from pytest_neuron.core.topology import Topology, identity_topology
from pytest_neuron.host.procinfo import my_starttime
from pytest_neuron.locks.holders import handoff_value
from pytest_neuron.locks.lease import Lease, LeaseError, LeaseManager, LeaseTimeout
from pytest_neuron.locks.lockdir import LockDirError
from pytest_neuron.locks.untrusted import inherited_handoff

SOURCE = "--neuron-cores"


def pool(n: int, *, lnc: int = 1) -> Topology:
    return identity_topology(frozenset(range(n)), SOURCE, lnc=lnc)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.fixture
def manager(root: Path) -> LeaseManager:
    return LeaseManager(root, pool(32))


def lock_is_free(root: Path, phys: int) -> bool:
    """Whether a new open file description can flock core ``phys`` (the lease's own one cannot)."""
    path = root / "cores" / f"core-{phys:04d}.lock"
    if not path.exists():
        return True  # lock files are created when a core is first leased
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def recorded(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root / "holders") if n.endswith(".json") and not n.startswith("."))


def assert_one_line_quoting(exc: BaseException, path: Path) -> None:
    message = str(exc)
    assert "\n" not in message
    assert repr(str(path)) in message, message


# -- acquire and release ------------------------------------------------------------


def test_acquire_then_release(manager: LeaseManager, root: Path) -> None:
    lease = manager.acquire(4, timeout=0)
    assert lease.cores == (0, 1, 2, 3)
    assert lease.physical == (0, 1, 2, 3)
    assert lease.visible_cores == "0-3"
    assert lease.domain == root
    assert 0 <= lease.wait_seconds < 1
    assert not any(lock_is_free(root, p) for p in lease.physical)
    assert lock_is_free(root, 4)

    manager.release(lease)
    assert lease.released
    assert all(lock_is_free(root, p) for p in range(4))
    manager.release(lease)  # a second release is a no-op
    whole = manager.acquire(32, timeout=0)
    assert whole.cores == tuple(range(32))
    manager.release(whole)
    # Lock files stay on disk after release; nothing else is left behind.
    assert sorted(os.listdir(root / "cores")) == [f"core-{p:04d}.lock" for p in range(32)]
    assert recorded(root) == []
    assert os.listdir(root / "waiters") == []


def test_windows_are_contiguous_aligned_and_disjoint(manager: LeaseManager, root: Path) -> None:
    leases: list[Lease] = []
    for k in (1, 2, 4, 8, 1, 2, 4, 3, 1):
        lease = manager.acquire(k, timeout=0)
        assert lease.cores == tuple(range(lease.cores[0], lease.cores[0] + k)), lease
        if k & (k - 1) == 0:
            assert lease.cores[0] % k == 0, f"{k} cores at {lease.visible_cores} are not aligned"
        for other in leases:
            assert not set(other.cores) & set(lease.cores), f"{lease.cores} overlaps {other.cores}"
        leases.append(lease)
    held = {p for lease in leases for p in lease.physical}
    assert len(held) == 26
    assert all(not lock_is_free(root, p) for p in held)
    for lease in leases:
        manager.release(lease)
    assert all(lock_is_free(root, p) for p in range(32))


def test_own_holdings_are_busy_to_this_process(root: Path) -> None:
    mgr = LeaseManager(root, pool(4))
    first = mgr.acquire(2, timeout=0)
    second = mgr.acquire(2, timeout=0)
    assert set(first.cores) | set(second.cores) == {0, 1, 2, 3}
    with pytest.raises(LeaseTimeout):
        mgr.acquire(1, timeout=0)
    mgr.release(first)
    third = mgr.acquire(2, timeout=0)
    assert third.cores == first.cores
    mgr.release(second)
    mgr.release(third)


def test_holder_records_appear_and_vanish(manager: LeaseManager, root: Path) -> None:
    test_id = "tests/test_model.py::test_forward[bf16]"
    lease = manager.acquire(2, timeout=0, worker="gw3", test=test_id)
    holders = manager.holders(range(32))
    assert sorted(holders) == list(lease.physical)
    for holder in holders.values():
        assert holder.pid == os.getpid()
        assert holder.starttime == my_starttime()
        assert holder.lease_id == lease.lease_id
        assert holder.cores == lease.cores
        assert holder.physical == lease.physical
        assert holder.worker == "gw3"
        assert holder.test == test_id
        assert holder.is_alive()
        assert f"pid {os.getpid()}" in holder.describe()
        assert test_id in holder.describe()
    assert recorded(root) == [f"{lease.lease_id}.json"]  # one record per lease, whatever its size

    manager.release(lease)
    assert manager.holders(range(32)) == {}
    assert recorded(root) == []


@pytest.mark.parametrize("k", [0, -1, 33, 100])
def test_a_request_that_can_never_fit_is_a_lease_error(manager: LeaseManager, root: Path, k: int) -> None:
    with pytest.raises(LeaseError, match=rf"cannot lease {k} cores from a pool of 32 \({SOURCE}\)"):
        manager.acquire(k, timeout=10)
    assert not root.exists(), "a refused request touched the lock directory"


def test_timeout_zero_names_request_pool_and_holder(root: Path) -> None:
    mgr = LeaseManager(root, pool(4))
    test_id = "tests/test_big.py::test_all_four"
    held = mgr.acquire(4, timeout=0, worker="gw0", test=test_id)
    started = time.monotonic()
    with pytest.raises(LeaseTimeout) as info:
        mgr.acquire(2, timeout=0, test="tests/test_small.py::test_two")
    assert time.monotonic() - started < 0.5
    message = str(info.value)
    assert isinstance(info.value, TimeoutError)
    assert "waiting for 2 cores" in message
    assert f"of pool 0-3 ({SOURCE})" in message
    assert f"pid {os.getpid()}" in message
    assert test_id in message
    assert "\n" not in message
    assert [h.lease_id for h in info.value.holders] == [held.lease_id]
    assert os.listdir(root / "waiters") == [], "the timed-out request left its waiter record"
    mgr.release(held)


def test_timeout_waits_about_as_long_as_asked(root: Path) -> None:
    mgr = LeaseManager(root, pool(2))
    held = mgr.acquire(1, timeout=0)
    started = time.monotonic()
    with pytest.raises(LeaseTimeout, match=r"gave up after \d+\.\ds waiting for 2 cores of pool 0-1"):
        mgr.acquire(2, timeout=0.25)
    assert 0.25 <= time.monotonic() - started < 2
    mgr.release(held)


def test_cancel_ends_the_wait(root: Path) -> None:
    mgr = LeaseManager(root, pool(1))
    held = mgr.acquire(1, timeout=0)
    calls: list[float] = []

    def cancel() -> bool:
        calls.append(time.monotonic())
        return len(calls) >= 3

    started = time.monotonic()
    with pytest.raises(LeaseTimeout):
        mgr.acquire(1, timeout=60, cancel=cancel)
    assert time.monotonic() - started < 2
    assert len(calls) == 3
    mgr.release(held)


# -- lock directory refusals ----------------------------------------------------------


def test_lock_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "locks"
    path.write_text("not a directory")
    with pytest.raises(LockDirError, match="exists and is not a directory") as info:
        LeaseManager(path, pool(4)).acquire(1, timeout=0)
    assert_one_line_quoting(info.value, path)
    assert path.read_text() == "not a directory"


def test_lock_dir_whose_subdirectory_is_a_file(root: Path) -> None:
    root.mkdir()
    (root / "cores").write_text("")
    with pytest.raises(LockDirError, match="exists and is not a directory") as info:
        LeaseManager(root, pool(4)).acquire(1, timeout=0)
    assert_one_line_quoting(info.value, root / "cores")


def test_lock_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "locks"
    with pytest.raises(LockDirError, match="cannot create lock directory") as info:
        LeaseManager(path, pool(4)).acquire(1, timeout=0)
    assert "Not a directory (ENOTDIR)" in str(info.value)
    assert_one_line_quoting(info.value, path)


def test_lock_dir_named_by_a_symlink_to_a_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    mgr = LeaseManager(link, pool(2))
    lease = mgr.acquire(2, timeout=0)
    assert (tmp_path / "real" / "cores" / "core-0001.lock").exists()
    mgr.release(lease)


def make_domain(root: Path) -> None:
    mgr = LeaseManager(root, pool(1))
    mgr.release(mgr.acquire(1, timeout=0))


def test_symlinked_core_lock_file_is_refused(root: Path, tmp_path: Path) -> None:
    root.mkdir()
    (root / "cores").mkdir()
    target = tmp_path / "elsewhere"
    lock = root / "cores" / "core-0000.lock"
    lock.symlink_to(target)
    with pytest.raises(LockDirError, match="is a symbolic link") as info:
        LeaseManager(root, pool(1)).acquire(1, timeout=0)
    assert_one_line_quoting(info.value, lock)
    assert not target.exists(), "the symlink was followed"
    assert lock.is_symlink()
    assert recorded(root) == []
    assert os.listdir(root / "waiters") == []


def test_core_lock_file_that_is_a_directory_is_refused(root: Path) -> None:
    make_domain(root)
    lock = root / "cores" / "core-0000.lock"
    lock.unlink()
    lock.mkdir()
    with pytest.raises(LockDirError, match="is not a regular file") as info:
        LeaseManager(root, pool(1)).acquire(1, timeout=0)
    assert_one_line_quoting(info.value, lock)


def test_symlinked_alloc_lock_is_refused(root: Path, tmp_path: Path) -> None:
    make_domain(root)
    (root / "alloc.lock").unlink()
    (root / "alloc.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LockDirError, match="is a symbolic link") as info:
        LeaseManager(root, pool(1)).acquire(1, timeout=0)
    assert_one_line_quoting(info.value, root / "alloc.lock")
    assert not (tmp_path / "elsewhere").exists()


def test_refused_lock_file_inside_a_window_gives_back_the_cores_already_locked(root: Path) -> None:
    mgr = LeaseManager(root, pool(2))
    mgr.release(mgr.acquire(2, timeout=0))
    (root / "cores" / "core-0001.lock").unlink()
    (root / "cores" / "core-0001.lock").symlink_to(root / "elsewhere")
    other = LeaseManager(root, pool(2))  # alive for the whole session, like the plugin's manager
    with pytest.raises(LockDirError, match=r"core-0001\.lock"):
        other.acquire(2, timeout=0)
    assert recorded(root) == []
    assert lock_is_free(root, 0), "core 0 stayed locked after the request failed"


@functools.lru_cache(maxsize=1)
def nobody() -> tuple[OtherUser | None, str]:
    return other_user("nobody")


def refusal_for_another_uid(root: Path) -> str:
    """The LockDirError message a user who may not write ``root`` gets."""
    if os.geteuid() != 0:
        with pytest.raises(LockDirError) as info:
            LeaseManager(root, pool(1)).acquire(1, timeout=0)
        return str(info.value)
    user, why = nobody()
    if user is None:
        pytest.skip(f"running as root and cannot drop privileges: {why}")
    status, out, err = run_as(user, *child_args("try", root=root, pool="0", timeout=0), cwd=Path("/"))
    assert status == EXIT_LOCKDIR, f"exit {status}: {out.strip()} {err.strip()[-300:]}"
    result = result_of(out)
    assert result["uid"] == user.uid
    return str(result["message"])


def test_lock_dir_this_user_cannot_write() -> None:
    with shared_tmpdir() as shared:
        root = shared / "locks"
        root.mkdir(mode=0o755)
        root.chmod(0o555 if os.geteuid() != 0 else 0o755)  # root's directory: nobody may not write it
        message = refusal_for_another_uid(root)
        root.chmod(0o755)
    assert "is not writable by this user (uid " in message
    assert repr(str(root)) in message
    assert "\n" not in message


def test_lock_dir_this_user_cannot_create() -> None:
    with shared_tmpdir() as shared:
        parent = shared / "parent"
        parent.mkdir(mode=0o755)
        parent.chmod(0o555 if os.geteuid() != 0 else 0o755)
        message = refusal_for_another_uid(parent / "locks")
        parent.chmod(0o755)
    assert "cannot create lock directory" in message
    assert "Permission denied (EACCES)" in message
    assert repr(str(parent / "locks")) in message


def test_lock_dir_inside_a_directory_this_user_cannot_search() -> None:
    with shared_tmpdir() as shared:
        private = shared / "private"
        private.mkdir(mode=0o700)
        private.chmod(0o000 if os.geteuid() != 0 else 0o700)  # root's 0700 directory: closed to nobody
        try:
            message = refusal_for_another_uid(private / "locks")
        finally:
            private.chmod(0o700)
    assert repr(str(private / "locks")) in message


# -- LNC=2 ------------------------------------------------------------------------------


def test_lnc2_locks_the_physical_cores(root: Path) -> None:
    lnc2 = LeaseManager(root, identity_topology(frozenset({1}), SOURCE, lnc=2))
    lease = lnc2.acquire(1, timeout=0)
    assert lease.cores == (1,)
    assert lease.physical == (2, 3)
    assert lease.visible_cores == "1"
    assert sorted(lnc2.holders(range(8))) == [2, 3]
    assert not lock_is_free(root, 2)
    assert not lock_is_free(root, 3)
    assert not (root / "cores" / "core-0001.lock").exists()
    lnc2.release(lease)
    assert lock_is_free(root, 2)
    assert lock_is_free(root, 3)


def test_lnc2_and_lnc1_leases_on_one_host_never_share_a_physical_core(root: Path) -> None:
    lnc2 = LeaseManager(root, pool(4, lnc=2))  # logical 0-3 = physical 0-7
    wide = lnc2.acquire(1, timeout=0, test="lnc2")
    assert (wide.cores, wide.physical) == ((0,), (0, 1))
    lnc1 = LeaseManager(root, pool(8))
    narrow = lnc1.acquire(4, timeout=0, test="lnc1")
    assert narrow.physical == (4, 5, 6, 7)  # 0-3 holds a busy physical core
    pair = lnc1.acquire(2, timeout=0)
    assert pair.physical == (2, 3)
    with pytest.raises(LeaseTimeout):
        lnc2.acquire(1, timeout=0)
    lnc1.release(pair)
    again = lnc2.acquire(1, timeout=0)
    assert (again.cores, again.physical) == ((1,), (2, 3))
    for mgr, lease in ((lnc2, wide), (lnc1, narrow), (lnc2, again)):
        mgr.release(lease)


def test_lnc2_pool_leases_contiguous_logical_windows(root: Path) -> None:
    mgr = LeaseManager(root, pool(4, lnc=2))
    lease = mgr.acquire(2, timeout=0)
    assert lease.cores == (0, 1)
    assert lease.physical == (0, 1, 2, 3)
    assert lease.visible_cores == "0-1"
    with pytest.raises(LeaseError, match="cannot lease 5 cores from a pool of 4"):
        mgr.acquire(5, timeout=0)
    mgr.release(lease)


# -- nested, in one process ----------------------------------------------------------


def test_handed_down_lease_is_leased_again_in_the_nested_domain(root: Path) -> None:
    outer = LeaseManager(root, pool(8))
    lease = outer.acquire(2, timeout=0, test="outer")
    env = {HANDOFF_ENV: handoff_value(root, lease.cores)}
    handoff = inherited_handoff(env)
    assert handoff is not None
    assert handoff.root == root
    assert handoff.pid == os.getpid()
    assert handoff.cores == frozenset(lease.cores)
    assert handoff.nested_root == root / "nested" / f"{os.getpid()}-{my_starttime()}"

    inner = LeaseManager(handoff.nested_root, identity_topology(handoff.cores, "handoff"))
    nested = inner.acquire(2, timeout=0, test="inner")
    assert nested.cores == lease.cores
    assert nested.domain == handoff.nested_root
    # The outer lease is untouched: still recorded and locked in the main domain.
    assert {h.lease_id for h in outer.holders(lease.physical).values()} == {lease.lease_id}
    assert not any(lock_is_free(root, p) for p in lease.physical)
    with pytest.raises(LeaseTimeout):
        inner.acquire(1, timeout=0)
    inner.release(nested)
    outer.release(lease)


def test_lease_ids_are_unique(manager: LeaseManager) -> None:
    ids = set()
    for _ in range(20):
        lease = manager.acquire(1, timeout=0)
        ids.add(lease.lease_id)
        manager.release(lease)
    assert len(ids) == 20
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


@pytest.mark.parametrize(
    "content",
    [
        b"[1, 2]",
        b'{"pid": "x"}',
        b'{"pid": 1, "starttime": null, "host": "h", "user": "u", "command": 5, "since": 0, "lease_id": "a"}',
        b'{"pid": 1, "starttime": null, "host": "h", "user": "u", '
        b'"command": "c", "since": "x", "lease_id": "a"}',
    ],
)
def test_a_record_of_the_wrong_shape_is_no_record(tmp_path: Path, content: bytes) -> None:
    # the lock directory is world-writable: a planted record must not crash readers
    from pytest_neuron.locks.untrusted import read_record

    path = tmp_path / "core-0000.json"
    path.write_bytes(content)
    assert read_record(path) is None
