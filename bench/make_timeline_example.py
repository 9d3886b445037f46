"""Make the docs' example timeline from a simulated, realistic run.

A 32-core host (``--cores``), 8 xdist workers, ``--neuron-scope=test`` and ~300 tests
asking for 1, 2, 4, 8 or all 32 cores.  The simulation hands out cores with
pytest-neuron's own placement rules (``choose_window`` for a free window,
``reservation_window`` for what a waiting request reserves, older waiters
first), emits the records each worker's :class:`~pytest_neuron.trace.Trace`
would write, and renders them with the plugin's own code:

    python bench/make_timeline_example.py [--out docs/_static/timeline-example.html] [--json PATH] [--png]

``--png`` also takes a 1400x700 screenshot with headless Chromium (``chromium``
on PATH) next to the HTML.  Deterministic: the same seed gives the same files.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pytest_neuron.placement import choose_window, reservation_window
from pytest_neuron.timeline_html import render_html
from pytest_neuron.trace import timeline_from_records, trace_document

T0 = 1_767_225_600.0  # a wall-clock start, as time.time() gives
FAMILIES = (  # (weight, cores, test id template, median seconds)
    (24, 1, "tests/test_inference.py::test_resnet50[{i}]", 1.2),
    (11, 1, "tests/test_ops.py::test_matmul_bf16[{i}]", 0.5),
    (25, 2, "tests/test_models.py::test_bert_large_tp2[{i}]", 2.0),
    (24, 4, "tests/test_models.py::test_llama_8b_tp4[{i}]", 3.0),
    (15, 8, "tests/test_collectives.py::test_allreduce_8[{i}]", 2.0),
    (1, 32, "tests/test_training.py::test_llama_70b_tp32[{i}]", 4.0),
)


def make_tests(count: int, rng: random.Random) -> list[tuple[str, int, float, str]]:
    """(nodeid, cores, seconds, outcome) in collection order."""
    weights = [f[0] for f in FAMILIES]
    seen: dict[str, int] = {}
    tests = []
    for _ in range(count):
        _, k, template, median = rng.choices(FAMILIES, weights)[0]
        seen[template] = seen.get(template, 0) + 1
        seconds = median * rng.lognormvariate(0, 0.35)
        outcome = rng.choices(("passed", "failed", "skipped"), (96, 2, 2))[0]
        tests.append(
            (template.format(i=seen[template]), k, seconds if outcome != "skipped" else 0.05, outcome)
        )
    return tests


def simulate(count: int, workers: int, seed: int, cores: int = 32) -> list[dict[str, Any]]:
    """The records a traced run would leave: leases, releases, test phases, closes."""
    rng = random.Random(seed)
    pool = tuple(range(cores))
    queue = make_tests(count, rng)
    records: list[dict[str, Any]] = [{"kind": "run", "run_id": "example", "pool": list(pool), "t": T0}]
    events: list[tuple[float, int, str, Any]] = []  # (time, order, kind, data)
    order = 0
    for n in range(workers):
        heapq.heappush(events, (T0 + 1.5 + 0.05 * n, order, "ready", f"gw{n}"))
        order += 1
    held: dict[int, float] = {}  # core -> when its holder will release it
    waiting: list[tuple[float, str, tuple[str, int, float, str]]] = []
    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == "ready":
            if queue:
                waiting.append((now, data, queue.pop(0)))
            else:
                records.append({"kind": "close", "t": now + 0.3, "worker": data, "pid": 100 + int(data[2:])})
        else:
            for core in data:
                held.pop(core, None)
        reserved: set[int] = set()
        for entry in list(waiting):
            since, worker, (nodeid, k, seconds, outcome) = entry
            free = [c for c in pool if c not in held and c not in reserved]
            window = choose_window(pool, k, free)
            if window is None:
                reserved.update(reservation_window(pool, k, held, reserved) or ())
                continue
            waiting.remove(entry)
            start = now + rng.uniform(0.001, 0.004)
            setup, teardown = rng.uniform(0.02, 0.08), rng.uniform(0.01, 0.04)
            end = start + setup + seconds + teardown + 0.002
            pid = 100 + int(worker[2:])
            lease = {
                "id": f"{nodeid}@{start}",
                "label": nodeid,
                "cores": list(window),
                "physical": list(window),
            }
            records.append(
                {
                    "kind": "lease",
                    **lease,
                    "start": start,
                    "wait": start - since,
                    "worker": worker,
                    "pid": pid,
                }
            )
            t = start + 0.001
            for when, length in (("setup", setup), ("call", seconds), ("teardown", teardown)):
                result = outcome if when == "call" or (when == "setup" and outcome == "skipped") else "passed"
                records.append(
                    {"kind": "phase", "nodeid": nodeid, "when": when, "start": t, "stop": t + length}
                    | {"outcome": result, "worker": worker, "pid": pid}
                )
                t += length
            records.append({"kind": "release", "id": lease["id"], "t": end, "worker": worker, "pid": pid})
            for core in window:
                held[core] = end
            heapq.heappush(events, (end, order, "release", window))
            heapq.heappush(events, (end + rng.uniform(0.005, 0.03), order + 1, "ready", worker))
            order += 2
    return records


def screenshot(html: Path, png: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("no chromium on PATH: apt-get install -y chromium")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={png}",
            "--window-size=1400,700",
            html.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/_static/timeline-example.html"))
    parser.add_argument("--json", type=Path, default=None, help="also write the Chrome trace here")
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--cores", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--png", action="store_true", help="and a screenshot next to the HTML")
    args = parser.parse_args()
    timeline = timeline_from_records(simulate(args.tests, args.workers, args.seed, args.cores), now=T0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    title = (
        f"pytest-neuron timeline: {args.tests} tests, {args.workers} workers, {args.cores} cores (simulated)"
    )
    args.out.write_text(render_html(timeline, title=title), encoding="utf-8")
    if args.json is not None:
        args.json.write_text(json.dumps(trace_document(timeline)) + "\n", encoding="utf-8")
    if args.png:
        screenshot(args.out, args.out.with_suffix(".png"))
    print(f"wrote {args.out}" + (" and its .png" if args.png else ""))


if __name__ == "__main__":
    main()
