"""An xdist worker that outlives its controller exits, with everything it started.

An orphaned worker still running a long test keeps its cores (the runtime's
and the locks), which is the "stale process" problem Neuron users report
most.  The watchdog notices within ``interval`` seconds that the parent is
gone (the worker was re-parented), stops the worker's descendants (SIGTERM,
then SIGKILL after ``grace``) and exits the worker; the kernel then drops its
locks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

ORPHAN_EXIT_CODE = 75


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                raw = handle.read()
        except OSError:
            continue
        ppid = int(raw[raw.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop_descendants(grace: float) -> None:
    victims = descendants(os.getpid())
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in victims):
        time.sleep(0.05)
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except OSError:
        return False
    return raw[raw.rfind(")") + 2] not in "ZX"


def watch_parent(*, interval: float = 0.5, grace: float = 2.0) -> threading.Thread:
    """Start a daemon thread that ends this process when its parent is gone."""
    parent = os.getppid()

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        stop_descendants(grace)
        os._exit(ORPHAN_EXIT_CODE)

    thread = threading.Thread(target=run, name="pytest-neuron-watchdog", daemon=True)
    thread.start()
    return thread
