"""The words of a wait for cores: who holds them, how long it lasts, what to do (pure).

A waiting request prints :func:`waiting_line` once it has waited
:data:`FIRST_NOTICE` seconds and again every :data:`REPEAT_NOTICE`
seconds; a request that gives up ends with :func:`gave_up_message`.
"""

from __future__ import annotations

import time

from .record import record

FIRST_NOTICE = 2.0  # seconds before the first waiting line
REPEAT_NOTICE = 60.0  # seconds between later ones


@record
class HolderView:
    """What the user needs to know about one holder of cores they wait for."""

    cores: str
    pid: int
    user: str
    host: str
    command: str
    what: str | None  # the test or worker, when recorded
    since: float

    def describe(self) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(self.since))
        what = f", {self.what}" if self.what else ""
        who = f"{self.user}@{self.host}{what}, since {clock}"
        return f"cores {self.cores} held by pid {self.pid} ({who}): {self.command}"


def holders_text(holders: list[HolderView], limit: int = 3) -> str:
    if not holders:
        return (
            "no holder is recorded (another run is placing its cores, or a lock is held outside the plugin)"
        )
    shown = [h.describe() for h in holders[:limit]]
    more = len(holders) - limit
    return "; ".join(shown) + (f"; and {more} more (see `pytest-neuron status`)" if more > 0 else "")


def waiting_line(who: str, k: int, waited: float, remaining: float, holders: list[HolderView]) -> str:
    """One line for the terminal while ``who`` waits for ``k`` cores."""
    plural = "s" if k != 1 else ""
    return (
        f"neuron: {who} waits for {k} core{plural} ({waited:.0f}s so far, gives up in {remaining:.0f}s, "
        f"--neuron-wait-timeout): {holders_text(holders)}"
    )


def gave_up_message(who: str, k: int, waited: float, holders: list[HolderView], pool: str) -> str:
    """The one error of a run or test that could not get its cores within the bound."""
    plural = "s" if k != 1 else ""
    pids = sorted({h.pid for h in holders})
    stop = f", stop pid {', '.join(map(str, pids))} if it is stuck" if pids else ""
    return (
        f"pytest-neuron: {who} gave up after {waited:.1f}s waiting for {k} core{plural} of pool {pool}: "
        f"{holders_text(holders)}. "
        f"Remedies: wait longer (--neuron-wait-timeout=SECONDS), see who holds what "
        f"(pytest-neuron status){stop}"
    )
