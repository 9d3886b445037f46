"""``--neuron-trace``: the Chrome trace JSON, the HTML timeline, and the merge of worker parts.

The checkers here (:func:`trace_problems`, :func:`core_overlaps`) are written
from the trace-event format's description and share no code with
``pytest_neuron.plugins.trace``.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_neuron.core.timeline import (
    MIN_WAIT,
    LeaseSpan,
    RunSpan,
    Timeline,
    WaitSpan,
    html_path,
    natural_key,
    timeline_from_records,
    trace_document,
)
from pytest_neuron.core.timeline_html import fit_text, ink, nice_step, render_html, runs, short_label
from pytest_neuron.plugins.trace import Trace, read_parts

if TYPE_CHECKING:
    from pathlib import Path

T0 = 1_700_000_000.0  # a realistic time.time()
PHASES = ("B", "E", "X", "i", "I", "C", "M", "b", "e", "n", "s", "t", "f", "P", "O", "N", "D")
SVG_NS = "{http://www.w3.org/2000/svg}"


# -- independent checkers ----------------------------------------------------------------------
def trace_problems(doc: Any) -> list[str]:
    """What is wrong with ``doc`` as a trace-event JSON Object Format document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["not an object with a traceEvents list"]
    problems = [] if doc.get("displayTimeUnit") in ("ms", "ns") else ["displayTimeUnit must be ms or ns"]
    for i, ev in enumerate(doc["traceEvents"]):
        where = f"event {i} {ev!r:.80}"
        if not isinstance(ev, dict) or ev.get("ph") not in PHASES:
            problems.append(f"{where}: no valid ph")
            continue
        for key in ("name", "pid", "tid"):
            if key not in ev:
                problems.append(f"{where}: no {key}")
        if not isinstance(ev.get("name"), str) or not all(isinstance(ev.get(k), int) for k in ("pid", "tid")):
            problems.append(f"{where}: name must be a string, pid and tid integers")
        if ev["ph"] == "M":
            args = ev.get("args", {})
            if ev["name"] in ("process_name", "thread_name") and not isinstance(args.get("name"), str):
                problems.append(f"{where}: metadata without args.name")
            elif ev["name"].endswith("sort_index") and not isinstance(args.get("sort_index"), int):
                problems.append(f"{where}: sort index without args.sort_index")
        elif ev["ph"] == "X":
            for key in ("ts", "dur"):
                value = ev.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                    problems.append(f"{where}: {key} must be a non-negative number")
            if not isinstance(ev.get("cat"), str) or not isinstance(ev.get("args", {}), dict):
                problems.append(f"{where}: cat must be a string and args an object")
    return problems


def named(doc: dict[str, Any], kind: str) -> dict[int, dict[int, str]]:
    """pid -> {tid: name} from the ``kind`` (process_name/thread_name) metadata events."""
    names: dict[int, dict[int, str]] = {}
    for ev in doc["traceEvents"]:
        if ev["ph"] == "M" and ev["name"] == kind:
            names.setdefault(ev["pid"], {})[ev["tid"]] = ev["args"]["name"]
    return names


def process_pid(doc: dict[str, Any], name: str) -> int:
    return next(pid for pid, tids in named(doc, "process_name").items() if name in tids.values())


