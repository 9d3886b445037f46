"""Text of the report header and the terminal summary: pure functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .coreset import format_coreset

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .plan import RunPlan
    from .settings import Resolved

LONG_WAIT = 5.0  # seconds; a wait longer than this earns a line of its own


def wait_line(waits: Sequence[tuple[float, bool]]) -> str | None:
    """Time spent waiting for cores: every lease request, whether it got cores (``True``) or not.

    The one definition, used by the terminal summary and the timeline alike.
    """
    if not waits:
        return None
    total = sum(seconds for seconds, _ in waits)
    failed = sum(1 for _, got in waits if not got)
    n = len(waits)
    text = f"waited {total:.1f}s for cores over {n} lease request{'s' if n != 1 else ''}"
    return text + (f" ({failed} got none)" if failed else "")


def header_lines(
    plan: RunPlan, role: str, verbose: bool, test_defaults: Mapping[str, Resolved[Any]] | None = None
) -> list[str]:
    """The pool, scope and lock directory; with ``-v`` also every other setting not at its default,
    the run settings and the per-test runtime settings (``test_defaults``) alike, with its source."""
    topo = plan.topology
    if topo is None:
        return ["neuron: no Neuron cores (no device found, no pool given); neuron tests will be skipped"]
    limit = f", at most {topo.limit} at once" if topo.limit is not None else ""
    line = f"neuron: pool {format_coreset(topo.cores)} from {topo.source}{limit}; scope {plan.scope}"
    shown = {"scope", "lock_dir"}
    if plan.scope == "worker" and role == "controller" and plan.slice_size:
        line += f", {plan.slice_size} core{'s' if plan.slice_size != 1 else ''} per worker"
        shown.add("cores_per_worker")
    if verbose and plan.settings["scope"].source != "default":
        line += f" (from {plan.settings['scope'].source})"
    lines = [line, f"neuron: lock directory {plan.lock_root} ({plan.lock_source})"]
    if verbose:
        for name, resolved in {**plan.settings, **(test_defaults or {})}.items():
            if resolved.source != "default" and name not in shown:
                lines.append(f"neuron: {name} {resolved.value} (from {resolved.source})")
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
    trace: tuple[str, str] | None = None,
) -> list[str]:
    """Per worker its cores; the time spent waiting (:func:`wait_line`); in test scope the longest waits.

    ``records``: ``(nodeid, cores, wait, worker)`` per test that asked for a lease, ``cores`` empty
    when it got none; ``trace``: where the JSON trace and the HTML timeline were written.
    pytest's conventions: at ``-q`` (verbosity -1) only what went wrong or differs from what was
    asked (errors, pinned cores, long waits, notices); at ``-qq`` nothing.
    """
    if verbosity < -1:
        return []
    info: list[str] = []  # what a quiet run leaves out
    problems: list[str] = list(notices)
    slices: dict[str, str] = {}
    waits: list[tuple[float, bool]] = []
    for worker, entry in sorted(workers.items()):
        if entry.get("cores"):
            slices[worker] = str(entry["cores"])
        elif entry.get("error"):
            problems.append(f"{worker}: {entry['error']}")
        if entry.get("pinned"):
            problems.append(f"{worker}: {entry['pinned']}")
        if entry.get("wait") is not None:
            waits.append((float(entry["wait"]), bool(entry.get("cores"))))
    if scope == "worker":
        for _, cores, _, name in records:
            if name and cores and name not in slices:
                slices[name] = cores
        if slices:
            info.append("cores per worker: " + ", ".join(f"{w} {c}" for w, c in sorted(slices.items())))
        elif process and process.get("cores"):
            info.append(f"this process held cores {process['cores']}")
        if process and process.get("error"):
            problems.append(str(process["error"]))
        if process and process.get("wait") is not None:
            waits.append((float(process["wait"]), bool(process.get("cores"))))
        if waits and (line := wait_line(waits)):
            info.append(line)
    elif records:
        leased = [r for r in records if r[1]]
        waited = wait_line([(wait, bool(cores)) for _, cores, wait, _ in records])
        info.append(f"{len(leased)} test{'s' if len(leased) != 1 else ''} leased cores; {waited}")
        longest = sorted(leased, key=lambda r: -r[2])[:3]
        if longest and longest[0][2] > 0.05:
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
    if trace is not None:
        info.append(f"trace written to {trace[0]} (Perfetto, chrome://tracing) and {trace[1]} (timeline)")
    return problems if verbosity < 0 else info + problems


# -- a variable changed after the plugin set it ----------------------------------------------------
OVERRIDE_REMEDY = (
    "by a conftest, fixture or test). A runtime started after the change uses the new value, which this "
    "run's lease does not cover, so it may collide with other runs; remove the assignment and read the "
    "cores from the neuron_cores fixture or the environment pytest-neuron sets"
)


def override_text(var: str, expected: str | None, actual: str | None, worker: str | None) -> str:
    where = f" in {worker}" if worker else ""
    shown = "unset" if actual is None else repr(actual)
    plugin = "unset" if expected is None else repr(expected)
    return (
        f"{var} was changed{where} after pytest-neuron set it (it set {plugin}, now {shown}; "
        + OVERRIDE_REMEDY
    )
