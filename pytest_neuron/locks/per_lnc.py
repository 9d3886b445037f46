"""Leases at several LNCs in one process: one lease manager per LNC, on one lock domain."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lnc import topology_at_lnc

if TYPE_CHECKING:
    from pathlib import Path

    from .lease import Lease, LeaseManager


class LncLeases:
    """One lease manager per LNC, all on the same lock domain (so they exclude each other).

    Each manager tracks what this process holds in its own numbering; a core held through
    one is busy to the others through its holder record and its physical lock.
    """

    def __init__(self, base: LeaseManager, make: type[LeaseManager], root: Path) -> None:
        self.base = base
        self._make = make
        self._root = root
        self._managers: dict[int, LeaseManager] = {base.topology.lnc: base}
        self._owner: dict[str, LeaseManager] = {}

    def manager(self, lnc: int | None) -> LeaseManager:
        lnc = self.base.topology.lnc if lnc is None else lnc
        found = self._managers.get(lnc)
        if found is None:
            base = self.base
            found = self._managers[lnc] = self._make(
                self._root,
                topology_at_lnc(base.topology, lnc),
                source=base.source,
                command=base.command,
            )
        return found

    def owned(self, lease: Lease, manager: LeaseManager) -> None:
        """Record that ``lease`` was taken through ``manager`` (it must be released there)."""
        self._owner[lease.lease_id] = manager

    def release(self, lease: Lease) -> None:
        self._owner.pop(lease.lease_id, self.base).release(lease)