def core_overlaps(doc: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(core, first, second) for each two spans of one core's row that overlap in time."""
    pid = process_pid(doc, "cores")
    rows: dict[int, list[tuple[float, float, str]]] = {}
    for ev in doc["traceEvents"]:
        if ev["ph"] == "X" and ev["pid"] == pid:
            rows.setdefault(ev["tid"], []).append((ev["ts"], ev["ts"] + ev["dur"], ev["name"]))
    found = []
    for core, spans in rows.items():
        spans.sort()
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            if start < end:
                found.append((core, a, b))
    return found


def spans_of(doc: dict[str, Any], process: str) -> list[dict[str, Any]]:
    pid = process_pid(doc, process)
    return [ev for ev in doc["traceEvents"] if ev["ph"] == "X" and ev["pid"] == pid]


def svg_of(page: str) -> ET.Element:
    """The page's ``<svg>`` element, parsed as XML (so it must be well-formed)."""
    match = re.search(r"<svg\b.*</svg>", page, re.S)
    assert match is not None, "no <svg> element"
    return ET.fromstring(match.group(0))


class TagBalance(HTMLParser):
    VOID = frozenset({"meta", "link", "br", "img", "input", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")


# -- data -----------------------------------------------------------------------------------------
def lease_rec(label: str, cores: list[int], start: float, wait: float = 0.0, **more: Any) -> dict[str, Any]:
    worker, pid = more.pop("worker", "gw0"), more.pop("pid", 1)
    rec = {"kind": "lease", "id": more.pop("id", label), "label": label, "cores": cores}
    return {**rec, "physical": cores, "start": start, "wait": wait, "worker": worker, "pid": pid, **more}


def release_rec(lease_id: str, t: float, worker: str = "gw0", pinned: bool = False) -> dict[str, Any]:
    return {"kind": "release", "id": lease_id, "t": t, "pinned": pinned, "worker": worker, "pid": 1}


def phase_rec(
    nodeid: str, when: str, start: float, outcome: str = "passed", worker: str = "gw0"
) -> dict[str, Any]:
    rec = {"kind": "phase", "nodeid": nodeid, "when": when, "start": start, "stop": start + 0.1}
    return {**rec, "outcome": outcome, "worker": worker, "pid": 1}


def sample_timeline(cores: int = 8, tests: int = 40, workers: int = 4) -> Timeline:
    """Back-to-back leases on every core (each starts exactly where the last ended), tests and waits."""
    timeline = Timeline(pool=tuple(range(cores)), run_id="abc")
    free_at = [T0] * cores
    for i in range(tests):
        k = (1, 2, 4)[i % 3] if cores >= 4 else 1
        first = (i * k) % cores // k * k
        window = tuple(range(first, first + k))
        start = max(free_at[c] for c in window)
        end = start + 0.05 + (i % 7) * 0.013
        worker = f"gw{i % workers}"
        nodeid = f"tests/test_model.py::test_case[{i}]"
        timeline.leases.append(LeaseSpan(nodeid, worker, window, start, end, wait=0.02 * (i % 3)))
        timeline.tests.append(
            RunSpan(nodeid, worker, start + 0.001, end - 0.001, ("passed", "failed")[i % 9 == 0])
        )
        if i % 3:
            timeline.waits.append(WaitSpan(nodeid, worker, start - 0.02 * (i % 3), start, k))
        for c in window:
            free_at[c] = end
    timeline.waits.append(WaitSpan("tests/test_big.py::test_all", "gw0", T0, T0 + 0.5, 32, error="gave up"))
    return timeline


@dataclass
class FakeLease:
    lease_id: str
    cores: tuple[int, ...]
    physical: tuple[int, ...]
    wait_seconds: float
    acquired_at: float


# -- records -> timeline ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("records", "expected"),
    [
        pytest.param(
            [lease_rec("t1", [0, 1], T0, 0.5), release_rec("t1", T0 + 2)],
            [LeaseSpan("t1", "gw0", (0, 1), T0, T0 + 2, 0.5, (0, 1), "t1", "released")],
            id="released",
        ),
        pytest.param(
            [lease_rec("gw0", [2], T0), {"kind": "close", "t": T0 + 9, "worker": "gw0", "pid": 1}],
            [LeaseSpan("gw0", "gw0", (2,), T0, T0 + 9, 0.0, (2,), "gw0", "open")],
            id="slice-ends-at-close",
        ),
        pytest.param(
            [
                lease_rec("t1", [3], T0),
                release_rec("t1", T0 + 1, pinned=True),
                {"kind": "close", "t": T0 + 5, "worker": "gw0", "pid": 1},
            ],
            [LeaseSpan("t1", "gw0", (3,), T0, T0 + 5, 0.0, (3,), "t1", "pinned")],
            id="pinned-until-exit",
        ),
        pytest.param(
            [lease_rec("t1", [3], T0)],
            [LeaseSpan("t1", "gw0", (3,), T0, T0 + 100, 0.0, (3,), "t1", "open")],
            id="crashed-worker-ends-now",
        ),
        pytest.param(
            [
                lease_rec("t1", [0], T0, pid=7),
                {"kind": "close", "t": T0 + 1, "worker": "gw0", "pid": 8},  # a restarted gw0
            ],
            [LeaseSpan("t1", "gw0", (0,), T0, T0 + 100, 0.0, (0,), "t1", "open")],
            id="close-of-another-process",
        ),
    ],
)
def test_leases_from_records(records: list[dict[str, Any]], expected: list[LeaseSpan]) -> None:
    assert timeline_from_records(records, now=T0 + 100).leases == expected


def test_waits_come_from_leases_and_from_failed_requests() -> None:
    records = [
        lease_rec("slow", [0], T0 + 1.0, wait=1.0),
        lease_rec("quick", [1], T0, wait=MIN_WAIT / 2),
        {
            "kind": "wait",
            "label": "big",
            "start": T0,
            "end": T0 + 3,
            "k": 8,
            "error": "timeout",
            "worker": "gw1",
        },
    ]
    waits = timeline_from_records(records, now=T0 + 5).waits
    assert waits == [
        WaitSpan("slow", "gw0", T0, T0 + 1.0, 1),
        WaitSpan("big", "gw1", T0, T0 + 3, 8, "timeout"),
    ]


@pytest.mark.parametrize(
    ("phases", "outcome"),
    [
        ((("setup", "passed"), ("call", "passed"), ("teardown", "passed")), "passed"),
        ((("setup", "passed"), ("call", "failed"), ("teardown", "passed")), "failed"),
        ((("setup", "failed"), ("teardown", "passed")), "error"),
        ((("setup", "passed"), ("call", "passed"), ("teardown", "failed")), "error"),
        ((("setup", "skipped"), ("teardown", "passed")), "skipped"),
    ],
)
def test_phases_merge_into_one_test_span(phases: tuple[tuple[str, str], ...], outcome: str) -> None:
    records = [phase_rec("t::a", when, T0 + i, result) for i, (when, result) in enumerate(phases)]
    (test,) = timeline_from_records(records, now=T0).tests
    assert test == RunSpan("t::a", "gw0", T0, T0 + len(phases) - 1 + 0.1, outcome)


def test_a_test_run_twice_is_two_spans() -> None:
    records = [phase_rec("t::a", w, T0 + i) for i, w in enumerate(("setup", "call", "teardown") * 2)]
    assert [t.start for t in timeline_from_records(records, now=T0).tests] == [T0, T0 + 3]


def test_natural_worker_order() -> None:
    assert sorted(["gw10", "gw2", "gw1", "pytest"], key=natural_key) == ["gw1", "gw2", "gw10", "pytest"]


# -- the Chrome trace -----------------------------------------------------------------------------
def test_trace_is_valid_trace_event_json() -> None:
    doc = json.loads(json.dumps(trace_document(sample_timeline()), allow_nan=False))
    assert trace_problems(doc) == []
    assert doc["displayTimeUnit"] == "ms"
    assert min(ev["ts"] for ev in doc["traceEvents"] if ev["ph"] == "X") == 0
    assert set(named(doc, "process_name")[process_pid(doc, "cores")].values()) == {"cores"}
    assert named(doc, "thread_name")[process_pid(doc, "cores")] == {c: f"core {c}" for c in range(8)}
    assert set(named(doc, "thread_name")[process_pid(doc, "workers")].values()) == {
        "gw0",
        "gw1",
        "gw2",
        "gw3",
    }
    sort = {
        ev["tid"]: ev["args"]["sort_index"] for ev in doc["traceEvents"] if ev["name"] == "thread_sort_index"
    }
    assert sort[5] == 5


def test_each_core_of_a_lease_gets_a_span_named_by_its_test() -> None:
    lease = LeaseSpan("tests/t.py::test_x[4]", "gw1", (4, 5, 6, 7), T0, T0 + 1.5, wait=0.25)
    doc = trace_document(Timeline(leases=[lease], waits=[WaitSpan(lease.label, "gw1", T0 - 0.25, T0, 4)]))
    spans = spans_of(doc, "cores")
    assert sorted(ev["tid"] for ev in spans) == [4, 5, 6, 7]
    assert {ev["name"] for ev in spans} == {"tests/t.py::test_x[4]"}
    assert {(ev["ts"], ev["dur"]) for ev in spans} == {(250_000, 1_500_000)}
    assert spans[0]["args"]["cores"] == "4-7"
    (wait,) = spans_of(doc, "waits")
    assert (wait["ts"], wait["dur"], wait["cat"], wait["cname"]) == (
        0,
        250_000,
        "wait",
        "thread_state_iowait",
    )


def test_spans_of_one_core_never_overlap() -> None:
    doc = trace_document(sample_timeline(cores=8, tests=200))
    assert spans_of(doc, "cores")
    assert core_overlaps(doc) == []


def test_the_overlap_check_finds_overlapping_leases() -> None:
    bad = Timeline(
        leases=[
            LeaseSpan("a", "gw0", (0, 1), T0, T0 + 2),
            LeaseSpan("b", "gw1", (1, 2), T0 + 1.999, T0 + 3),
            LeaseSpan("c", "gw1", (0,), T0 + 2, T0 + 3),
        ]
    )
    assert core_overlaps(trace_document(bad)) == [(1, "a", "b")]


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(0, 5), st.floats(0, 5)),
        min_size=1,
        max_size=30,
    ),
    st.floats(1e9, 2e9),
)
def test_back_to_back_leases_never_overlap_after_rounding(
    steps: list[tuple[int, float, float]], base: float
) -> None:
    """Leases that touch (one ends when the next starts) stay disjoint in whole microseconds."""
    free_at = [base] * 4
    leases = []
    for core, gap, hold in steps:
        start = free_at[core] + gap
        leases.append(LeaseSpan("t", "gw0", (core,), start, start + hold))
        free_at[core] = start + hold
    assert core_overlaps(trace_document(Timeline(leases=leases))) == []


