"""What pytest-neuron costs: on suites that never ask for Neuron, and per Neuron test.

Part A: a generated suite of ``--tests`` trivial unmarked tests, run with the
plugin installed (no pool given, no device) and with ``-p no:neuron``, serial
and with ``-n 2``.  The machine is made to look like an ordinary one,
deterministically: PYTEST_NEURON_HOST_ROOT is an empty temp dir (no
/dev/neuron*) and PYTEST_NEURON_NEURON_LS a command that does not exist.
After a warm-up, ``--pairs`` pairs of runs alternate (ABBA order); each pair
gives a wall-time ratio (with / without), a CPU-time ratio (user + sys, xdist
workers included: steadier on a busy machine) and a difference; the table shows
the medians.  Target: ratio <= 1.02.

Part B: ``--marked`` tests marked ``@pytest.mark.neuron(1)`` with empty bodies,
in test scope on a simulated 32-core pool (``--neuron-scope=test
--neuron-cores=0-31``, serial), against the same suite with ``-p no:neuron``
(its conftest registers the marker then).  Per-test cost = (median wall with -
median wall without) / N.  Target: < 1 ms per test on local disk.  For
comparison, the in-process lease + release of 1 core (LeaseManager directly).

Every run uses a fresh temp dir on local disk for its lock dir (printed), the
same pytest arguments in both arms (-p no:cacheprovider, no:randomly,
no:hypothesispytest) and, unless --no-pyc, a bytecode cache of its own
(PYTHONPYCACHEPREFIX), as an installed wheel has its .pyc files.

    python bench/bench_overhead.py [--quick] [--pairs 10] [--only A|B]

This is a script, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_neuron.core.topology import identity_topology
from pytest_neuron.locks.lease import LeaseManager

if TYPE_CHECKING:
    from collections.abc import Sequence

COMMON = ("-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:hypothesispytest")
CONFTEST = """
def pytest_configure(config):
    if not config.pluginmanager.has_plugin("neuron"):  # -p no:neuron: register the marker ourselves
        config.addinivalue_line("markers", "neuron(cores=1): NeuronCores this test needs")
