"""Packing quality: how close real runs come to the ideal scheduler and the lower bound.

A synthetic workload (bench/packing_model.py: 300 tests asking for 1/2/4/8/32
cores, long-tailed durations, fixed seed) becomes a generated pytest suite
whose tests hold their cores through the fake runtime for their duration.
Each configuration runs twice, with real durations and with zero durations;
a run's span is from its first test's start to its last test's end (worker
start-up is outside it), and the makespan is the difference of the two spans,
so the fixed per-test cost on a small machine does not count either.  Both references come from the workload.

    python bench/bench_packing.py                      # the full table (a few minutes)
    python bench/bench_packing.py --tests 60 --mean 0.2 --only test-16   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from packing_model import Job, ideal_makespan, lower_bound, make_workload

SUITE = """
import json, os, time
import pytest
from pytest_neuron.testing import init_runtime

JOBS = json.load(open(os.environ["PACKING_WORKLOAD"]))
SCALE = float(os.environ["PACKING_SCALE"])


PARAMS = [
    pytest.param(j, marks=pytest.mark.neuron(j["cores"]), id=f"j{j['index']:03d}-{j['cores']}c") for j in JOBS
]


@pytest.mark.parametrize("job", PARAMS)
def test_job(job):
    start = time.time()
    runtime = init_runtime(open_device=False)  # refuses cores another process holds
    assert len(runtime.cores) >= job["cores"]
    time.sleep(job["duration"] * SCALE)
    runtime.close()
    line = json.dumps([start, time.time()]) + "\\n"
    fd = os.open(os.environ["PACKING_SPANS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)
"""

CONFTEST_PLUGIN_OFF = """
import os

def pytest_configure(config):
    config.addinivalue_line("markers", "neuron(cores): cores this test needs")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    size = int(os.environ["PACKING_SLICE"])
    if worker:  # the gwN recipe: worker N gets cores N*size .. N*size+size-1
        n = int(worker[2:])
        os.environ["NEURON_RT_VISIBLE_CORES"] = f"{n * size}-{n * size + size - 1}"
"""


def run(suite: Path, args: list[str], env: dict[str, str], *, plugin: bool) -> tuple[float, str]:
    """Run pytest; returns the span from the first test's start to the last test's end, and its summary."""
    spans = Path(env["PACKING_SPANS"])
    spans.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    if not plugin:
        command[4:4] = ["-p", "no:neuron"]
    result = subprocess.run(command, cwd=suite, env=env, capture_output=True, text=True, check=False)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    if result.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(args)}):\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    times = [json.loads(line) for line in spans.read_text().splitlines()]
    return max(end for _, end in times) - min(start for start, _ in times), tail


def make_suite(root: Path, jobs: list[Job], *, plugin: bool) -> Path:
    suite = root / ("with-plugin" if plugin else "gwN-recipe")
    suite.mkdir(parents=True, exist_ok=True)
    (suite / "test_workload.py").write_text(SUITE)
    (suite / "conftest.py").write_text("" if plugin else CONFTEST_PLUGIN_OFF)
    (suite / "pytest.ini").write_text("[pytest]\n")
    return suite


def measure(
    name: str,
    runs: list[tuple[Path, list[str], dict[str, str], bool]],
    scale: float,
    trace: Path | None = None,
) -> dict[str, float]:
    """Test spans of ``runs`` (one after another) with real and zero durations, and their difference.

    With ``trace``, the real-duration runs with the plugin also write a timeline there
    (``--neuron-trace``): ``<trace>/<name>-<i>.json`` and ``.html``.
    """
    totals = {}
    for label, factor in (("real", scale), ("zero", 0.0)):
        total = 0.0
        for i, (suite, args, env, plugin) in enumerate(runs):
            extra = []
            if trace is not None and plugin and label == "real":
                trace.mkdir(parents=True, exist_ok=True)
                extra = [f"--neuron-trace={trace / f'{name}-{i}.json'}"]
            span, tail = run(suite, [*args, *extra], {**env, "PACKING_SCALE": str(factor)}, plugin=plugin)
            total += span
            print(f"  {name:<24} {label}: span {span:6.2f}s  {tail}", file=sys.stderr)
        totals[label] = total
    return {"real": totals["real"], "zero": totals["zero"], "makespan": totals["real"] - totals["zero"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--mean", type=float, default=0.5, help="mean test duration in seconds")
    parser.add_argument("--pool", type=int, default=32)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--only", action="append", help="run only these configurations (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--trace", type=Path, help="write a timeline of each plugin run into this directory")
    options = parser.parse_args(argv)

    jobs = make_workload(options.tests, seed=options.seed, mean=options.mean)
    pool = options.pool
    root = Path(tempfile.mkdtemp(prefix="pytest-neuron-packing-"))
    workload = root / "workload.json"
    workload.write_text(json.dumps([asdict(j) for j in jobs]))
    fake = root / "fake-host"
    base_env = {
        **os.environ,
        "PACKING_WORKLOAD": str(workload),
        "PYTEST_NEURON_FAKE_DIR": str(fake),
        "PYTEST_NEURON_FAKE_CORES": str(pool),
        "PYTEST_NEURON_LOCK_DIR": str(root / "locks"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PACKING_SPANS": str(root / "spans.jsonl"),
    }
    base_env.pop("NEURON_RT_VISIBLE_CORES", None)
    with_plugin = make_suite(root, jobs, plugin=True)
    recipe = make_suite(root, jobs, plugin=False)
    cores = f"--neuron-cores=0-{pool - 1}"
    big = f"{pool}c"
    configs: dict[str, tuple[int, list[tuple[Path, list[str], dict[str, str], bool]]]] = {
        "test-16": (16, [(with_plugin, [cores, "--neuron-scope=test", "-n", "16"], base_env, True)]),
        "test-32": (32, [(with_plugin, [cores, "--neuron-scope=test", "-n", "32"], base_env, True)]),
        "worker-8x4+big": (
            4,
            [
                (
                    with_plugin,
                    [cores, "--neuron-cores-per-worker=8", "-n", "4", "-k", f"not {big}"],
                    base_env,
                    True,
                ),
                (with_plugin, [cores, "-k", big], base_env, True),
            ],
        ),
        "gwN-8x4+big": (
            4,
            [
                (recipe, ["-n", "4", "-k", f"not {big}"], {**base_env, "PACKING_SLICE": "8"}, False),
                (
                    recipe,
                    ["-k", big],
                    {**base_env, "PACKING_SLICE": str(pool), "NEURON_RT_VISIBLE_CORES": f"0-{pool - 1}"},
                    False,
                ),
            ],
        ),
    }
    selected = options.only or list(configs)
    results = {}
    for name in selected:
        workers, runs = configs[name]
        results[name] = measure(name, runs, 1.0, options.trace) | {"workers": workers}
    print(
        f"workload: {len(jobs)} tests, mean {options.mean}s, seed {options.seed}, pool {pool} cores; "
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(
        f"{'configuration':<16} {'workers':>7} {'real':>6} {'zero':>6} {'est.':>6} {'lower':>6} {'ideal':>6} "
        f"{'est/low':>7} {'est/ideal':>9} {'real/ideal':>10}"
    )
    for name, r in results.items():
        workers = int(r["workers"])
        lb = lower_bound(jobs, pool, workers)
        ideal = ideal_makespan(jobs, pool, workers)
        est = r["makespan"]
        print(
            f"{name:<16} {workers:>7} {r['real']:>6.1f} {r['zero']:>6.1f} {est:>6.1f} {lb:>6.1f} "
            f"{ideal:>6.1f} {est / lb:>7.2f} {est / ideal:>9.2f} {r['real'] / ideal:>10.2f}"
        )
    print(
        "real: span of the run (first test start to last test end); zero: the same suite with zero "
        "durations;\nest.: real - zero, the makespan without the fixed per-test cost (an underestimate: "
        "that cost\noverlaps the sleeps); real/ideal counts all of it (an overestimate). "
        "The truth lies between."
    )
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
