"""Text of the report header and the terminal summary: pure functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .coreset import format_coreset

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .plan import RunPlan

LONG_WAIT = 5.0  # seconds; a wait longer than this earns a line of its own


def header_lines(plan: RunPlan, role: str, verbose: bool) -> list[str]:
    topo = plan.topology
    if topo is None:
        return ["neuron: no Neuron cores (no device found, no pool given); neuron tests will be skipped"]
    limit = f", at most {topo.limit} at once" if topo.limit is not None else ""
    line = f"neuron: pool {format_coreset(topo.cores)} from {topo.source}{limit}; scope {plan.scope}"
    if plan.scope == "worker" and role == "controller" and plan.slice_size:
        line += f", {plan.slice_size} core{'s' if plan.slice_size != 1 else ''} per worker"
    lines = [line, f"neuron: lock directory {plan.lock_root} ({plan.lock_source})"]
    if verbose:
        for name, resolved in plan.settings.items():
            if resolved.source != "default":
                lines.append(f"neuron: {name} = {resolved.value!r} ({resolved.source})")
    return lines


def order_line(order: str, source: str, recorded: int | None) -> str:
    """Test scope: the order tests start in, why, and how many recorded durations it uses."""
    line = f"neuron: order {order} ({source})"
    if order == "durations":
        count = recorded or 0
        line += f", from {count} recorded test{'s' if count != 1 else ''}"
        if not count:
            line += "; biggest-first until a run records some"
    return line


def summary_lines(
    scope: str,
    records: Sequence[tuple[str, str, float, str | None]],
    workers: Mapping[str, Mapping[str, Any]],
    process: Mapping[str, Any] | None,
    pinned: str | None,
    *,
    notices: Sequence[str] = (),
    verbosity: int = 0,
) -> list[str]:
    """Per worker its cores; in test scope the total and the longest waits.

    pytest's conventions: at ``-q`` (verbosity -1) only what went wrong or
    differs from what was asked (errors, pinned cores, long waits, notices);
    at ``-qq`` nothing.
    """
    if verbosity < -1:
        return []
    info: list[str] = []  # what a quiet run leaves out
    problems: list[str] = list(notices)
    slices: dict[str, str] = {}
    for worker, info_ in sorted(workers.items()):
        if info_.get("cores"):
            slices[worker] = str(info_["cores"])
        elif info_.get("error"):
            problems.append(f"{worker}: {info_['error']}")
        if info_.get("pinned"):
            problems.append(f"{worker}: {info_['pinned']}")
    if scope == "worker":
        for _, cores, _, name in records:
            if name and name not in slices:
                slices[name] = cores
        if slices:
            info.append("cores per worker: " + ", ".join(f"{w} {c}" for w, c in sorted(slices.items())))
        elif process and process.get("cores"):
            info.append(f"this process held cores {process['cores']}")
        if process and process.get("error"):
            problems.append(str(process["error"]))
    elif records:
        total = sum(wait for _, _, wait, _ in records)
        info.append(
            f"{len(records)} test{'s' if len(records) != 1 else ''} leased cores; total wait {total:.1f}s"
        )
        longest = sorted(records, key=lambda r: -r[2])[:3]
        if longest[0][2] > 0.05:
            info.append(
                "longest waits: " + ", ".join(f"{n} {w:.1f}s ({c})" for n, c, w, _ in longest if w > 0.05)
            )
        slow = [r for r in records if r[2] > LONG_WAIT]
        if slow:
            problems.append(
                f"{len(slow)} test{'s' if len(slow) != 1 else ''} waited over {LONG_WAIT:g}s for cores: "
                "the pool is busy (see `python -m pytest_neuron status`)"
            )
    if pinned:
        problems.append(pinned)
    return problems if verbosity < 0 else info + problems
