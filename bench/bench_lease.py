"""Benchmark of pytest_neuron leases: lease+release latency and takeover after a SIGKILL.

Rows of the table:

* lease + release of every window size 1, 2, 4, ..., 128 from a 128-core
  identity pool with nobody else in the lock domain (the cost must be flat in
  the window size: one flock call per core on kept descriptors, one record per
  lease);
* lease + release of 1, 8 and 32 cores from a 32-core pool while
  ``--contenders`` processes each lease 1 core in a loop (holding it
  ``--hold`` seconds);
* the takeover: a child holds a 4-core pool, a waiter in this process is
  already waiting for it, the child is SIGKILLed; the time from the kill
  until the waiter holds the cores (median of ``--kill-rounds``).

    python bench/bench_lease.py [--lock-dir DIR] [--quick]

This is a script, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_neuron.core.topology import identity_topology
from pytest_neuron.locks.lease import Lease, LeaseManager

if TYPE_CHECKING:
    from collections.abc import Sequence

SIZES = (1, 8, 32)  # contended, on the 32-core pool
WINDOW_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)  # uncontended, on the 128-core pool


def manager(root: Path, n: int) -> LeaseManager:
    return LeaseManager(root, identity_topology(frozenset(range(n)), f"--neuron-cores=0-{n - 1}"))


# -- children ----------------------------------------------------------------------


def run_contender(root: Path, hold: float, stop: Path, ready: Path, pool: int = 32) -> int:
    """Lease 1 core of the ``pool``-core pool in a loop until ``stop`` exists."""
    mgr = manager(root, pool)
    first = True
    while not stop.exists():
        lease = mgr.acquire(1, timeout=300)
        if first:
            ready.touch()
            first = False
        time.sleep(hold)
        mgr.release(lease)
    return 0


def run_holder(root: Path) -> int:
    """Hold the whole 4-core pool, say so on stdout, and wait to be killed."""
    mgr = manager(root, 4)
    mgr.acquire(4, timeout=30)
    sys.stdout.write("held\n")
    sys.stdout.flush()
    time.sleep(600)
    return 1


def child(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


# -- measurements --------------------------------------------------------------------


@dataclass
class Row:
    cores: int
    scenario: str
    samples: list[float]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]


def lease_release_latency(mgr: LeaseManager, k: int, iterations: int, budget: float) -> list[float]:
    """Seconds per acquire+release, at most ``iterations`` times or ``budget`` seconds (3 at least)."""
    samples: list[float] = []
    stop_at = time.monotonic() + budget
    while len(samples) < iterations and (len(samples) < 3 or time.monotonic() < stop_at):
        started = time.perf_counter()
        lease = mgr.acquire(k, timeout=60)
        mgr.release(lease)
        samples.append(time.perf_counter() - started)
    return samples


def with_contenders(
    root: Path, args: argparse.Namespace, measure: list[tuple[int, int]], *, pool: int = 32
) -> tuple[list[Row], float]:
    """Latency rows while ``args.contenders`` processes lease 1 core each; and their start-up seconds."""
    control = Path(tempfile.mkdtemp(prefix="bench-control-"))
    stop = control / "stop"
    readies = [control / f"ready-{n}" for n in range(args.contenders)]
    contender_args = (
        "--lock-dir",
        str(root),
        "--hold",
        str(args.hold),
        "--stop",
        str(stop),
        "--pool",
        str(pool),
    )
    started = time.monotonic()
    procs = [
        subprocess.Popen(child("--role", "contender", *contender_args, "--ready", str(ready)))
        for ready in readies
    ]
    rows: list[Row] = []
    try:
        while not all(r.exists() for r in readies):
            if time.monotonic() > started + 300 or any(p.poll() is not None for p in procs):
                raise SystemExit("the contending processes did not start")
            time.sleep(0.02)
        startup = time.monotonic() - started
        time.sleep(0.3)
        mgr = manager(root, pool)
        for k, iterations in measure:
            samples = lease_release_latency(mgr, k, iterations, args.budget)
            rows.append(Row(k, f"{args.contenders} contenders", samples))
    finally:
        stop.touch()
        for proc in procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(control, ignore_errors=True)
    return rows, startup


def takeover_after_kill(root: Path, rounds: int) -> list[float]:
    """Seconds from SIGKILL of the holder until a waiter that was already waiting holds the cores."""
    samples: list[float] = []
    mgr = manager(root, 4)
    for _ in range(rounds):
        holder = subprocess.Popen(
            child("--role", "holder", "--lock-dir", str(root)), stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "held":
            holder.kill()
            holder.wait()
            raise SystemExit("the holder did not start")
        got: list[tuple[float, Lease]] = []

        def wait_for_cores(into: list[tuple[float, Lease]] = got) -> None:
            lease = mgr.acquire(4, timeout=30)
            into.append((time.perf_counter(), lease))

        waiter = threading.Thread(target=wait_for_cores)
        waiter.start()
        time.sleep(0.1)  # the waiter is waiting (and polling) by now
        killed = time.perf_counter()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        waiter.join(timeout=60)
        holder.stdout.close()
        if not got:
            raise SystemExit("the waiter did not get the cores")
        samples.append(got[0][0] - killed)
        mgr.release(got[0][1])
    return samples


# -- report --------------------------------------------------------------------------


def header(root: Path) -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join(
        [
            f"machine:  {os.cpu_count()} CPUs ({affinity} usable), {platform.platform()}",
            f"python:   {platform.python_implementation()} {platform.python_version()}",
            f"lock dir: {root}",
        ]
    )


def table(rows: Sequence[Row]) -> str:
    lines = [f"{'cores':>5}  {'scenario':<16} {'n':>5} {'p50 ms':>9} {'p99 ms':>9}"]
    for row in rows:
        lines.append(
            f"{row.cores:>5}  {row.scenario:<16} {len(row.samples):>5} "
            f"{row.percentile(50) * 1e3:>9.2f} {row.percentile(99) * 1e3:>9.2f}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--lock-dir", type=Path, default=None, help="lock directory (default: a fresh temp dir)"
    )
    parser.add_argument("--iterations", type=int, default=300, help="uncontended samples per size")
    parser.add_argument("--contended-iterations", type=int, default=40, help="contended samples per size")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per contended size at most")
    parser.add_argument("--contenders", type=int, default=16)
    parser.add_argument("--hold", type=float, default=0.002, help="seconds each contender holds its core")
    parser.add_argument("--kill-rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a few samples of each, to try the script")
    parser.add_argument(
        "--role", choices=["bench", "contender", "holder"], default="bench", help=argparse.SUPPRESS
    )
    parser.add_argument("--stop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.contended_iterations, args.budget, args.kill_rounds = 20, 5, 2.0, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "contender":
        return run_contender(args.lock_dir, args.hold, args.stop, args.ready, args.pool)
    if args.role == "holder":
        return run_holder(args.lock_dir)

    created = args.lock_dir is None
    base: Path = Path(tempfile.mkdtemp(prefix="bench-lease-")) if created else args.lock_dir
    try:
        print(header(base), flush=True)
        started = time.monotonic()
        pool_root = base / "pool32"
        big = manager(base / "pool128", 128)
        rows = [
            Row(k, "uncontended", lease_release_latency(big, k, args.iterations, 60.0)) for k in WINDOW_SIZES
        ]
        rows += with_contenders(pool_root, args, [(k, args.contended_iterations) for k in SIZES])[0]
        kills = takeover_after_kill(base / "pool4", args.kill_rounds)
        print()
        print(table(rows))
        print()
        print(
            f"takeover after SIGKILL of a 4-core holder (waiter already waiting), {len(kills)} rounds: "
            f"median {statistics.median(kills) * 1e3:.1f} ms, min {min(kills) * 1e3:.1f} ms, "
            f"max {max(kills) * 1e3:.1f} ms"
        )
        hold_ms = args.hold * 1e3
        print(f"contenders: {args.contenders} processes, each leasing 1 core for {hold_ms:g} ms in a loop")
        print(f"total {time.monotonic() - started:.1f} s")
    finally:
        if created:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
