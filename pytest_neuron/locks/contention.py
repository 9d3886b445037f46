"""The slow paths of a lease request: waiting for cores, and the message of a wait that gave up.

lease.py's :class:`~pytest_neuron.locks.lease.LeaseManager` imports this module only when a
request cannot be placed at once (it registers as a waiter, backs off, reserves a window once
it has aged, or gives up): an uncontended lease never loads it.  The invariants are lease.py's.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

from ..core.coreset import format_coreset
from ..core.placement import candidate_windows, reservation_window
from ..core.record import replace
from ..host.processes import describe_process
from .waiters import new_ticket

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core.topology import Topology
    from .holders import Holder
    from .lease import Lease, LeaseManager
    from .waiters import Waiter, WaiterBoard


def sleep_interval(base: float, attempt: int, cap: float) -> float:
    """Backoff between attempts where no doorbell can wake a waiter (no FIFOs on this filesystem)."""
    return min(base * (1.5 ** min(attempt, 8)), cap) * random.uniform(0.8, 1.2)


def update_waiter(
    manager: LeaseManager,
    board: WaiterBoard,
    k: int,
    waiter: Waiter | None,
    bell: int | None,
    *,
    waiters: list[Waiter],
    busy: set[int],
    what: str | None,
) -> tuple[Waiter, int | None]:
    """Register this request as a waiter, and reserve a window once it has aged."""
    topo = manager.topology
    if waiter is None:
        windows = tuple(topo.physical_cores(w) for w in candidate_windows(topo.cores, k))
        return board.register(new_ticket(), k, windows, what or f"pid {os.getpid()}")
    if waiter.waited() < manager.fair_after:
        return waiter, bell
    above = {p for w in waiters if w.ticket != waiter.ticket and w.rank < waiter.rank for p in w.reserved}
    reserved = reserve(topo, k, busy - set(waiter.reserved), above)
    if reserved != waiter.reserved:
        waiter = replace(waiter, reserved=reserved)
        board.write(waiter)
    return waiter, bell


def reserve(topo: Topology, k: int, busy: set[int], forbidden: set[int]) -> tuple[int, ...]:
    """The window an aged waiter reserves: the one that drains soonest (fewest busy cores)."""
    busy_logical = [c for c in topo.cores if busy.intersection(topo.physical[c])]
    forbidden_logical = [c for c in topo.cores if forbidden.intersection(topo.physical[c])]
    window = reservation_window(topo.cores, k, busy_logical, forbidden_logical, device_of=topo.device_of)
    return () if window is None else topo.physical_cores(window)


def timeout_message(
    manager: LeaseManager,
    k: int,
    reserved: tuple[int, ...],
    waited: float,
    *,
    lingering: Mapping[str, Lease],
    survivors: Mapping[str, list[int]],
) -> tuple[str, list[Holder]]:
    """Why a request gave up (LeaseTimeout's message), and the holders it names: ``lingering``, this
    process's released leases still used by its descendants, ``survivors``, the processes found
    still using dead holders' leases (both by lease id)."""
    topo = manager.topology
    wanted = reserved or topo.physical_cores(topo.cores)
    holders = list({h.lease_id: h for h in manager.holders(wanted).values()}.values())
    pool = format_coreset(topo.cores)
    parts = []
    for h in holders:
        text = f"cores {format_coreset(h.cores)} held by {h.describe()}"
        if h.lease_id in lingering:
            users = ", ".join(describe_process(pid) for pid in lingering[h.lease_id].lingering[:3])
            text = (
                f"cores {format_coreset(h.cores)} released by {h.test or h.worker or 'this process'} are "
                f"still used by {users}, which it left running"
            )
        elif h.lease_id in survivors:
            users = ", ".join(describe_process(pid) for pid in survivors[h.lease_id][:3])
            text = (
                f"cores {format_coreset(h.cores)} of a lease whose holder pid {h.pid} is gone are still "
                f"used by {users} (started under that lease; end them to free the cores)"
            )
        parts.append(text)
    named = (
        "; ".join(parts) or "no holder is recorded (the cores may be reserved for bigger or older waiters)"
    )
    message = (
        f"gave up after {waited:.1f}s waiting for {k} core{'s' if k != 1 else ''} "
        f"of pool {pool} ({topo.source}): {named}"
    )
    return message, holders