# -- the HTML timeline ---------------------------------------------------------------------------
@pytest.mark.parametrize(("cores", "tests", "workers"), [(8, 40, 4), (32, 300, 8), (128, 300, 32)])
def test_html_is_well_formed_with_a_lane_per_core_and_a_title_per_lease(
    cores: int, tests: int, workers: int
) -> None:
    timeline = sample_timeline(cores, tests, workers)
    page = render_html(timeline, title="run <&>")
    checker = TagBalance()
    checker.feed(page)
    assert checker.errors == []
    assert checker.stack == []
    assert "<script" not in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    svg = svg_of(page)
    lanes = [el for el in svg.iter(f"{SVG_NS}rect") if el.get("class") == "lane"]
    assert [int(el.get("data-core", -1)) for el in lanes] == list(range(cores))
    leases = [el for el in svg.iter(f"{SVG_NS}g") if "lease" in el.get("class", "").split()]
    assert len(leases) == tests
    for group, lease in zip(leases, timeline.leases, strict=True):
        title = group.find(f"{SVG_NS}title")
        assert title is not None
        assert title.text is not None
        assert lease.label in title.text
        assert "held" in title.text
        assert "waited" in title.text
    assert float(svg.get("height", 0)) < 2000  # 128 cores still fit a scrolled page


