"""On SIGTERM or SIGINT, end the process trees this process started before it goes.

CI cancels a job with SIGTERM; pytest's default is to die at once, leaving a
test's subprocess running on the cores it was given (issue 15 §1).  The
handler installed by :func:`end_trees_on_signal` first stops every
descendant (SIGTERM, then SIGKILL after ``grace``), then lets the signal do
what it did before: the previous handler runs (for SIGINT, pytest's
KeyboardInterrupt), or with the default disposition the signal is delivered
again, so the exit status is the usual one.

Descendants are read from /proc (procinfo.descendants); a process that is the
child subreaper of its tree (lease.py makes every lease holder one) also
finds orphaned grandchildren.  Only the main thread can install handlers:
elsewhere :func:`end_trees_on_signal` does nothing and returns False.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from .procinfo import descendants, proc_state

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import FrameType


def _alive(pid: int) -> bool:
    state = proc_state(pid)
    return state.exists and not state.zombie


def stop_descendants(grace: float, pid: int | None = None) -> list[int]:
    """SIGTERM every descendant of ``pid`` (default: this process), SIGKILL those left after ``grace``."""
    root = os.getpid() if pid is None else pid
    victims = descendants(root)
    for victim in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGTERM)
    pause = threading.Event()  # not time.sleep: a test may have mocked it (the watchdog runs this too)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(v) for v in victims):
        pause.wait(0.02)
    for victim in [*victims, *descendants(root)]:
        if _alive(victim):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)
    return victims


def end_trees_on_signal(
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT), *, grace: float = 2.0
) -> bool:
    """Install the handlers (idempotent per signal); False outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in signals:
        previous = signal.getsignal(signum)
        if getattr(previous, "_pytest_neuron_reaper", False):
            continue
        signal.signal(signum, _handler(signum, previous, grace))
    return True


def _handler(signum: signal.Signals, previous: Any, grace: float) -> Any:
    def handle(number: int, frame: FrameType | None) -> None:
        stop_descendants(grace)
        if callable(previous):
            previous(number, frame)
            return
        if previous == signal.SIG_IGN:
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    handle._pytest_neuron_reaper = True  # type: ignore[attr-defined]
    return handle