"""
PER_MODULE = 100


def make_suite(root: Path, n: int, *, marked: bool) -> Path:
    """``n`` empty tests in modules of PER_MODULE, each marked neuron(1) when ``marked``."""
    suite = root / ("marked" if marked else "unmarked")
    suite.mkdir(parents=True)
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "conftest.py").write_text(CONFTEST)
    for start in range(0, n, PER_MODULE):
        lines = ["import pytest", ""]
        for i in range(start, min(n, start + PER_MODULE)):
            lines += ["@pytest.mark.neuron(1)"] if marked else []
            lines += [f"def test_{i:05d}():", "    pass", ""]
        (suite / f"test_m{start // PER_MODULE:03d}.py").write_text("\n".join(lines))
    return suite


def clean_env(root: Path, *, pyc: bool) -> dict[str, str]:
    """This environment without Neuron or xdist variables, on a host that looks like an ordinary one."""
    drop = ("NEURON_", "PYTEST_NEURON_", "PYTEST_XDIST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for name in ("PYTEST_ADDOPTS", "PYTEST_TIMEOUT", "MASTER_PORT", "PYTEST_PLUGINS"):
        env.pop(name, None)
    (root / "empty-host").mkdir()
    env["PYTEST_NEURON_HOST_ROOT"] = str(root / "empty-host")
    env["PYTEST_NEURON_NEURON_LS"] = str(root / "no-such-neuron-ls")
    env["PYTEST_NEURON_LOCK_DIR"] = str(root / "locks")
    if pyc:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


def run(suite: Path, args: Sequence[str], env: dict[str, str], *, plugin: bool) -> tuple[float, float]:
    """Wall and CPU (user + sys, xdist workers included) seconds of one pytest run.

    Arguments starting with --neuron go to the plugin's run only.
    """
    if not plugin:
        args = ["-p", "no:neuron", *(a for a in args if not a.startswith("--neuron"))]
    command = [sys.executable, "-m", "pytest", *COMMON, *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=suite, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if result.returncode != 0:
        raise SystemExit(f"run failed: {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return wall, cpu


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


@dataclass
class Pairs:
    """Wall and CPU seconds of alternating runs with and without the plugin."""

    name: str
    tests: int
    on: list[float]
    off: list[float]
    cpu_on: list[float]
    cpu_off: list[float]

    @property
    def ratio(self) -> float:
        return median_ratio(self.on, self.off)

    @property
    def cpu_ratio(self) -> float:
        return median_ratio(self.cpu_on, self.cpu_off)

    @property
    def diff_ms(self) -> float:
        return statistics.median(a - b for a, b in zip(self.on, self.off, strict=True)) * 1e3

    @property
    def per_test_ms(self) -> float:
        return (statistics.median(self.on) - statistics.median(self.off)) / self.tests * 1e3


def pairs(name: str, suite: Path, args: Sequence[str], env: dict[str, str], *, n: int, tests: int) -> Pairs:
    run(suite, args, env, plugin=True)  # warm-up: bytecode caches, page cache
    run(suite, args, env, plugin=False)
    result = Pairs(name, tests, [], [], [], [])
    for i in range(n):
        order = (True, False) if i % 2 == 0 else (False, True)
        for plugin in order:
            wall, cpu = run(suite, args, env, plugin=plugin)
            (result.on if plugin else result.off).append(wall)
            (result.cpu_on if plugin else result.cpu_off).append(cpu)
        print(f"  {name}: pair {i + 1}/{n}: {result.on[-1]:.3f}s / {result.off[-1]:.3f}s", file=sys.stderr)
    return result


def lease_release_ms(root: Path, iterations: int) -> tuple[float, float]:
    """p50 and p99 milliseconds of an in-process 1-core acquire + release from a 32-core pool."""
    mgr = LeaseManager(root, identity_topology(frozenset(range(32)), "--neuron-cores=0-31"))
    mgr.release(mgr.acquire(1, timeout=10))  # creates the domain and its files
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        mgr.release(mgr.acquire(1, timeout=10))
        samples.append(time.perf_counter() - started)
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3


def filesystem(path: Path) -> str:
    """The mount point and file system type that hold ``path``."""
    best = ("?", "?")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and str(path).startswith(fields[1]) and len(fields[1]) >= len(best[0]):
                best = (fields[1], fields[2])
    return f"{best[1]} at {best[0]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Numbers for docs/performance.md come from a run of this script on a quiet machine.",
    )
    parser.add_argument("--tests", type=int, default=2000, help="unmarked tests of part A")
    parser.add_argument("--marked", type=int, default=500, help="marked tests of part B")
    parser.add_argument("--pairs", type=int, default=10, help="alternating pairs per row, after a warm-up")
    parser.add_argument("--iterations", type=int, default=2000, help="in-process lease+release samples")
    parser.add_argument("--only", choices=["A", "B"], help="run one part only")
    parser.add_argument("--no-pyc", action="store_true", help="keep this environment's bytecode settings")
    parser.add_argument("--tmp", type=Path, default=None, help="where the temp dirs go (default: $TMPDIR)")
    parser.add_argument("--quick", action="store_true", help="3 pairs, 500/200 tests: to try the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.tests, args.marked, args.iterations = 3, 500, 200, 300

    root = Path(tempfile.mkdtemp(prefix="bench-overhead-", dir=args.tmp))
    try:
        env = clean_env(root, pyc=not args.no_pyc)
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        import pytest

        print(f"machine:  {os.cpu_count()} CPUs ({affinity} usable), {platform.platform()}")
        print(f"python:   {platform.python_version()}, pytest {pytest.__version__}; load {os.getloadavg()}")
        print(f"lock dir: {root / 'locks'} ({filesystem(root)}); host root {root / 'empty-host'} (empty)")
        print(f"bytecode: {'as this environment has it' if args.no_pyc else 'cached in ' + str(root)}")
        started = time.monotonic()
        rows: list[Pairs] = []
        if args.only in (None, "A"):
            suite = make_suite(root, args.tests, marked=False)
            rows.append(pairs("A unmarked, serial", suite, [], env, n=args.pairs, tests=args.tests))
            rows.append(pairs("A unmarked, -n 2", suite, ["-n", "2"], env, n=args.pairs, tests=args.tests))
        lease: tuple[float, float] | None = None
        if args.only in (None, "B"):
            suite = make_suite(root, args.marked, marked=True)
            test_scope = ["--neuron-scope=test", "--neuron-cores=0-31"]
            row = pairs("B marked, test scope", suite, test_scope, env, n=args.pairs, tests=args.marked)
            rows.append(row)
            lease = lease_release_ms(root / "locks-direct", args.iterations)

        print()
        print(
            f"{'plugin vs -p no:neuron':<24} {'tests':>5} {'pairs':>5} {'with s':>7} {'without s':>9} "
            f"{'ratio':>6} {'cpu ratio':>9} {'diff ms':>8} {'ms/test':>8}"
        )
        for row in rows:
            print(
                f"{row.name:<24} {row.tests:>5} {len(row.on):>5} {statistics.median(row.on):>7.3f} "
                f"{statistics.median(row.off):>9.3f} {row.ratio:>6.3f} {row.cpu_ratio:>9.3f} "
                f"{row.diff_ms:>8.1f} {row.per_test_ms:>8.3f}"
            )
        if lease is not None:
            print(
                f"{'B in-process lease':<24} {args.iterations:>5} {'':>5} {'':>7} {'':>9} {'':>6} {'':>9} "
                f"{'':>8} {lease[0]:>8.3f}  (1 core of 32, acquire+release p50; p99 {lease[1]:.3f} ms)"
            )
        print("ratio, cpu ratio (user+sys), diff: medians of the pairs")
        print("ms/test: (median with - median without) / tests; targets: ratio <= 1.02 (A), ms/test < 1 (B)")
        print(f"total {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