def test_html_shows_waits_distinctly_and_tests_per_worker() -> None:
    svg = svg_of(render_html(sample_timeline()))
    groups = {cls: [g for g in svg.iter(f"{SVG_NS}g") if g.get("class") == cls] for cls in ("wait", "test")}
    assert len(groups["test"]) == 40
    fills = {r.get("fill") for g in groups["wait"] for r in g.iter(f"{SVG_NS}rect")}
    assert fills == {"url(#hatch)", "url(#failed)"}


def test_empty_timeline_renders() -> None:
    assert "Nothing was leased" in render_html(Timeline())


@pytest.mark.parametrize(
    ("span", "step"), [(0.3, 0.05), (1.0, 0.1), (7.0, 1.0), (95.0, 10.0), (600.0, 100.0), (0.0, 1.0)]
)
def test_nice_step(span: float, step: float) -> None:
    assert math.isclose(nice_step(span), step)


def test_labels() -> None:
    assert short_label("tests/a.py::TestB::test_c[1-2]") == "test_c[1-2]"
    assert short_label("gw3") == "gw3"
    assert fit_text("test_something_long", 60) == "test_som…"
    assert fit_text("abc", 10) == ""
    assert runs([5, 1, 2, 3, 7]) == [(1, 3), (5, 1), (7, 1)]
    assert ink("#edc948") == "#1d1d1d"
    assert ink("#4e79a7") == "#ffffff"


def test_a_failed_tests_lease_is_marked() -> None:
    timeline = sample_timeline(tests=10)  # test 0 and 9 failed
    svg = svg_of(render_html(timeline))
    failed = [g for g in svg.iter(f"{SVG_NS}g") if "failed" in g.get("class", "").split()]
    assert len(failed) == 2
    assert all("test failed" in (g.findtext(f"{SVG_NS}title") or "") for g in failed)


# -- processes, parts and files --------------------------------------------------------------------
def test_html_path() -> None:
    assert str(html_path("out/trace.json")) == "out/trace.html"
    assert str(html_path("trace")) == "trace.html"
    assert str(html_path("t.html")) == "t.timeline.html"


