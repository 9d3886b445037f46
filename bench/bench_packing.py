"""Packing quality: how close real runs come to the ideal dispatcher and the lower bound.

A synthetic workload (bench/packing_model.py: 300 tests asking for 1/2/4/8/32
cores, long-tailed durations, fixed seed) becomes a generated pytest suite
whose tests hold their cores through the fake runtime for their duration.
Each configuration runs twice, with real durations and with zero durations;
a run's span is from its first test's start to its last test's end (worker
start-up is outside it), and the makespan is the difference of the two spans,
so the fixed per-test cost on a small machine does not count either.  Both
references come from the workload.

In test scope each configuration runs the suite twice in a row with pytest's
cache on (a cache directory of its own): the first run has no history and
uses ``biggest-first``; the second uses the durations the first recorded
(``durations``, the default once a cache holds some).  The ``sim`` column is
the plugin's scheduler (the real class) in a zero-overhead event simulation of
the same workload and order, for comparison with ``ideal``.

``test-64@128`` is a trn2.48xlarge at LNC=1: 128 cores, 64 workers, a workload
of its own (``--tests-128`` tests asking for 1/2/4/8/32/128 cores at
60/20/10/6/3/1 percent, mean ``--mean-128``).

    python bench/bench_packing.py                      # the full table (several minutes)
    python bench/bench_packing.py --tests 60 --mean 0.2 --only test-16   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from packing_model import Job, ideal_makespan, lower_bound, make_workload, scheduler_makespan

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

MIX_128 = {1: 60, 2: 20, 4: 10, 8: 6, 32: 3, 128: 1}

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
    """Run pytest; returns the span from the first test's start to the last test's end, and its summary.

    ``--neuron-cache=DIR`` in ``args`` (this script's, not pytest's) runs with pytest's cache in DIR.
    """
    spans = Path(env["PACKING_SPANS"])
    spans.unlink(missing_ok=True)
    cache = [a.split("=", 1)[1] for a in args if a.startswith("--neuron-cache=")]
    args = [a for a in args if not a.startswith("--neuron-cache=")]
    caching = ["-o", f"cache_dir={cache[0]}"] if cache else ["-p", "no:cacheprovider"]
    command = [
        sys.executable,
        "-m",
        "pytest",
        *caching,
        "-p",
        "no:randomly",
        *args,
    ]  # not -q: the header names the order
    if not plugin:
        command[3:3] = ["-p", "no:neuron"]
    result = subprocess.run(command, cwd=suite, env=env, capture_output=True, text=True, check=False)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    if result.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(args)}):\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    order = [line for line in result.stdout.splitlines() if line.startswith("neuron: order ")]
    if order:
        tail = f"{tail} [{order[0][len('neuron: ') :]}]"
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
    *,
    zero: float | None = None,
) -> dict[str, float]:
    """Test spans of ``runs`` (one after another) with real and zero durations, and their difference.

    With ``zero``, the zero-duration span is not measured but taken as given.  With ``trace``,
    the real-duration runs with the plugin also write a timeline there (``--neuron-trace``):
    ``<trace>/<name>-<i>.json`` and ``.html``.
    """
    totals = {}
    for label, factor in (("real", scale), ("zero", 0.0)):
        if label == "zero" and zero is not None:
            totals[label] = zero
            continue
        total = 0.0
        for i, (suite, args, env, plugin) in enumerate(runs):
            extra = []
            if trace is not None and plugin and label == "real":
                trace.mkdir(parents=True, exist_ok=True)
                extra = [f"--neuron-trace={trace / f'{name}-{i}.json'}"]
            run_args = [*args, *extra]
            if label == "zero":  # pytest's cache off: the zero run must not record durations
                run_args = [a for a in run_args if not a.startswith("--neuron-cache=")]
            span, tail = run(suite, run_args, {**env, "PACKING_SCALE": str(factor)}, plugin=plugin)
            total += span
            print(f"  {name:<24} {label}: span {span:6.2f}s  {tail}", file=sys.stderr)
        totals[label] = total
    return {"real": totals["real"], "zero": totals["zero"], "makespan": totals["real"] - totals["zero"]}


Config = tuple[int, list[Job], int, str, list[tuple[Path, list[str], dict[str, str], bool]]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--mean", type=float, default=0.5, help="mean test duration in seconds")
    parser.add_argument("--pool", type=int, default=32)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--tests-128", type=int, default=200, help="tests of the 128-core workload")
    parser.add_argument("--mean-128", type=float, default=0.4, help="mean duration of the 128-core workload")
    parser.add_argument("--only", action="append", help="run only these configurations (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--trace", type=Path, help="write a timeline of each plugin run into this directory")
    options = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="pytest-neuron-packing-"))
    try:
        return _main(options, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _suite(root: Path, name: str, jobs: list[Job], pool: int, *, plugin: bool) -> tuple[Path, dict[str, str]]:
    workload = root / f"{name}.json"
    workload.write_text(json.dumps([asdict(j) for j in jobs]))
    env = {
        **os.environ,
        "PACKING_WORKLOAD": str(workload),
        "PYTEST_NEURON_FAKE_DIR": str(root / f"fake-host-{pool}"),
        "PYTEST_NEURON_FAKE_CORES": str(pool),
        "PYTEST_NEURON_LOCK_DIR": str(root / f"locks-{pool}"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PACKING_SPANS": str(root / "spans.jsonl"),
    }
    env.pop("NEURON_RT_VISIBLE_CORES", None)
    return make_suite(root / name, jobs, plugin=plugin), env


def _main(options: argparse.Namespace, root: Path) -> int:
    jobs = make_workload(options.tests, seed=options.seed, mean=options.mean)
    pool = options.pool
    with_plugin, base_env = _suite(root, "w32", jobs, pool, plugin=True)
    recipe, _ = _suite(root, "w32", jobs, pool, plugin=False)
    jobs128 = make_workload(options.tests_128, seed=options.seed, mean=options.mean_128, mix=MIX_128)
    suite128, env128 = _suite(root, "w128", jobs128, 128, plugin=True)
    cores = f"--neuron-cores=0-{pool - 1}"
    big = f"{pool}c"

    def test_scope(
        name: str, workers: int, *, suite: Path, env: dict[str, str], size: int, job_list: list[Job]
    ) -> dict[str, Config]:
        cache = root / f"cache-{name}"
        args = [
            f"--neuron-cores=0-{size - 1}",
            "--neuron-scope=test",
            "-n",
            str(workers),
            f"--neuron-cache={cache}",
        ]
        run_ = [(suite, args, env, True)]
        return {
            f"{name}|biggest-first": (size, job_list, workers, "biggest-first", run_),
            f"{name}|durations": (size, job_list, workers, "durations", run_),
        }

    configs: dict[str, Config] = {
        **test_scope("test-16", 16, suite=with_plugin, env=base_env, size=pool, job_list=jobs),
        **test_scope("test-32", 32, suite=with_plugin, env=base_env, size=pool, job_list=jobs),
        **test_scope("test-64@128", 64, suite=suite128, env=env128, size=128, job_list=jobs128),
        "worker-8x4+big|-": (
            pool,
            jobs,
            4,
            "-",
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
        "gwN-8x4+big|-": (
            pool,
            jobs,
            4,
            "-",
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
    selected = [key for key in configs if not options.only or key.split("|")[0] in options.only]
    results = {}
    for key in selected:
        size, job_list, workers, order, runs = configs[key]
        name = key.split("|")[0]
        zero = None
        if order == "biggest-first":  # the first run of the pair: no history
            shutil.rmtree(root / f"cache-{name}", ignore_errors=True)
        elif order == "durations":
            # The fixed per-test cost is that of the same suite: the first run's zero-duration span.
            # (A zero-duration run ordered by durations would not measure it: the scheduler acts on
            # durations that do not hold there.)
            first = results.get(f"{name}|biggest-first")
            zero = None if first is None else first["zero"]
        label = name if order == "-" else f"{name}-{order}"
        results[key] = measure(label, runs, 1.0, options.trace, zero=zero) | {"workers": workers}
        if order != "-":
            known = [j.duration for j in job_list] if order == "durations" else None
            results[key]["sim"] = scheduler_makespan(job_list, size, workers, order, known)
    print(
        f"workload: {len(jobs)} tests, mean {options.mean}s, seed {options.seed}, pool {pool} cores; "
        f"128-core workload: {len(jobs128)} tests, mean {options.mean_128}s; "
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(
        f"{'configuration':<14} {'order':<22} {'workers':>7} {'real':>6} {'zero':>6} {'est.':>6} "
        f"{'lower':>6} {'ideal':>6} {'sim':>6} {'est/ideal':>9} {'real/ideal':>10} {'sim/ideal':>9}"
    )
    for key, r in results.items():
        size, job_list, workers, order, _ = configs[key]
        lb = lower_bound(job_list, size, workers)
        ideal = ideal_makespan(job_list, size, workers)
        est = r["makespan"]
        shown = {"biggest-first": "biggest-first (1st run)", "durations": "durations (2nd run)"}.get(
            order, "-"
        )
        sim = f"{r['sim']:>6.1f}" if "sim" in r else f"{'':>6}"
        sim_ratio = f"{r['sim'] / ideal:>9.2f}" if "sim" in r else f"{'':>9}"
        name = key.split("|")[0]
        print(
            f"{name:<14} {shown:<22} {workers:>7} {r['real']:>6.1f} {r['zero']:>6.1f} {est:>6.1f} "
            f"{lb:>6.1f} {ideal:>6.1f} {sim} {est / ideal:>9.2f} {r['real'] / ideal:>10.2f} {sim_ratio}"
        )
    print(
        "real: span of the run (first test start to last test end); zero: the same suite with zero "
        "durations;\nest.: real - zero, the makespan without the fixed per-test cost (an underestimate: "
        "that cost\noverlaps the sleeps); real/ideal counts all of it (an overestimate). "
        "The truth lies between.\nThe durations row (the second run of the suite) reuses the first run's "
        "zero span.\nsim: the plugin's scheduler (the real class) in a zero-overhead simulation of the "
        "same workload and order."
    )
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
