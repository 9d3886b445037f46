"""The host-wide lock directory: its layout, creation and the checks it must pass.

Layout (one *domain*; a nested run gets its own domain under ``nested/``)::

    alloc.lock               short-held lock around every placement decision
    cores/core-0005.lock     one flock per physical core, held for the lease
    holders/core-0005.json   who holds core 5 (see holders.py)
    waiters/<ticket>.json    requests waiting for cores (ranked in waiters.py)
    waiters/<ticket>.fifo    the doorbell that wakes that request
    nested/<pid>-<start>/    the domain of runs nested inside lease holder <pid>

Lock files are never unlinked: unlinking a flocked file lets the next opener
lock a new inode while the old holder still holds the old one.

Sharing between Unix users: directories are created world-writable *without*
the sticky bit and lock files with mode 0o666, so another user can open and
lock them (filelock 4.2.1+ refuses another user's lock file in a sticky
directory such as /tmp itself).  An administrator who wants a narrower group
creates the directory beforehand (for example ``chgrp neuron; chmod 2770``);
existing directories keep their mode.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_LOCK_DIR = "/tmp/pytest-neuron"
LOCK_DIR_ENV = "PYTEST_NEURON_LOCK_DIR"
DIR_MODE = 0o777
FILE_MODE = 0o666


class LockDirError(Exception):
    """The lock directory cannot be used; ``str()`` is the one-line reason."""


class DomainMutex:
    """``alloc.lock``: the short critical section around every placement decision.

    A blocking flock: the kernel queues contenders and wakes the next at
    unlock, with no polling (under contention on a small machine, polling
    holders of this lock cost more than the decisions themselves).  It is
    held only while deciding (reading records, taking core locks without
    blocking, writing records), never while waiting for cores, so it is
    always released within milliseconds.  The exclusivity of cores rests on
    the per-core locks, not on this one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    def __enter__(self) -> DomainMutex:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            self._pid = os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def _make_dir(path: Path, source: str) -> None:
    """Create ``path`` and any missing parents, each world-writable (not sticky)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise LockDirError(
            f"lock directory {str(path)!r} from {source} cannot be created: {exc.strerror}"
        ) from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode) and path.is_dir():
            return
        if not stat.S_ISDIR(st.st_mode):
            raise LockDirError(f"lock directory {str(path)!r} from {source} exists and is not a directory")
        return
    if path.parent != path:
        _make_dir(path.parent, source)
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise LockDirError(
                f"lock directory {str(path)!r} from {source} cannot be created: a file is in the way"
            ) from None
        return
    except OSError as exc:
        raise LockDirError(
            f"lock directory {str(path)!r} from {source} cannot be created: {exc.strerror}"
        ) from None
    with contextlib.suppress(PermissionError):
        os.chmod(path, DIR_MODE)


def check_lock_file(path: Path, source: str) -> None:
    """Refuse a lock file that is a symlink or not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise LockDirError(
            f"lock file {str(path)!r} in the lock directory from {source} is a symbolic link; "
            "refusing to use it (remove it, or choose another --neuron-lock-dir)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise LockDirError(
            f"lock file {str(path)!r} in the lock directory from {source} is not a regular file; "
            "refusing to use it"
        )


def prepare_domain(root: Path, source: str) -> None:
    """Create the domain's directories and prove flock works there.

    Raises :class:`LockDirError` for a path that is a file, cannot be created or
    written, or a filesystem without flock (filelock would silently fall back
    to soft locks there, which do not survive a crash correctly).
    """
    for sub in (root, root / "cores", root / "holders", root / "waiters"):
        _make_dir(sub, source)
        if not os.access(sub, os.W_OK | os.X_OK):
            raise LockDirError(
                f"lock directory {str(sub)!r} from {source} is not writable by this user (uid {os.getuid()})"
            )
    for name in os.listdir(root / "cores"):
        if name.endswith(".lock"):
            check_lock_file(root / "cores" / name, source)
    probe = root / "alloc.lock"
    check_lock_file(probe, source)
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        raise LockDirError(
            f"lock directory {str(root)!r} from {source}: cannot open {probe.name}: {exc.strerror}"
        ) from None
    try:
        with contextlib.suppress(PermissionError):
            if os.fstat(fd).st_uid == os.getuid():
                os.fchmod(fd, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockDirError(
                    f"lock directory {str(root)!r} from {source} is on a filesystem without flock "
                    f"({exc.strerror}); choose a local directory with --neuron-lock-dir"
                ) from None
    finally:
        os.close(fd)
