"""What a run whose tests ask for no cores imports of the plugin: exactly the modules its path uses.

Under pytest each plugin module costs an import through the assertion-rewriting loader (about
1 to 9 million instructions here), which a suite of short tests pays in every process: the
start-up path is what docs/performance.md measures.  A module that joins it should be a decision:
import it where it is used, or add it here and measure (``python bench/bench_callgrind.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, assert_outcomes

if TYPE_CHECKING:
    from pathlib import Path

RECORDER = """
import os, sys

def pytest_unconfigure(config):
    names = sorted(m for m in sys.modules if m.startswith("pytest_neuron"))
    with open(f"loaded-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.txt", "w") as out:
        out.write("\\n".join(names))
"""
TESTS = "".join(f"def test_{i}():\n    pass\n\n" for i in range(5))

COMMON = {
    "pytest_neuron",
    "pytest_neuron.plugin",
    "pytest_neuron.plugins",
    "pytest_neuron.plugins.bootstrap",
    "pytest_neuron.plugins.keys",
    "pytest_neuron.plugins.options",
    "pytest_neuron.core",
    "pytest_neuron.core.coreset",
    "pytest_neuron.core.plan",
    "pytest_neuron.core.record",
    "pytest_neuron.core.settings",
    "pytest_neuron.core.topology",
    "pytest_neuron.host",
}
#: building the plan: every process but an xdist worker, which receives its controller's
PLANNING = {"pytest_neuron.core.planning"}
NO_POOL = (
    COMMON
    | PLANNING
    | {
        "pytest_neuron.core.detection",
        "pytest_neuron.core.report",
        "pytest_neuron.host.detect",
        "pytest_neuron.plugins.collection",
        "pytest_neuron.plugins.no_pool",
    }
)
WORKER_SCOPE = (
    COMMON
    | PLANNING
    | {
        "pytest_neuron.core.report",
        "pytest_neuron.core.runtime_env",
        "pytest_neuron.host.envpatch",
        "pytest_neuron.host.procinfo",
        "pytest_neuron.host.reaper",
        "pytest_neuron.locks",
        "pytest_neuron.locks.holders",
        "pytest_neuron.locks.lease",
        "pytest_neuron.locks.lockdir",
        "pytest_neuron.plugins.collection",
        "pytest_neuron.plugins.context",
        "pytest_neuron.plugins.reporting",
    }
)


#: an xdist worker: no plan of its own to build, no report (its summary travels to the controller),
#: and the watchdog
XDIST_WORKER = (
    WORKER_SCOPE - PLANNING - {"pytest_neuron.core.report", "pytest_neuron.plugins.reporting"}
) | {"pytest_neuron.core.plan_wire", "pytest_neuron.host.watchdog"}
#: an xdist controller in worker scope: it plans, reserves the run's cores and reports, but
#: collects nothing and exports nothing, and needs neither placement nor the watchdog
CONTROLLER = (WORKER_SCOPE - {"pytest_neuron.plugins.collection", "pytest_neuron.host.envpatch"}) | {
    "pytest_neuron.core.plan_wire",
    "pytest_neuron.core.workers",
    "pytest_neuron.plugins.xdist",
}
#: a worker whose sibling recorded its lease first reads that record (its cores are the
#: sibling's, but only the record says so): whether it does depends on timing
SIBLING_RECORD = {"pytest_neuron.locks.untrusted"}


def _loaded(pytester: pytest.Pytester, *args: str, process: str = "main") -> set[str]:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_plain=TESTS)
    result = pytester.runpytest_subprocess(*BASE_ARGS, *args)
    assert_outcomes(result, passed=5)
    return set((pytester.path / f"loaded-{process}.txt").read_text().split())


def _explain(loaded: set[str], expected: set[str]) -> str:
    return (
        f"joined the start-up path: {sorted(loaded - expected)}; left it: {sorted(expected - loaded)} "
        "(see this module's docstring)"
    )


@pytest.mark.usefixtures("neuron_env")
def test_a_run_without_a_pool_imports_planning_a_header_and_one_hook(pytester: pytest.Pytester) -> None:
    loaded = _loaded(pytester)
    assert loaded == NO_POOL, _explain(loaded, NO_POOL)


@pytest.mark.usefixtures("neuron_env")
def test_a_worker_scope_run_of_unmarked_tests_imports_no_waiting_marker_or_xdist_code(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    loaded = _loaded(pytester, "--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}")
    assert loaded == WORKER_SCOPE, _explain(loaded, WORKER_SCOPE)


@pytest.mark.usefixtures("neuron_env")
def test_an_xdist_worker_imports_no_controller_hooks_and_no_report(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    args = ("-n", "2", "--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}")
    loaded = _loaded(pytester, *args, process="gw0")
    assert loaded - SIBLING_RECORD == XDIST_WORKER, _explain(loaded - SIBLING_RECORD, XDIST_WORKER)


@pytest.mark.usefixtures("neuron_env")
def test_an_xdist_controller_imports_no_placement_watchdog_or_environment_patcher(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    args = ("-n", "2", "--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}")
    loaded = _loaded(pytester, *args)
    assert loaded == CONTROLLER, _explain(loaded, CONTROLLER)


ASKING = """
import pytest


