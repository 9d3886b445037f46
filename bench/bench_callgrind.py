"""What pytest-neuron costs a suite, in instructions (valgrind's callgrind): repeatable on a noisy machine.

Each arm runs a generated suite with the plugin and with ``-p no:neuron`` and prints the ratio of
instructions executed by every process of the run (xdist workers included:
``--trace-children=yes``, one callgrind file per process, summed):

* ``no pool``: ``--tests`` trivial unmarked tests on a machine without Neuron devices (an empty
  host root, a ``neuron-ls`` that does not exist);
* ``pool``: the same suite with ``--neuron-cores=0-31``, worker scope: what every Neuron host
  looks like, since most tests of a Neuron suite need no cores;
* ``marked``: the same number of tests, each ``@pytest.mark.neuron(1)``, worker scope on the pool
  (the per-test cost of a marked test; the ``-p no:neuron`` arm registers the marker itself).

each serial and with ``-n 2``.  Target (issue 10): <= 1.02x for ``no pool`` and ``pool``.

The plugin is measured as users have it: the checkout is installed as a wheel into a temp dir
(``pip install --no-deps --target``) that leads ``PYTHONPATH``, so pytest rewrites its modules, as
it does every ``pytest11`` plugin's.  An editable install is not what users have: pytest finds
no plugin files in its record and rewrites nothing (``--installed`` measures it anyway).

    python bench/bench_callgrind.py [--tests 2000] [--arms nopool,pool,marked] [--modes serial,xdist]
                                    [--repeat 3] [--pytest-args=--assert=plain] [--installed]

One run's count is not the whole story.  With ``-n 2`` both arms vary by a few tenths of a percent
from run to run (how often xdist's loops wake, and which worker runs which test, depend on
timing).  Serially a count repeats exactly for one build, but moves by up to a few tenths of a
percent with the memory layout of the run, plugin or not, so that a few lines more or less
anywhere in the plugin's start-up code move pytest's own work per test (callgrind's
per-function counts of two such runs differ in dict lookups and in CPython's type-attribute
cache, whose slots are chosen from the addresses of interned names and the order types got
their version tags; ``--repeat`` shows the spread).
``--repeat N`` runs each arm N times, alternately; run ``i`` of both arms starts with
``PYTHONHASHSEED=i`` and, from run 1 on, with ``13 i`` classes and ``97 i`` interned names made
before pytest starts (a ``sitecustomize`` first on ``PYTHONPATH``; run 0 has none, as a single run
has), so the runs sample different layouts; the median of the runs' ratios (each run compares
its two arms, which share a layout) follows.

Needs valgrind.  A script, not a test: it asserts nothing.  One to several minutes per run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

PER_MODULE = 100
COMMON = ("-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:hypothesispytest")
CONFTEST = """
def pytest_configure(config):
    if not config.pluginmanager.has_plugin("neuron"):  # -p no:neuron: register the marker ourselves
        config.addinivalue_line("markers", "neuron(cores=1): NeuronCores this test needs")
"""


def write_suite(root: Path, tests: int, *, marked: bool) -> None:
    root.mkdir(parents=True)
    head = "import pytest\n\n" if marked else ""
    mark = "@pytest.mark.neuron(1)\n" if marked else ""
    for m in range((tests + PER_MODULE - 1) // PER_MODULE):
        count = min(PER_MODULE, tests - m * PER_MODULE)
        body = "".join(f"{mark}def test_{i}():\n    pass\n\n" for i in range(count))
        (root / f"test_m{m:03d}.py").write_text(head + body)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "conftest.py").write_text(CONFTEST)


def instructions(work: Path, name: str, suite: Path, args: list[str], env: dict[str, str]) -> int:
    out = work / "cg" / name
    out.mkdir(parents=True)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out}/%p.out",
        sys.executable,
        "-m",
        "pytest",
        *COMMON,
        *args,
    ]
    done = subprocess.run(command, cwd=suite, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    total = 0
    for path in out.glob("*.out"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
                break
    return total


ROOT = Path(__file__).resolve().parent.parent
LAYOUT_ENV = "BENCH_LAYOUT"
#: first on PYTHONPATH from run 1 on: run i starts with i x (13 classes, 97 interned names) more,
#: before pytest, so the runs sample different memory layouts (see the docstring)
LAYOUT = f"""
import os, sys

_n = int(os.environ.get("{LAYOUT_ENV}", "0"))
_classes = [type(f"_Pad{{i}}", (), {{"x": i}}) for i in range(13 * _n)]
_names = [sys.intern(f"_pad_{{i}}") for i in range(97 * _n)]
"""
#: a test that prints where the plugin was imported from and which loader loaded it
WHERE = """
import pytest_neuron.plugin as plugin


def test_where():
    print(plugin.__file__, type(plugin.__loader__).__name__ == "AssertionRewritingHook")
