"""The host-wide lock directory: its layout, creation and the checks it must pass.

Layout (one *domain*; a nested run gets its own domain under ``nested/``)::

    alloc.lock               short-held lock around every placement decision
    cores/core-0005.lock     one flock per physical core, held for the lease
    holders/<lease id>.json  who holds a lease and its cores: one record per lease (holders.py)
    waiters/<ticket>.json    requests waiting for cores (ranked in waiters.py)
    waiters/<ticket>.fifo    the doorbell that wakes that request
    nested/<pid>-<start>/    the domain of runs nested inside lease holder <pid>

Lock files are never unlinked: unlinking a flocked file lets the next opener
lock a new inode while the old holder still holds the old one.

Sharing between Unix users: directories are created world-writable *without*
the sticky bit and lock files with mode 0o666, so another user can open and
lock them (with ``fs.protected_regular`` the kernel refuses an ``O_CREAT``
open of another user's file in a sticky directory such as /tmp itself).  An
administrator who wants a narrower group creates the directory beforehand
(for example ``chgrp neuron; chmod 2770``); existing directories keep their mode.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import stat
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

DIR_MODE = 0o777
FILE_MODE = 0o666


class LockDirError(Exception):
    """The lock directory cannot be used; ``str()`` is the one-line reason."""


def io_error(doing: str, path: Path | str, exc: OSError, source: str | None = None) -> LockDirError:
    """One line naming the path and the errno: ``cannot write '/x/y': No space left on device (ENOSPC)``."""
    name = errno.errorcode.get(exc.errno or 0, f"errno {exc.errno}")
    where = f" (from {source})" if source else ""
    return LockDirError(f"cannot {doing} {str(path)!r}{where}: {exc.strerror or exc} ({name})")


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically: a reader sees the old file, the new one, or none.

    The temporary file has an unpredictable name and is created with
    ``O_EXCL | O_NOFOLLOW`` (a planted FIFO, link or file at a guessed name
    is never opened); its mode is set explicitly, whatever the umask, so
    other users can read the result.  On any error nothing is left behind and
    the ``OSError`` propagates.
    """
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class MutexTimeout(TimeoutError):
    """``alloc.lock`` stayed held past the bound; ``str()`` names its holder."""


MUTEX_MIN_WAIT = 2.0  # seconds: even a request with no wait gives a busy alloc.lock this long


class DomainMutex:
    """``alloc.lock``: the short critical section around every placement decision.

    It is held only while deciding (reading records, taking core locks
    without blocking, writing one record), never while waiting for cores, so
    a healthy holder releases it within milliseconds.  Waiting for it is
    bounded all the same (:meth:`acquire`): a holder stopped inside (SIGSTOP,
    a debugger, a frozen container) must not block every run on the host, so
    after the bound the waiter gives up with :class:`MutexTimeout` naming the
    holder's pid, state and command.  The wait polls with a short backoff
    (0.1 ms doubling to 2 ms): there is no flock with a timeout.  The
    exclusivity of cores rests on the per-core locks, not on this one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    def _open(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            try:
                self._fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
                )
            except OSError as exc:
                raise io_error("open", self.path, exc) from None
            self._pid = os.getpid()
        return self._fd

    def acquire(self, timeout: float) -> None:
        """Take the mutex, waiting at most ``max(timeout, MUTEX_MIN_WAIT)`` seconds."""
        fd = self._open()
        start = time.monotonic()
        deadline = start + max(timeout, MUTEX_MIN_WAIT)
        pause = 0.0001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            except OSError as exc:
                raise io_error("lock", self.path, exc) from None
            now = time.monotonic()
            if now >= deadline:
                from .proclocks import stuck_message  # only for a stuck alloc.lock

                raise MutexTimeout(stuck_message(self.path, now - start))
            time.sleep(min(pause * random.uniform(0.5, 1.5), deadline - now))
            pause = min(pause * 2, 0.002)
        if os.fstat(fd).st_nlink == 0:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise LockDirError(
                f"{str(self.path)!r} was removed while this process used it: the lock directory "
                f"{str(self.path.parent)!r} was deleted or replaced, so its leases are no longer exclusive; "
                "no more cores are handed out from it (do not delete a lock directory that runs use)"
            )

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


class CoreLocks:
    """One flock per physical core, on descriptors kept open for the life of the process.

    Locking a core is one ``flock(LOCK_NB)`` system call: the lock files are
    opened once per process (a forked child opens its own, so it never
    unlocks its parent's), never through a link, and must be regular files.
    A forked child that keeps running shares its parent's descriptors, so the
    kernel keeps the cores locked until it has exited too.
    """

    def __init__(self, directory: Path, source: str) -> None:
        self.directory = directory
        self.source = source
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()
        self._prefix = os.path.join(directory, "core-")  # a string: no Path built per core and lease

    def path(self, phys: int) -> str:
        return f"{self._prefix}{phys:04d}.lock"

    def _fd(self, phys: int) -> int:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()  # the parent's stay open in the parent
        fd = self._fds.get(phys)
        if fd is None:
            path = self.path(phys)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    check_lock_file(path, self.source)
                raise io_error("open", path, exc, self.source) from None
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                check_lock_file(path, self.source)  # names a link or a special file
                raise LockDirError(
                    f"lock file {path!r} from {self.source} is not a regular file; refusing to use it"
                )
            if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != FILE_MODE:
                with contextlib.suppress(OSError):
                    os.fchmod(fd, FILE_MODE)
            self._fds[phys] = fd
        return fd

    def try_lock(self, phys: int) -> bool:
        """Lock core ``phys`` without waiting; False if another holder has it."""
        fd = self._fd(phys)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise io_error("lock", self.path(phys), exc, self.source) from None
        if os.fstat(fd).st_nlink == 0:  # removed or replaced since we opened it
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(self._fds.pop(phys))
            raise LockDirError(
                f"lock file {str(self.path(phys))!r} was removed or replaced while this process used it; "
                "the lock directory is no longer exclusive, no more cores are handed out from it"
            )
        return True

    def unlock(self, phys: int) -> None:
        fd = self._fds.get(phys)
        if fd is not None and self._pid == os.getpid():
            fcntl.flock(fd, fcntl.LOCK_UN)


def _make_dir(path: Path, source: str) -> None:
    """Create ``path`` and any missing parents, each world-writable (not sticky)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise io_error("create lock directory", path, exc, source) from None
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
        raise io_error("create lock directory", path, exc, source) from None
    with contextlib.suppress(PermissionError):
        os.chmod(path, DIR_MODE)


def has_records(directory: Path) -> bool:
    """Whether ``directory`` (holders or waiters) holds a ``.json`` record; False if it does not exist.

    Cheap enough to ask before importing the code that reads records; raises OSError otherwise.
    """
    try:
        return any(name.endswith(".json") for name in os.listdir(directory))
    except FileNotFoundError:
        return False


def check_lock_file(path: str | Path, source: str) -> None:
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
    cores = os.path.join(root, "cores")
    try:
        names = os.listdir(cores)
    except OSError as exc:
        raise io_error("list", cores, exc, source) from None
    for name in names:
        if name.endswith(".lock"):
            check_lock_file(os.path.join(cores, name), source)
    probe = root / "alloc.lock"
    check_lock_file(probe, source)
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        raise io_error("open", probe, exc, source) from None
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
