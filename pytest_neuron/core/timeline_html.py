"""The self-contained HTML timeline of a run: inline SVG and CSS, no script, no network.

One lane per core with a bar per lease (labelled with its test id, a
``<title>`` tooltip whose first line is the full name), grey bars for the
leases and reservations of other runs seen on the same cores, then one lane
per worker with its tests (skipped ones too) and, hatched, its waits for
cores.  Pure: text in, text out.
"""

from __future__ import annotations

import math
import time
from html import escape
from typing import TYPE_CHECKING

from .coreset import format_coreset
from .coreset import runs as core_runs
from .report import wait_line
from .timeline import RunSpan

if TYPE_CHECKING:
    from .timeline import LeaseSpan, OtherSpan, Timeline, WaitSpan

WIDTH, LEFT, RIGHT, TOP = 1400, 96, 24, 34
WORKER_LANE = 16
PALETTE = (  # no orange or red: those mean waits and failures
    "#4e79a7", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
    "#a0cbe8", "#8cd17d", "#ff9da7", "#79706e", "#86bcb6", "#d4a6c8",
)  # fmt: skip
OUTCOME_FILL = {"passed": "#b9dcb0", "failed": "#e8837c", "error": "#e8837c", "skipped": "#d5d5d5"}
OTHER_FILL = "#9e9e9e"  # another run's lease; its reservations are hatched in the same grey
CSS = """
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px 20px; color: #222; }
h1 { font-size: 17px; margin: 0 0 4px; }
p { margin: 2px 0 6px; color: #444; }
p.hint { font-size: 12px; color: #777; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
.lease rect, .test rect { stroke: #fff; stroke-width: 0.6; }
.lease:hover rect, .test:hover rect, .wait:hover rect { stroke: #000; stroke-width: 1.2; }
.open rect { stroke: #222; stroke-dasharray: 3 2; }
.label { font-size: 10px; pointer-events: none; }
.failed rect { stroke: #d62728; stroke-width: 1.6; }
.tlabel { fill: #234; font-size: 10px; pointer-events: none; }
.lane-label { fill: #444; font-size: 11px; }
.axis { fill: #666; font-size: 10px; }
.grid { stroke: #e4e4e4; stroke-width: 1; }
.section { fill: #222; font-size: 12px; font-weight: 600; }
"""


def nice_step(span: float, target: int = 10) -> float:
    """A 1-2-5 tick step giving at most about ``target`` ticks over ``span`` seconds."""
    if span <= 0:
        return 1.0
    raw = span / target
    base = 10 ** math.floor(math.log10(raw))
    return float(next(m * base for m in (1, 2, 5, 10) if m * base >= raw))


def short_label(nodeid: str) -> str:
    """``tests/test_x.py::TestA::test_b[4]`` -> ``test_b[4]``."""
    return nodeid.rsplit("::", 1)[-1] if "::" in nodeid else nodeid.rsplit("/", 1)[-1]


def fit_text(text: str, width: float, size: float = 10.0) -> str:
    """``text`` cut to about ``width`` px at ``size`` px, with an ellipsis; empty if nothing fits."""
    room = int((width - 6) / (size * 0.6))
    if len(text) <= room:
        return text
    return text[: room - 1] + "…" if room >= 6 else ""


def ink(fill: str) -> str:
    """Black or white text, whichever reads better on the ``#rrggbb`` colour ``fill``."""
    r, g, b = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "#1d1d1d" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#ffffff"


