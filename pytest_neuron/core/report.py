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
) -> list[str]:
    """Per worker its cores; in test scope the total and the longest waits."""
    lines: list[str] = []
    slices: dict[str, str] = {}
    for worker, info in sorted(workers.items()):
        if info.get("cores"):
            slices[worker] = str(info["cores"])
        elif info.get("error"):
            lines.append(f"{worker}: {info['error']}")
        if info.get("pinned"):
            lines.append(f"{worker}: {info['pinned']}")
    if scope == "worker":
        for _, cores, _, name in records:
            if name and name not in slices:
                slices[name] = cores
        if slices:
            lines.insert(0, "cores per worker: " + ", ".join(f"{w} {c}" for w, c in sorted(slices.items())))
        elif process and process.get("cores"):
            lines.insert(0, f"this process held cores {process['cores']}")
        if process and process.get("error"):
            lines.append(str(process["error"]))
    elif records:
        total = sum(wait for _, _, wait, _ in records)
        lines.append(
            f"{len(records)} test{'s' if len(records) != 1 else ''} leased cores; total wait {total:.1f}s"
        )
        longest = sorted(records, key=lambda r: -r[2])[:3]
        if longest[0][2] > 0.05:
            lines.append(
                "longest waits: " + ", ".join(f"{n} {w:.1f}s ({c})" for n, c, w, _ in longest if w > 0.05)
            )
        slow = [r for r in records if r[2] > LONG_WAIT]
        if slow:
            lines.append(
                f"{len(slow)} test{'s' if len(slow) != 1 else ''} waited over {LONG_WAIT:g}s for cores: "
                "the pool is busy (see `python -m pytest_neuron status`)"
            )
    if pinned:
        lines.append(pinned)
    return lines