def test_plain():
    pass


@pytest.mark.parametrize("n", [1, 2])
def test_other_marks(n):
    pass


@pytest.mark.neuron(1)
def test_marked():
    pass


def test_fixture(neuron_cores):
    pass


@pytest.mark.neuron(2)
class TestClass:
    def test_in_marked_class(self):
        pass
"""
MODULE_MARKED = """
import pytest

pytestmark = pytest.mark.neuron(1)


def test_in_marked_module():
    pass
"""
FINDER = """
import pytest
from pytest_neuron.plugins.collection import MarkedNodes

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    readings = {"asking": MarkedNodes().asking(items), "one_by_one": MarkedNodes()._one_by_one(items)}
    for name, found in readings.items():
        with open(name + ".txt", "w") as out:
            out.write("\\n".join(item.nodeid for item in found))
"""


OTHER_MARKS = """
import pytest


@pytest.mark.parametrize("n", [1, 2])
def test_parametrized(n):
    pass


@pytest.mark.skip(reason="not run")
def test_skipped():
    pass
"""
FIXTURE_ONLY = "def test_fixture_only(neuron_cores):\n    pass\n"
#: an item type of a plugin's own (no fixtures: it has no ``fixturenames``), as yaml test plugins make
OWN_ITEMS = """
import pytest


class CheckItem(pytest.Item):
    def runtest(self):
        pass


class CheckFile(pytest.File):
    def collect(self):
        yield CheckItem.from_parent(self, name="check")


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".check":
        return CheckFile.from_parent(parent, path=file_path)
"""
#: what each session has beside five plain tests, and which of its items may ask for cores
SESSIONS: dict[str, tuple[dict[str, str], list[str]]] = {
    "unmarked": ({}, []),
    "other marks only": ({"test_other": OTHER_MARKS}, []),
    "the fixture only": ({"test_fixture": FIXTURE_ONLY}, ["test_fixture.py::test_fixture_only"]),
    "a marked module only": (
        {"test_module_marked": MODULE_MARKED},
        ["test_module_marked.py::test_in_marked_module"],
    ),
    "every way": (
        {"test_asking": ASKING, "test_module_marked": MODULE_MARKED, "test_other": OTHER_MARKS},
        [
            "test_asking.py::test_marked",
            "test_asking.py::test_fixture",
            "test_asking.py::TestClass::test_in_marked_class",
            "test_module_marked.py::test_in_marked_module",
        ],
    ),
    "doctests": ({"helper": 'def f():\n    """\n    >>> 1\n    1\n    """\n'}, []),
    "items without fixtures": ({"test_fixture": FIXTURE_ONLY}, ["test_fixture.py::test_fixture_only"]),
}


@pytest.mark.parametrize("session", sorted(SESSIONS))
def test_collection_finds_exactly_the_items_that_may_ask(pytester: pytest.Pytester, session: str) -> None:
    """Each shortcut of ``MarkedNodes.asking`` (a marked parent, a ``neuron`` mark, the fixture, an
    item type without fixtures) finds exactly the items the item-by-item reading finds."""
    files, expected = SESSIONS[session]
    pytester.makeconftest(FINDER + (OWN_ITEMS if session == "items without fixtures" else ""))
    pytester.makepyfile(test_plain=TESTS, **files)
    args = [*BASE_ARGS, "--co", "-q", "-p", "no:neuron"]
    if session == "doctests":
        args.append("--doctest-modules")
    if session == "items without fixtures":
        (pytester.path / "one.check").write_text("")
    pytester.makeini("[pytest]\nmarkers =\n    neuron: cores\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == 0, result.stdout.str()
    if session == "items without fixtures":
        result.stdout.fnmatch_lines(["one.check::check"])  # collected, and it cannot ask
    for name in ("asking", "one_by_one"):
        assert sorted((pytester.path / f"{name}.txt").read_text().split()) == sorted(expected), name
