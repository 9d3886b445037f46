"""An xdist worker that outlives its controller exits, with everything it started.

An orphaned worker still running a long test keeps its cores (the runtime's
and the locks), which is the "stale process" problem Neuron users report
most.  No thread and no polling: the worker asks the kernel
(``prctl(PR_SET_PDEATHSIG)``) to send it :data:`ORPHAN_SIGNAL` when its
parent, the controller, dies, and checks once, right after asking, that the
controller is still its parent (it may have died before).  The signal's
handler stops the worker's descendants (SIGTERM, then SIGKILL after
``grace``) and exits the worker; the kernel then drops its locks.

Nothing here calls ``time.sleep`` or runs while tests run, so a test that
mocks ``time.sleep`` or counts threads sees nothing of it.  The handler runs
in the worker's main thread as soon as it executes Python code again: a
blocking call (``time.sleep``, a subprocess wait, a read) is interrupted at
once; only C code that retries interrupted calls itself delays it.

The watchdog is armed only where the controller is the worker's parent on the
same host (xdist's ``popen`` gateways); other gateways are left alone.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from .procinfo import PR_SET_PDEATHSIG, boot_id, is_running, prctl
from .reaper import stop_descendants

if TYPE_CHECKING:
    from ..core.plan import Controller

ORPHAN_EXIT_CODE = 75
#: A real-time signal: no test suite or library installs a handler for it by chance.
ORPHAN_SIGNAL = signal.SIGRTMAX - 2


def set_parent_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)``; False where it is not available."""
    return prctl(PR_SET_PDEATHSIG, signum)


def orphaned(grace: float) -> None:
    """Stop every descendant and exit this process (it never returns)."""
    try:
        stop_descendants(grace)  # reaper.py's: SIGTERM, then SIGKILL, waiting without time.sleep
    finally:
        os._exit(ORPHAN_EXIT_CODE)


def watch_parent(controller: Controller | None, *, grace: float = 2.0) -> bool:
    """End this process (see the module docstring) when ``controller``, its parent, dies.

    Returns whether the watchdog is armed.  A controller on another host, or
    that is not this process's parent, is not watched; one that is already
    gone ends this process at once.
    """
    if controller is None or controller.boot_id != boot_id():
        return False
    if os.getppid() != controller.pid:
        if not is_running(controller.pid, controller.starttime):
            orphaned(grace)
        return False  # a gateway of another kind: its parent is not the controller
    try:
        if signal.getsignal(ORPHAN_SIGNAL) not in (signal.SIG_DFL, None):
            return False  # someone else's handler: leave it alone
        signal.signal(ORPHAN_SIGNAL, lambda signum, frame: orphaned(grace))
    except ValueError:  # not the main thread
        return False
    if not set_parent_death_signal(ORPHAN_SIGNAL):
        signal.signal(ORPHAN_SIGNAL, signal.SIG_DFL)
        return False
    if os.getppid() != controller.pid:  # it died before the kernel knew to tell us
        orphaned(grace)
    return True
