"""How many workers pytest-xdist starts for a run's ``--tx`` specs (pure)."""

from __future__ import annotations


def count_workers(tx: list[str] | None) -> int:
    """How many workers xdist starts for ``--tx`` specs: ``3*popen`` counts three.

    The same reading as xdist's own (``parse_tx_spec_config``, which is not a
    public API): the text before the first ``*`` (for a spec without one,
    every character but the last, as xdist slices it) read as a whole number
    is how many workers the spec stands for; any other spec is one.
    tests/test_xdist.py compares the two and fails loudly if xdist changes.
    """
    count = 0
    for spec in tx or ():
        try:
            count += max(0, int(spec[: spec.find("*")]))
        except ValueError:
            count += 1
    return count
