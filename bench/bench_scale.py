"""Scale: a simulated trn2.48xlarge at LNC=1 (128 NeuronCores), with 64 workers.

Two sections of one table:

* lease latency: acquire + release of 1, 8, 32 and 128 cores from a 128-core
  identity pool (``--neuron-cores=0-127``), first uncontended, then while
  ``--contenders`` processes each lease 1 core in a loop, holding it ``--hold``
  seconds (bench/bench_lease.py's method, on the bigger pool);
* packing: a workload of ``--tests`` tests asking for 1/2/4/8/32/128 cores
  (bench/packing_model.py, MIX below) on the 128-core fake host, run in test
  scope with ``-n --workers`` (bench/bench_packing.py's suite, run and
  measure: the makespan is the test span with real durations minus the span
  with zero durations), as a ratio to the lower bound and the ideal scheduler.

64 xdist workers on a 2-CPU machine take tens of seconds to start (timed and
printed; start-up is outside the spans).  The default run takes a few minutes
there; ``--quick`` shrinks it (16 contenders, 16 workers, 60 tests).

    python bench/bench_scale.py [--quick] [--tests 200 --mean 0.4] [--workers 64]

This is a script, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lease import Row, header, lease_release_latency, with_contenders
from packing_model import ideal_makespan, lower_bound, make_workload

from pytest_neuron.core.topology import identity_topology
from pytest_neuron.locks.lease import LeaseManager

if TYPE_CHECKING:
    from collections.abc import Sequence

POOL = 128  # trn2.48xlarge: 16 devices x 8 physical cores, LNC=1
CORES_PER_DEVICE = 8
SIZES = (1, 8, 32, 128)
MIX = {1: 60, 2: 20, 4: 10, 8: 6, 32: 3, 128: 1}


def manager(root: Path) -> LeaseManager:
    return LeaseManager(root, identity_topology(frozenset(range(POOL)), f"--neuron-cores=0-{POOL - 1}"))


def packing(root: Path, args: argparse.Namespace) -> tuple[dict[str, float], float]:
    """bench_packing's measure() of the 128-core workload in test scope; and its wall seconds."""
    from bench_packing import make_suite, measure

    jobs = make_workload(args.tests, seed=args.seed, mean=args.mean, mix=MIX)
    root.mkdir(parents=True, exist_ok=True)
    workload = root / "workload.json"
    workload.write_text(json.dumps([asdict(j) for j in jobs]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURON_", "PYTEST_NEURON_"))}
    env |= {
        "PACKING_WORKLOAD": str(workload),
        "PACKING_SPANS": str(root / "spans.jsonl"),
        "PYTEST_NEURON_FAKE_DIR": str(root / "fake-host"),
        "PYTEST_NEURON_FAKE_CORES": str(POOL),
        "PYTEST_NEURON_FAKE_CORES_PER_DEVICE": str(CORES_PER_DEVICE),
        "PYTEST_NEURON_FAKE_LNC": "1",
        "PYTEST_NEURON_LOCK_DIR": str(root / "locks"),
    }
    suite = make_suite(root, jobs, plugin=True)
    command = [f"--neuron-cores=0-{POOL - 1}", "--neuron-scope=test", "-n", str(args.workers)]
    command += ["-p", "no:hypothesispytest"]  # about a second per worker otherwise
    started = time.monotonic()
    result = measure(f"test-{args.workers}", [(suite, command, env, True)], 1.0)
    return result, time.monotonic() - started


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Numbers for docs/performance.md come from a run of this script on a quiet machine.",
    )
    parser.add_argument("--iterations", type=int, default=300, help="uncontended samples per size")
    parser.add_argument("--contended-iterations", type=int, default=40, help="contended samples per size")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per contended size at most")
    parser.add_argument("--contenders", type=int, default=64)
    parser.add_argument("--hold", type=float, default=0.002, help="seconds each contender holds its core")
    parser.add_argument("--tests", type=int, default=200, help="tests of the packing workload")
    parser.add_argument("--mean", type=float, default=0.4, help="mean test duration in seconds")
    parser.add_argument("--workers", type=int, default=64, help="xdist workers of the packing run")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--only", choices=["latency", "packing"], help="run one section only")
    parser.add_argument("--tmp", type=Path, default=None, help="where the temp dirs go (default: $TMPDIR)")
    parser.add_argument("--quick", action="store_true", help="16 contenders, 16 workers, 60 tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.contended_iterations, args.budget = 50, 10, 3.0
        args.contenders, args.workers, args.tests, args.mean = 16, 16, 60, 0.2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp))
    try:
        print(header(base), flush=True)
        print(f"pool:     {POOL} cores, --neuron-cores=0-{POOL - 1}, {CORES_PER_DEVICE} per device")
        started = time.monotonic()
        rows: list[Row] = []
        notes: list[str] = []
        if args.only in (None, "latency"):
            mgr = manager(base / "pool")
            rows = [Row(k, "uncontended", lease_release_latency(mgr, k, args.iterations, 60)) for k in SIZES]
            measure = [(k, args.contended_iterations) for k in SIZES]
            more, startup = with_contenders(base / "pool", args, measure, pool=POOL)
            rows += more
            notes.append(f"{args.contenders} contenders started in {startup:.1f} s; each leases 1 core for ")
            notes[-1] += f"{args.hold * 1e3:g} ms in a loop; p99 of n samples (n < 100: near the maximum)"
        result: dict[str, float] | None = None
        if args.only in (None, "packing"):
            result, wall = packing(base / "packing", args)
            notes.append(f"packing: {args.tests} tests, mean {args.mean} s, seed {args.seed}, mix {MIX}; ")
            notes[-1] += f"the two runs ({args.workers} workers each) took {wall:.0f} s"

        print()
        if rows:
            print(f"{'lease + release':<30} {'n':>5} {'p50 ms':>10} {'p99 ms':>10}")
        for row in rows:
            name = f"{row.cores} core{'s' if row.cores > 1 else ''}, {row.scenario}"
            print(
                f"{name:<30} {len(row.samples):>5} {row.percentile(50) * 1e3:>10.2f} "
                f"{row.percentile(99) * 1e3:>10.2f}"
            )
        if result is not None:
            jobs = make_workload(args.tests, seed=args.seed, mean=args.mean, mix=MIX)
            lb = lower_bound(jobs, POOL, args.workers)
            ideal = ideal_makespan(jobs, POOL, args.workers)
            span, real = result["makespan"], result["real"]
            print(
                f"{'packing, test scope':<20} {'workers':>7} {'real s':>7} {'zero s':>7} {'makespan s':>10} "
                f"{'lower bd':>8} {'ideal':>7} {'/ lower':>7} {'/ ideal':>7} {'real/ideal':>10}"
            )
            print(
                f"{f'-n {args.workers}':<20} {args.workers:>7} {real:>7.2f} {result['zero']:>7.2f} "
                f"{span:>10.2f} {lb:>8.2f} {ideal:>7.2f} {span / lb:>7.2f} {span / ideal:>7.2f} "
                f"{real / ideal:>10.2f}"
            )
            notes.append("makespan = real - zero test spans (bench_packing's method): it undercounts when")
            notes.append("per-test costs of the zero run hide under real sleeps; real/ideal overcounts")
        print("\n".join(notes))
        print(f"total {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