def test_single_process_writes_json_and_html(tmp_path: Path) -> None:
    trace = Trace(tmp_path / "t.json", "single", None, "run1", pool=range(4))
    trace.lease(FakeLease("a", (0, 1), (0, 1), 0.0, T0), "tests/t.py::test_a")  # type: ignore[arg-type]
    trace.phase("tests/t.py::test_a", "setup", T0, T0 + 0.1, "passed")
    trace.release(FakeLease("a", (0, 1), (0, 1), 0.0, T0))  # type: ignore[arg-type]
    trace.close()
    trace.close()  # idempotent
    doc = json.loads((tmp_path / "t.json").read_text())
    assert trace_problems(doc) == []
    assert {ev["tid"] for ev in spans_of(doc, "cores")} == {0, 1}
    assert len(named(doc, "thread_name")[process_pid(doc, "cores")]) == 4  # idle pool cores get rows
    assert [ev["name"] for ev in spans_of(doc, "workers")] == ["tests/t.py::test_a"]
    assert (tmp_path / "t.html").read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.html", "t.json"]


def test_controller_merges_the_parts_of_its_workers(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    controller = Trace(path, "controller", None, "run1", pool=range(4), settle=0.2)
    for n in range(3):
        worker = Trace(path, "worker", f"gw{n}", "run1")
        lease = FakeLease(f"l{n}", (n,), (n,), 0.1, T0 + n)
        worker.lease(lease, f"tests/t.py::test_{n}")  # type: ignore[arg-type]
        worker.phase(f"tests/t.py::test_{n}", "call", T0 + n, T0 + n + 0.5, "passed")
        worker.release(lease)  # type: ignore[arg-type]
        worker.close()
    stranger = tmp_path / "trace.json.parts" / "run0-gw0-1.jsonl"  # another run's part
    stranger.write_text(json.dumps(lease_rec("other", [3], T0)) + "\n")
    controller.phase("ignored", "call", T0, T0 + 1, "passed")  # the controller runs no tests
    assert not path.exists()
    controller.close()
    doc = json.loads(path.read_text())
    assert trace_problems(doc) == []
    assert sorted(ev["name"] for ev in spans_of(doc, "cores")) == [f"tests/t.py::test_{n}" for n in range(3)]
    assert sorted(ev["name"] for ev in spans_of(doc, "workers")) == [
        f"tests/t.py::test_{n}" for n in range(3)
    ]
    assert len(spans_of(doc, "waits")) == 3
    assert os.listdir(tmp_path / "trace.json.parts") == ["run0-gw0-1.jsonl"]
    assert html_path(path).exists()


def test_a_crashed_workers_part_is_merged_as_far_as_it_got(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    worker = Trace(path, "worker", "gw1", "run1")
    worker.lease(FakeLease("l1", (2, 3), (2, 3), 0.0, T0), "tests/t.py::test_dies")  # type: ignore[arg-type]
    assert worker._fd is not None
    os.write(worker._fd, b'{"kind":"phase","nodeid":"tests/t.py::te')  # torn by a SIGKILL
    controller = Trace(path, "controller", None, "run1", settle=0.05)
    controller.close()
    doc = json.loads(path.read_text())
    spans = spans_of(doc, "cores")
    assert [(ev["tid"], ev["args"]["state"]) for ev in spans] == [(2, "open"), (3, "open")]
    assert not (tmp_path / "trace.json.parts").exists()


def test_a_worker_never_writes_the_trace(tmp_path: Path) -> None:
    worker = Trace(tmp_path / "t.json", "worker", "gw0", "r")
    worker.close()
    assert not (tmp_path / "t.json").exists()
    (part,) = (tmp_path / "t.json.parts").iterdir()
    assert part.name == f"r-gw0-{os.getpid()}.jsonl"
    assert [rec["kind"] for rec in read_parts([part])] == ["close"]


# -- real runs -------------------------------------------------------------------------------------
INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
SUITE = """
import time
import pytest

@pytest.mark.neuron(cores=2)
@pytest.mark.parametrize("i", range(4))
def test_pair(i):
    time.sleep(0.15)

@pytest.mark.neuron(cores=1)
@pytest.mark.parametrize("i", range(4))
def test_one(i):
    time.sleep(0.1)

@pytest.mark.neuron(cores=4)
def test_all():
    time.sleep(0.1)
"""


def run_traced(pytester: pytest.Pytester, *args: str) -> dict[str, Any]:
    pytester.makepyfile(test_suite=SUITE)
    path, lockdir = pytester.path / "out" / "trace.json", pytester.path / "locks"
    options = (f"--neuron-trace={path}", f"--neuron-lock-dir={lockdir}", *INNER_ARGS)
    result = pytester.runpytest_subprocess("--neuron-cores=0-3", *args, *options)
    result.assert_outcomes(passed=9)
    doc: dict[str, Any] = json.loads(path.read_text())
    assert trace_problems(doc) == []
    assert core_overlaps(doc) == []
    assert not (path.parent / "trace.json.parts").exists()
    processes = {name for names in named(doc, "process_name").values() for name in names.values()}
    assert (
        "other runs" not in processes
    )  # alone in its lock directory: its own reservation is not another run
    svg = svg_of(html_path(path).read_text())
    assert len([el for el in svg.iter(f"{SVG_NS}rect") if el.get("class") == "lane"]) == 4
    return doc


def test_end_to_end_test_scope_leases(pytester: pytest.Pytester) -> None:
    doc = run_traced(pytester, "--neuron-scope=test", "-n", "2")
    names = {ev["name"] for ev in spans_of(doc, "cores")}
    assert names == {f"test_suite.py::test_pair[{i}]" for i in range(4)} | {
        f"test_suite.py::test_one[{i}]" for i in range(4)
    } | {"test_suite.py::test_all"}
    assert len([ev for ev in spans_of(doc, "cores") if ev["name"] == "test_suite.py::test_all"]) == 4


def test_end_to_end_tests_on_worker_rows(pytester: pytest.Pytester) -> None:
    doc = run_traced(pytester, "--neuron-scope=test", "-n", "2")
    assert set(named(doc, "thread_name")[process_pid(doc, "workers")].values()) == {"gw0", "gw1"}
    assert len(spans_of(doc, "workers")) == 9


def test_end_to_end_worker_scope(pytester: pytest.Pytester) -> None:
    doc = run_traced(pytester, "--neuron-scope=worker", "--neuron-cores-per-worker=4", "-n", "1")
    assert {ev["name"] for ev in spans_of(doc, "cores")} == {"gw0"}
    assert len(spans_of(doc, "workers")) == 9


def test_trace_module_is_not_imported_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import sys\n"
        "def test_not_loaded():\n"
        "    assert 'pytest_neuron.plugins.trace' not in sys.modules\n"
        "    assert 'pytest_neuron.core.timeline_html' not in sys.modules\n"
        "    assert 'pytest_neuron.core.timeline' not in sys.modules\n"
    )
    pytester.runpytest_subprocess("--neuron-cores=0-3", *INNER_ARGS).assert_outcomes(passed=1)


# -- other runs, totals, title, skipped tests ----------------------------------------------------------
def other_rec(kind: str, cores: list[int], start: float, end: float, pid: int, **more: Any) -> dict[str, Any]:
    rec = {"kind": "other", "what_kind": kind, "cores": cores, "start": start, "end": end, "holder_pid": pid}
    rec.update(worker="controller", pid=1)  # the recording process, as Trace writes every record
    return {**rec, "who": "bob@vm", "what": more.pop("what", "gw3"), "command": "pytest -n 8", **more}


def test_other_runs_become_grey_spans_but_never_this_runs_own() -> None:
    records = [
        {
            "kind": "run",
            "run_id": "r",
            "pool": [0, 1, 2, 3],
            "command": "python -m pytest -n 2",
            "t": T0,
            "worker": "controller",
            "pid": 1,
        },
        lease_rec("tests/t.py::test_a", [0, 1], T0 + 1, wait=0.5, id="mine"),
        release_rec("mine", T0 + 2),
        other_rec("lease", [2, 3], T0, T0 + 2, 77, lease_id="theirs"),
        other_rec("lease", [0, 1], T0 + 1, T0 + 2, 1, lease_id="mine"),  # the sampler saw our own lease
        other_rec("reservation", [0, 1], T0 + 1.5, T0 + 2, 1, what="gw0 waits"),  # our own waiter (pid 1)
        other_rec("reservation", [0, 1, 2, 3], T0 + 1.2, T0 + 1.8, 88, what="test_big waits for 4 cores"),
        {"kind": "close", "t": T0 + 3, "worker": "controller", "pid": 1},
    ]
    timeline = timeline_from_records(records, now=T0 + 10)
    assert [(o.kind, o.pid, o.cores) for o in timeline.others] == [
        ("lease", 77, (2, 3)),
        ("reservation", 88, (0, 1, 2, 3)),
    ]
    assert (timeline.run_start, timeline.run_end, timeline.duration) == (T0, T0 + 3, 3.0)
    doc = trace_document(timeline)
    assert trace_problems(doc) == []
    assert core_overlaps(doc) == []  # other runs have rows of their own
    grey = spans_of(doc, "other runs")
    assert sorted((ev["tid"], ev["args"]["pid"]) for ev in grey) == [
        (0, 88), (1, 88), (2, 77), (2, 88), (3, 77), (3, 88)
    ]  # fmt: skip
    assert doc["otherData"]["command"] == "python -m pytest -n 2"
    page = render_html(timeline)
    svg = svg_of(page)
    groups = [g for g in svg.iter(f"{SVG_NS}g") if "other" in (g.get("class") or "")]
    assert [g.get("class") for g in groups] == ["other lease", "other reservation"]
    tip = groups[0].find(f"{SVG_NS}title")
    assert tip is not None
    assert tip.text is not None
    assert "pid 77 (bob@vm), gw3" in tip.text
    assert "pytest -n 8" in tip.text
    assert "another run's lease" in html.unescape(page)
    assert "1 other run process" not in page
    assert "2 other run processes seen on these cores" in page


def test_title_names_the_command_not_a_run_id() -> None:
    timeline = sample_timeline()
    timeline.command = "python -m pytest -n 4 --neuron-scope=test"
    page = render_html(timeline)
    heading = re.search(r"<h1>(.*)</h1>", page)
    assert heading is not None
    assert heading.group(1).startswith("pytest-neuron timeline: python -m pytest -n 4 --neuron-scope=test (")
    assert "abc" not in heading.group(1)


def test_one_wait_definition_for_timeline_and_terminal() -> None:
    from pytest_neuron.core.report import summary_lines, wait_line
    from pytest_neuron.core.timeline_html import summary

    records = [
        lease_rec("t.py::a", [0], T0, wait=1.25),
        lease_rec("t.py::b", [1], T0 + 0.5, wait=0.0004),  # too short to draw, still counted
        {
            "kind": "wait",
            "label": "t.py::c",
            "worker": "gw0",
            "pid": 1,
            "start": T0,
            "end": T0 + 2.0,
            "k": 8,
            "error": "gave up",
        },
    ]
    timeline = timeline_from_records(records, now=T0 + 5)
    assert timeline.wait_list() == [(1.25, True), (0.0004, True), (2.0, False)]
    line = wait_line(timeline.wait_list())
    assert line == "waited 3.3s for cores over 3 lease requests (1 got none)"
    assert line in summary(timeline)
    terminal = summary_lines(
        "test", [("t.py::a", "0", 1.25, "gw0"), ("t.py::b", "1", 0.0004, "gw0"), ("t.py::c", "", 2.0, "gw0")],
        {}, None, None,
    )  # fmt: skip
    assert terminal[0] == f"2 tests leased cores; {line}"
    assert wait_line([]) is None


def test_skipped_tests_are_drawn() -> None:
    records = [
        phase_rec("t.py::test_skip", "setup", T0, outcome="skipped"),
        phase_rec("t.py::test_skip", "teardown", T0 + 0.1),
        phase_rec("t.py::test_run", "setup", T0 + 0.2),
        phase_rec("t.py::test_run", "call", T0 + 0.3),
    ]
    timeline = timeline_from_records(records, now=T0 + 1)
    assert [(t.nodeid, t.outcome) for t in timeline.tests] == [
        ("t.py::test_skip", "skipped"),
        ("t.py::test_run", "passed"),
    ]
    svg = svg_of(render_html(timeline))
    fills = {
        (g.find(f"{SVG_NS}title").text or "").split("\n")[0]: g.find(f"{SVG_NS}rect").get("fill")  # type: ignore[union-attr]
        for g in svg.iter(f"{SVG_NS}g")
        if g.get("class") == "test"
    }
    assert fills == {"t.py::test_skip": "#d5d5d5", "t.py::test_run": "#b9dcb0"}


# -- real runs: where it was written, a bad path, another run on the same cores ------------------------
HOLDER = r"""
import sys, time
from pathlib import Path
from pytest_neuron.locks.lease import LeaseManager
from pytest_neuron.core.topology import identity_topology

manager = LeaseManager(Path(sys.argv[1]), identity_topology(frozenset(range(4)), "--neuron-cores"))
lease = manager.acquire(2, timeout=30, worker="gw7", test="other_suite.py::test_holds")
print(lease.visible_cores, flush=True)
time.sleep(float(sys.argv[2]))
manager.release(lease)
"""

CONTENDED = """
import pytest

@pytest.mark.neuron(4)
def test_needs_all_four():
    pass

@pytest.mark.neuron(1)
def test_one():
    pass
"""


def test_another_run_on_the_same_cores_is_drawn_and_the_totals_match_the_terminal(
    pytester: pytest.Pytester,
) -> None:
    import subprocess
    import sys

    lockdir = pytester.path / "locks"
    argv = [sys.executable, "-c", HOLDER, str(lockdir), "1.5"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() in ("0-1", "2-3")
        pytester.makepyfile(test_contended=CONTENDED)
        path = pytester.path / "out" / "trace.json"
        result = pytester.runpytest_subprocess(
            "--neuron-cores=0-3", "--neuron-scope=test", f"--neuron-lock-dir={lockdir}",
            f"--neuron-trace={path}", "--neuron-wait-timeout=60", *INNER_ARGS,
        )  # fmt: skip
        holder.wait(timeout=60)
    result.assert_outcomes(passed=2)
    # where the trace went, as junitxml says where its file went
    result.stdout.fnmatch_lines(
        [f"trace written to {path} (Perfetto, chrome://tracing) and {html_path(path)} (timeline)"]
    )
    waited = [line for line in result.outlines if "leased cores; waited " in line]
    assert len(waited) == 1
    page = html_path(path).read_text()
    terminal_wait = waited[0].split("; ", 1)[1]
    assert f"; {terminal_wait};" in page  # one definition, the same text in both places
    doc = json.loads(path.read_text())
    grey = spans_of(doc, "other runs")
    assert {ev["args"]["pid"] for ev in grey} == {holder.pid}
    assert {ev["args"]["what"] for ev in grey} == {"other_suite.py::test_holds"}
    assert len(grey) == 2  # its two cores, once each
    assert "1 other run process seen on these cores" in page
    assert "<h1>pytest-neuron timeline: python -m pytest " in page or "<h1>pytest-neuron timeline: " in page


@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_a_bad_trace_path_is_one_line(pytester: pytest.Pytester, where: str) -> None:
    (pytester.path / "plain-file").write_text("")
    (pytester.path / "a-dir").mkdir()
    path = pytester.path / ("plain-file/trace.json" if where == "under-a-file" else "a-dir")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(
        "--neuron-cores=0-3",
        f"--neuron-lock-dir={pytester.path / 'locks'}",
        f"--neuron-trace={path}",
        *INNER_ARGS,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = "\n".join(result.outlines + result.errlines)
    assert "INTERNALERROR" not in text
    (line,) = [line for line in result.errlines if line.strip()]
    reason = (
        f"{pytester.path / 'plain-file'} is not a directory"
        if where == "under-a-file"
        else f"{path} is a directory"
    )
    assert line == (
        f"ERROR: invalid value {str(path)!r} from --neuron-trace: {reason}; "
        "expected a new path or a regular file (the JSON trace; the HTML timeline goes next to it)"
    )


def test_worker_scope_tests_are_drawn_inside_their_slice() -> None:
    records = [
        lease_rec("gw0", [0, 1, 2, 3], T0, id="slice"),
        phase_rec("tests/t.py::test_first", "call", T0 + 0.5),
        phase_rec("tests/t.py::test_second", "call", T0 + 1.0, outcome="failed"),
        release_rec("slice", T0 + 2),
    ]
    svg = svg_of(render_html(timeline_from_records(records, now=T0 + 3)))
    inside = [g for g in svg.iter(f"{SVG_NS}g") if (g.get("class") or "").startswith("slice-test")]
    assert [g.get("class") for g in inside] == ["slice-test passed", "slice-test failed"]
    titles = [(g.find(f"{SVG_NS}title").text or "").split("\n")[0] for g in inside]  # type: ignore[union-attr]
    assert titles == ["tests/t.py::test_first", "tests/t.py::test_second"]  # full ids in the tooltip
    heights = [float(r.get("height", 0)) for g in inside for r in g.iter(f"{SVG_NS}rect")]
    assert min(heights) > 3 * 16  # as tall as the slice's four core lanes, not a worker-lane sliver