"""


def install_wheel(site: Path, env: dict[str, str]) -> None:
    """The checkout, built and installed as a wheel into ``site``, which leads ``PYTHONPATH`` in ``env``.

    Built from a copy of the sources only: setuptools builds in the tree's ``build/`` and never
    removes a module deleted since an earlier build from it, so a wheel of the tree itself can
    carry modules the checkout no longer has.
    """
    source = site.parent / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "pytest_neuron", source / "pytest_neuron", ignore=skip)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(source)]
    done = subprocess.run(pip, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pip could not install the checkout as a wheel:\n{done.stdout}{done.stderr}")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)


def loaded_from(suite: Path, env: dict[str, str]) -> str:
    """Where the plugin is imported from in a run, and whether pytest's rewriting loader loaded it."""
    probe = suite / "test_where.py"
    probe.write_text(WHERE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(probe)],
        cwd=suite.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    probe.unlink()
    lines = [line for line in done.stdout.splitlines() if "pytest_neuron" in line]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"could not find where the plugin is loaded from:\n{done.stdout[-2000:]}")
    where, rewritten = lines[0].rsplit(" ", 1)
    return f"{where}, {'rewritten by pytest' if rewritten == 'True' else 'NOT rewritten by pytest'}"


def row(arm: str, mode: str, on: int, off: int) -> str:
    return f"{arm:<8} {mode:<7} {on:>15,} {off:>15,} {on / off:>8.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--arms", default="nopool,pool,marked")
    parser.add_argument("--modes", default="serial,xdist")
    parser.add_argument("--pytest-args", default="", help="more arguments for both runs, e.g. --assert=plain")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each arm, each in its own layout, then the median ratio",
    )
    parser.add_argument(
        "--installed", action="store_true", help="measure the installed plugin (editable or not), not a wheel"
    )
    opts = parser.parse_args()
    arms, modes = opts.arms.split(","), opts.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "empty-host").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURON_", "PYTEST_NEURON_"))}
        # bytecode cached, as an installed wheel has it: under PYTHONDONTWRITEBYTECODE=1 an editable
        # install compiles the plugin's modules from source in every process (pytest's are cached)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(
            PYTHONHASHSEED="0",
            PYTHONPYCACHEPREFIX=str(work / "pyc"),
            PYTEST_NEURON_HOST_ROOT=str(work / "empty-host"),
            PYTEST_NEURON_NEURON_LS="/nonexistent/neuron-ls",
        )
        if not opts.installed:
            install_wheel(work / "site", env)
        (work / "layout").mkdir()
        (work / "layout" / "sitecustomize.py").write_text(LAYOUT)  # on PYTHONPATH from run 1 on
        env.setdefault("PYTHONPATH", "")
        suites = {"plain": work / "plain", "marked": work / "marked"}
        write_suite(suites["plain"], opts.tests, marked=False)
        write_suite(suites["marked"], opts.tests, marked=True)
        print(
            f"python {platform.python_version()}, pytest {version('pytest')}, {opts.tests} tests per run, "
            "instructions of every process"
        )
        print(f"plugin: {loaded_from(suites['plain'], env)}")
        print(f"{'arm':<8} {'mode':<7} {'plugin':>15} {'-p no:neuron':>15} {'ratio':>8}")
        extra: dict[tuple[str, str], int] = {}  # plugin minus -p no:neuron, per arm and mode
        for arm in arms:
            for mode in modes:
                xdist = (["-n", "2"] if mode == "xdist" else []) + opts.pytest_args.split()
                suite = suites["marked" if arm == "marked" else "plain"]
                neuron = (
                    [] if arm == "nopool" else ["--neuron-cores=0-31", f"--neuron-lock-dir={work / 'locks'}"]
                )
                # warm each arm, so every module it imports is cached
                for args in ([*xdist, *neuron], [*xdist, "-p", "no:neuron"]):
                    warm = [sys.executable, "-m", "pytest", *COMMON, *args]
                    subprocess.run(warm, cwd=suite, env=env, capture_output=True, check=False)
                ons, offs = [], []
                for run in range(opts.repeat):  # the two arms alternately, so a slow spell hits both
                    name = f"{arm}-{mode}-{run}"
                    seeded = {**env, "PYTHONHASHSEED": str(run), LAYOUT_ENV: str(run)}
                    if run:  # run 0 is the bare layout: no padding module at all
                        paths = (str(work / "layout"), env["PYTHONPATH"])
                        seeded["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
                    ons.append(instructions(work, f"{name}-on", suite, [*xdist, *neuron], seeded))
                    offs.append(instructions(work, f"{name}-off", suite, [*xdist, "-p", "no:neuron"], seeded))
                    print(row(arm, mode, ons[-1], offs[-1]), flush=True)
                ratios = [a / b for a, b in zip(ons, offs, strict=True)]
                if opts.repeat > 1:  # each run's two arms share a layout: compare within runs
                    median = statistics.median(ratios)
                    print(
                        f"{arm:<8} {mode:<7} median of {opts.repeat} runs: {median:.4f} "
                        f"(from {min(ratios):.4f} to {max(ratios):.4f})",
                        flush=True,
                    )
                extra[arm, mode] = diff = int(
                    statistics.median(a - b for a, b in zip(ons, offs, strict=True))
                )
                if arm == "marked":
                    line = f"per marked test: {diff / opts.tests:,.0f} instructions"
                    if ("pool", mode) in extra:  # the fixed cost of a process with a pool, measured above
                        net = (diff - extra["pool", mode]) / opts.tests
                        line += f", {net:,.0f} above the pool arm's"
                    print(f"{'':<8} {'':<7} {line}")


if __name__ == "__main__":
    main()
