"""Removing nested lock domains once nobody can use them.

A run nested inside a lease (see holders.py) coordinates in the domain
``nested/<pid>-<start>/`` of the lease's holder.  That domain serves only the
holder's descendants, so it is removed

* when the holder's lease ends (:func:`drop_my_nested_domain`, called after
  each release), and
* by every run that prepares a domain, for each holder in its ``nested/``
  that is no longer running (:func:`sweep_nested`).

A domain is removed only while it is provably unused: every lock file in it
(and in the domains nested below it) is taken without blocking and held
during the removal, and it has no live waiter.  Anything else (a nested run
still going, another user's files) leaves it for a later sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
from pathlib import Path

from ..core.plan import NESTED, domain_name, holder_of
from ..host.procinfo import is_running, my_starttime
from .lockdir import has_records


def remove_domain(path: Path) -> bool:
    """Remove the nested domain ``path`` if nothing in it is in use; whether it is gone."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    except FileNotFoundError:
        return True
    except OSError:
        return False
    held: list[int] = []
    try:
        for directory, subdirs, files in os.walk(path):
            if os.path.basename(directory) == "waiters" and _waiting(Path(directory)):
                return False  # a live request still waits here
            for name in files:
                if not name.endswith(".lock"):
                    continue
                try:
                    fd = os.open(os.path.join(directory, name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError:
                    return False
                held.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return False  # held by a live process
            subdirs[:] = [d for d in subdirs if not os.path.islink(os.path.join(directory, d))]
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.lexists(path)
    finally:
        for fd in held:
            os.close(fd)


def drop_my_nested_domain(root: Path) -> None:
    """After this process released a lease of domain ``root``: remove the domain it handed down."""
    path = root / NESTED / domain_name(os.getpid(), my_starttime())
    if os.path.lexists(path):
        remove_domain(path)


def sweep_nested(root: Path) -> int:
    """Remove the nested domains under ``root`` whose holder is gone; how many were removed."""
    try:
        names = os.listdir(root / NESTED)
    except OSError:
        return 0
    removed = 0
    for name in names:
        holder = holder_of(name)
        if holder is None or is_running(*holder):
            continue
        with contextlib.suppress(OSError):
            removed += remove_domain(root / NESTED / name)
    return removed


def _waiting(directory: Path) -> bool:
    """Whether a live request waits in the waiters directory ``directory`` (read only if it has
    records, so that removing an unused domain does not import waiters.py)."""
    with contextlib.suppress(OSError):  # unreadable: let the board report what it can read
        if not has_records(directory):
            return False
    from .waiters import WaiterBoard

    return bool(WaiterBoard(directory).read())
