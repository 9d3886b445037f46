"""The cross-process lock protocol: lock directory, holder records, waiters, leases, hand-off."""
