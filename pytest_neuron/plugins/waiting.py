"""The waiting line of a lease that waits: who holds the cores, printed when it is due."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..core.coreset import format_coreset
from ..core.waiting import FIRST_NOTICE, REPEAT_NOTICE, HolderView, waiting_line
from .terminal import write_now

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..locks.holders import Holder
    from .context import NeuronContext


def holder_views(holders: Iterable[Holder]) -> list[HolderView]:
    """One view per lease among ``holders`` (records of the cores of one lease are merged)."""
    by_lease: dict[str, list[Holder]] = {}
    for holder in holders:
        by_lease.setdefault(holder.lease_id, []).append(holder)
    views = []
    for records in by_lease.values():
        h = records[0]
        cores = sorted({c for r in records for c in (r.cores or ())})
        views.append(
            HolderView(
                cores=format_coreset(cores) if cores else "?",
                pid=h.pid,
                user=h.user,
                host=h.host,
                command=h.command[:200],
                what=h.test or h.worker,
                since=h.since,
            )
        )
    return sorted(views, key=lambda v: v.since)


def current_holders(context: NeuronContext) -> list[HolderView]:
    """Who holds the cores of this process's pool now, one view per lease."""
    manager = context.manager
    topo = manager.topology
    return holder_views(manager.holders(topo.physical_cores(topo.cores)).values())


class WaitNotice:
    """Called by a waiting lease on every wake-up: prints the waiting line when it is due.

    Returns False (never cancels the wait).
    """

    def __init__(self, context: NeuronContext, who: str, k: int, timeout: float, start: float) -> None:
        self.context, self.who, self.k, self.timeout = context, who, k, timeout
        self.start = start
        self.next_notice = start + FIRST_NOTICE

    def __call__(self) -> bool:
        now = time.monotonic()
        if now >= self.next_notice:
            self.next_notice = now + REPEAT_NOTICE
            waited = now - self.start
            left = self.timeout - waited
            line = waiting_line(self.who, self.k, waited, left, current_holders(self.context))
            write_now(self.context.config, line)
        return False