def runs(rows: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of lane indices as (first, count): coreset.runs, counted."""
    return [(first, last - first + 1) for first, last in core_runs(rows)]


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 100 else f"{value:.1f} s"


class _Scale:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0, self.span = t0, max(t1 - t0, 1e-6)

    def x(self, t: float) -> float:
        return LEFT + (t - self.t0) / self.span * (WIDTH - LEFT - RIGHT)

    def box(self, start: float, end: float) -> tuple[float, float]:
        x0 = self.x(start)
        return x0, max(self.x(end) - x0, 0.8)


def _lease_svg(
    lease: LeaseSpan, lanes: dict[int, int], sc: _Scale, *, y0: float, h: float, color: str, outcome: str
) -> str:
    t0 = sc.t0
    state = {"pinned": "\npinned: held until its process exited", "open": "\nnever released"}
    tip = (
        f"{lease.label}\ncores {format_coreset(lease.cores)} ({lease.worker})\n"
        f"start {_seconds(lease.start - t0)}, held {_seconds(lease.end - lease.start)}\n"
        f"waited {_seconds(lease.wait)}{state.get(lease.state, '')}"
    )
    tip += f"\ntest {outcome}" if outcome else ""
    x, w = sc.box(lease.start, lease.end)
    cls = "lease" + ("" if lease.state == "released" else " open")
    cls += " failed" if outcome in ("failed", "error") else ""
    parts = [f'<g class="{cls}"><title>{escape(tip)}</title>']
    blocks = runs([lanes[c] for c in lease.cores if c in lanes])
    for first, count in blocks:
        y, bh = y0 + first * h, count * h - 1
        parts.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{bh:.2f}" fill="{color}"/>')
    if blocks:
        first, count = max(blocks, key=lambda b: b[1])
        size = min(10.0, count * h - 2)
        text = fit_text(short_label(lease.label), w, size) if size >= 7 else ""
        if text:
            ty = y0 + first * h + (count * h - 1) / 2 + size * 0.35
            parts.append(
                f'<text class="label" x="{x + 3:.2f}" y="{ty:.2f}" fill="{ink(color)}" '
                f'style="font-size:{size:.0f}px">{escape(text)}</text>'
            )
    return "".join(parts) + "</g>"


def _other_svg(other: OtherSpan, lanes: dict[int, int], sc: _Scale, *, y0: float, h: float) -> str:
    kind = "lease of another run" if other.kind == "lease" else "cores reserved by another run's waiter"
    who = f" ({other.who})" if other.who else ""
    tip = (
        f"{kind}: pid {other.pid}{who}, {other.what}\ncores {format_coreset(other.cores)}, "
        f"seen from {_seconds(other.start - sc.t0)} to {_seconds(other.end - sc.t0)}"
    )
    tip += f"\n{other.command}" if other.command else ""
    x, w = sc.box(other.start, other.end)
    fill = OTHER_FILL if other.kind == "lease" else "url(#reserved)"
    part = 1.0 if other.kind == "lease" else 0.4  # a reservation: the lower part, over this run's leases
    parts = [f'<g class="other {other.kind}"><title>{escape(tip)}</title>']
    for first, count in runs([lanes[c] for c in other.cores if c in lanes]):
        full = count * h - 1
        y, bh = y0 + first * h + full * (1 - part), full * part
        parts.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{bh:.2f}" fill="{fill}"/>')
    return "".join(parts) + "</g>"


def _slice_tests_svg(
    lease: LeaseSpan, tests: list[RunSpan], lanes: dict[int, int], sc: _Scale, *, y0: float, h: float
) -> str:
    """A worker-scope slice's tests, drawn inside its bar: as tall as its cores, not a sliver."""
    parts: list[str] = []
    blocks = runs([lanes[c] for c in lease.cores if c in lanes])
    for test in tests:
        if test.worker != lease.worker or test.end < lease.start or test.start > lease.end:
            continue
        x, w = sc.box(max(test.start, lease.start), min(test.end, lease.end))
        tip = f"{test.nodeid}\n{test.outcome} on {test.worker} (cores {format_coreset(lease.cores)})"
        tip += f"\nstart {_seconds(test.start - sc.t0)}, ran {_seconds(test.end - test.start)}"
        parts.append(f'<g class="slice-test {test.outcome}"><title>{escape(tip)}</title>')
        for first, count in blocks:
            y, bh = y0 + first * h + 2, max(count * h - 5, 1.0)
            fill = OUTCOME_FILL.get(test.outcome, "#ccc")
            parts.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{bh:.2f}" fill="{fill}"/>')
        first, count = max(blocks, key=lambda b: b[1]) if blocks else (0, 0)
        size = min(10.0, count * h - 4)
        text = fit_text(short_label(test.nodeid), w, size) if blocks and size >= 7 else ""
        if text:
            ty = y0 + first * h + (count * h - 1) / 2 + size * 0.35
            style = f'style="font-size:{size:.0f}px"'
            parts.append(f'<text class="tlabel" x="{x + 3:.2f}" y="{ty:.2f}" {style}>{escape(text)}</text>')
        parts.append("</g>")
    return "".join(parts)


def _worker_svg(span: RunSpan | WaitSpan, y: float, sc: _Scale) -> str:
    x, w = sc.box(span.start, span.end)
    held = _seconds(span.end - span.start)
    if isinstance(span, RunSpan):
        tip = f"{span.nodeid}\n{span.outcome} on {span.worker}\n"
        tip += f"start {_seconds(span.start - sc.t0)}, ran {held}"
        fill, cls, text = (
            OUTCOME_FILL.get(span.outcome, "#ccc"),
            "test",
            fit_text(short_label(span.nodeid), w),
        )
        label = (
            f'<text class="tlabel" x="{x + 3:.2f}" y="{y + 11.5:.2f}">{escape(text)}</text>' if text else ""
        )
    else:
        tip = f"{span.worker} waited {held} for {span.k} core(s) for {span.label}"
        tip += f"\nno lease: {span.error}" if span.error else ""
        fill, cls, label = ("url(#failed)" if span.error else "url(#hatch)"), "wait", ""
    rect = f'<rect x="{x:.2f}" y="{y + 1:.2f}" width="{w:.2f}" height="{WORKER_LANE - 2}" fill="{fill}"/>'
    return f'<g class="{cls}"><title>{escape(tip)}</title>{rect}{label}</g>'


def _rect(attrs: str, box: tuple[float, float, float, float], fill: str) -> str:
    x, y, w, h = box
    return f'<rect {attrs} x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" fill="{fill}"/>'


def _text(
    cls: str, at: tuple[float, float], text: str, anchor: str = "start", size: float | None = None
) -> str:
    x, y = at
    style = "" if size is None else f' style="font-size:{size:.0f}px"'
    return f'<text class="{cls}" x="{x:.2f}" y="{y:.2f}" text-anchor="{anchor}"{style}>{escape(text)}</text>'


def _pattern(name: str, light: str, dark: str) -> str:
    return (
        f'<pattern id="{name}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{light}"/>'
        f'<rect width="3" height="6" fill="{dark}"/></pattern>'
    )


def _legend(y: float) -> list[str]:
    items = [
        ("#4e79a7", "core leased (colour: worker)"),
        ("url(#hatch)", "waiting for cores"),
        ("url(#failed)", "wait that got no cores"),
        (OTHER_FILL, "another run's lease"),
        ("url(#reserved)", "reserved by another run"),
        (OUTCOME_FILL["passed"], "test passed"),
        (OUTCOME_FILL["failed"], "failed"),
        (OUTCOME_FILL["skipped"], "skipped"),
    ]
    out, x = [], float(LEFT)
    for fill, text in items:
        out.append(f'<rect x="{x:.0f}" y="{y - 9:.0f}" width="14" height="11" fill="{fill}" stroke="#999"/>')
        out.append(f'<text class="axis" x="{x + 19:.0f}" y="{y:.0f}">{escape(text)}</text>')
        x += 30 + len(text) * 5.6
    return out


def render_svg(timeline: Timeline) -> str:
    """The timeline as one ``<svg>`` element (well-formed XML)."""
    cores, workers = timeline.cores, timeline.workers
    sc = _Scale(timeline.start, timeline.end)
    h = float(max(7, min(22, 400 // max(1, len(cores)))))
    lanes = {core: i for i, core in enumerate(cores)}
    cores_y = TOP + 22
    workers_y = cores_y + len(cores) * h + 30
    height = workers_y + len(workers) * WORKER_LANE + 34
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" '
        f'width="{WIDTH}" height="{height:.0f}" role="img">',
        f"<defs>{_pattern('hatch', '#fde3c0', '#f28e2b')}{_pattern('failed', '#f6c3c0', '#d62728')}"
        f"{_pattern('reserved', '#e6e6e6', OTHER_FILL)}</defs>",
        *_legend(14.0),
    ]
    step = nice_step(sc.span)
    decimals = max(0, -math.floor(math.log10(step)))
    bottom, plot = height - 22, WIDTH - LEFT - RIGHT
    for i in range(int(sc.span / step + 1e-9) + 1):
        x = sc.x(sc.t0 + i * step)
        out.append(f'<line class="grid" x1="{x:.2f}" y1="{TOP:.0f}" x2="{x:.2f}" y2="{bottom:.0f}"/>')
        out += [
            _text("axis", (x, ty), f"{i * step:.{decimals}f}s", "middle") for ty in (TOP - 4, bottom + 13)
        ]
    out.append(_text("section", (8, cores_y - 6), "cores"))
    every = max(1, math.ceil(11 / h))
    size = min(11.0, max(8.0, h - 3))
    for core, i in lanes.items():
        y = cores_y + i * h
        out.append(
            _rect(
                f'class="lane" data-core="{core}"', (LEFT, y, plot, h - 1), "#f7f7f7" if i % 2 else "#efefef"
            )
        )
        if i % every == 0:
            out.append(
                _text("lane-label", (LEFT - 6, y + (h - 1) / 2 + size * 0.35), f"core {core}", "end", size)
            )
    colors = {w: PALETTE[i % len(PALETTE)] for i, w in enumerate(workers)}
    outcomes = {(t.worker, t.nodeid): t.outcome for t in timeline.tests}
    for lease in timeline.leases:
        outcome = outcomes.get((lease.worker, lease.label), "")
        out.append(_lease_svg(lease, lanes, sc, y0=cores_y, h=h, color=colors[lease.worker], outcome=outcome))
        if lease.label == lease.worker:  # a worker-scope slice: its tests inside it
            out.append(_slice_tests_svg(lease, timeline.tests, lanes, sc, y0=cores_y, h=h))
    out += [_other_svg(other, lanes, sc, y0=cores_y, h=h) for other in timeline.others]
    out.append(_text("section", (8, workers_y - 6), "workers"))
    rows = {w: workers_y + i * WORKER_LANE for i, w in enumerate(workers)}
    for worker, y in rows.items():
        out.append(_rect('class="worker-lane"', (LEFT, y, plot, WORKER_LANE - 1), "#f4f4f4"))
        out.append(_text("lane-label", (LEFT - 26, y + 11.5), worker, "end"))
        out.append(_rect('class="swatch"', (LEFT - 20, y + 3, 9, 9), colors[worker]))
    spans: list[RunSpan | WaitSpan] = [*timeline.tests, *timeline.waits]
    out += [_worker_svg(span, rows[span.worker], sc) for span in spans]
    out.append("</svg>")
    return "\n".join(out)


def summary(timeline: Timeline) -> str:
    """One line: tests, cores, the run's wall time, time spent waiting (report.wait_line), how busy."""
    wall = timeline.duration
    held = sum((s.end - s.start) * len(s.cores) for s in timeline.leases)
    busy = held / (wall * len(timeline.cores)) if wall > 0 and timeline.cores else 0.0
    waited = wait_line(timeline.wait_list()) or "no lease request"
    others = len({o.pid for o in timeline.others})
    seen = f"; {others} other run process{'es' if others != 1 else ''} seen on these cores" if others else ""
    return (
        f"{len(timeline.tests)} tests, {len(timeline.leases)} leases on {len(timeline.cores)} cores, "
        f"{len(timeline.workers)} workers; the run took {wall:.1f}s; {waited}; "
        f"cores busy {busy:.0%} of the time{seen}"
    )


def title_of(timeline: Timeline) -> str:
    """``pytest-neuron timeline: python -m pytest -n 4 (2026-12-01 08:45:15)``."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timeline.start)) if timeline.spans else ""
    what = timeline.command or f"run {timeline.run_id}"
    return f"pytest-neuron timeline: {what}" + (f" ({when})" if when else "")


def render_html(timeline: Timeline, *, title: str | None = None) -> str:
    """A complete, self-contained HTML page."""
    title = title or title_of(timeline)
    body = render_svg(timeline) if timeline.spans else "<p>Nothing was leased in this run.</p>"
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n<p>{escape(summary(timeline))}.</p>\n"
        '<p class="hint">Hover a bar for its full test id, cores, start, duration and wait; grey bars are '
        "other runs on the same cores. The run's time counts from the plugin's start to the end of the "
        "session (pytest's own total starts a little later and also counts the terminal summary); the "
        "wait is the one the terminal's neuron section gives. The JSON trace next to this file opens in "
        "Perfetto or chrome://tracing.</p>\n"
        f"{body}\n</body>\n</html>\n"
    )
