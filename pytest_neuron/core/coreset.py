"""Sets of NeuronCore indices: the grammar of ``NEURON_RT_VISIBLE_CORES``.

The runtime accepts one index (``4``), an inclusive range (``4-7``) and, since
runtime 2.16.18, comma lists of both (``3-5,6``).  :func:`parse_coreset` accepts
all of them and rejects anything ambiguous with one line that quotes the value
and names where it came from.  :func:`format_coreset` writes ``N`` or ``A-B``
for a contiguous set (every runtime version reads those) and a sorted minimal
comma list otherwise.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

ACCEPTED_FORMS = "an index '4', a range '4-7', or a comma list such as '0-3,8'"

# Larger indices are typos; refusing them keeps ``0-9999999999`` from building a huge set.
MAX_CORE = 65535

_PART = r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?"  # compiled by re on first use (an xdist worker parses no set)


class CoreSetError(ValueError):
    """A core set that cannot be used; ``str()`` is the one-line message."""


def parse_coreset(
    text: str,
    source: str,
    *,
    within: Collection[int] | None = None,
    within_name: str = "the host",
) -> frozenset[int]:
    """Parse ``text`` as a set of core indices.

    ``source`` names where the value came from (``--neuron-cores``, ``ini
    neuron_cores``, ``NEURON_RT_VISIBLE_CORES``) and appears in every error.
    ``within``, when given, is the set of cores that may be named (the cores of
    the host, or the pool), called ``within_name`` in the error.
    """

    def fail(why: str) -> CoreSetError:
        return CoreSetError(f"invalid core set {text!r} from {source}: {why}; expected {ACCEPTED_FORMS}")

    if not text.strip():
        raise fail("it is empty")
    cores: set[int] = set()
    for part in text.split(","):
        if not part.strip():
            raise fail("it has an empty part")
        match = re.fullmatch(_PART, part, re.ASCII)
        if match is None:
            stripped = part.strip()
            if stripped.startswith("-") and stripped[1:].strip().isdigit():
                raise fail(f"negative index {stripped!r}")
            raise fail(f"{stripped!r} is not an index or a range")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise fail(f"range {part.strip()!r} is reversed")
        if last > MAX_CORE:
            raise fail(f"index {last} is larger than {MAX_CORE}")
        span = set(range(first, last + 1))
        if cores & span:
            raise fail(f"{part.strip()!r} repeats core {min(cores & span)}")
        cores |= span
    if within is not None:
        outside = sorted(cores - set(within))
        if outside:
            have = format_coreset(within) if within else "no cores"
            raise fail(f"core {outside[0]} is outside {within_name} ({have})")
    return frozenset(cores)


def runs(cores: Iterable[int]) -> list[tuple[int, int]]:
    """The maximal contiguous runs of ``cores`` as ``(first, last)`` pairs, ascending."""
    result: list[tuple[int, int]] = []
    for core in sorted(set(cores)):
        if result and core == result[-1][1] + 1:
            result[-1] = (result[-1][0], core)
        else:
            result.append((core, core))
    return result


def format_coreset(cores: Iterable[int]) -> str:
    """Write ``cores`` in the runtime's grammar: ``N``, ``A-B``, or ``A-B,C,...``."""
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in runs(cores)]
    if not parts:
        raise ValueError("an empty core set has no NEURON_RT_VISIBLE_CORES form")
    return ",".join(parts)


def is_contiguous(cores: Iterable[int]) -> bool:
    return len(runs(cores)) == 1
