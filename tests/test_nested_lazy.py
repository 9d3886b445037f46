"""Runs nested in a lease lease lazily (issue 16, items 4 and 5).

A pytest run inside a process that holds a lease (a pytester run, or ``pytest`` started by a test)
inherits that lease.  It takes a slice of it only when one of its tests asks for cores: a config that
is parsed or configured but runs no test takes nothing and leaves nothing behind, and a nested run
may start more workers than it has cores while its tests need none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from conftest import assert_outcomes

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("neuron_env")

NESTED_CONFIGS = """
import os
from pathlib import Path

import pytest

LOCKS = Path(os.environ["OUTER_LOCKS"])


def nested_records():
    return sorted(str(p) for p in LOCKS.glob("nested/*/holders/*.json"))


def test_parseconfigure_takes_no_cores(pytester):
    before = dict(os.environ)
    config = pytester.parseconfigure()
    assert nested_records() == []  # configured, but it runs no test: no lease
    # a child started by the same test gets the cores at once (it used to wait on the config)
    child_test = "import pytest\\n@pytest.mark.neuron(2)\\ndef test_c(neuron_cores): pass\\n"
    pytester.makepyfile(test_child=child_test)
    child = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--neuron-wait-timeout=5")
    child.assert_outcomes(passed=1)
    config._ensure_unconfigure()
    assert dict(os.environ) == before


def test_parseconfig_leaves_nothing_behind(pytester):
    before = dict(os.environ)
    pytester.parseconfig()  # never configured, never unconfigured
    assert nested_records() == []
    assert dict(os.environ) == before
"""


def test_a_nested_config_that_runs_no_test_takes_no_cores(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lock_dir: Path
) -> None:
    monkeypatch.setenv("OUTER_LOCKS", str(lock_dir))
    pytester.makepyfile(test_nested=NESTED_CONFIGS)
    result = pytester.runpytest_subprocess(
        "-p", "pytester", "-p", "no:cacheprovider", "--neuron-cores=0-3", f"--neuron-lock-dir={lock_dir}"
    )
    assert_outcomes(result, passed=2)


NESTED_XDIST = r"""
import os


def test_more_workers_than_cores(pytester):
    assert os.environ["NEURON_RT_VISIBLE_CORES"] in ("0-1", "2-3")  # this worker's slice of 2 cores
    pytester.makepyfile(test_inner='''
import pytest

@pytest.mark.parametrize("i", range(6))
def test_cpu_only(i):
    pass
''')
    inner = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "3")
    inner.assert_outcomes(passed=6)
    assert "usage" not in inner.stdout.str().lower()
"""


def test_a_nested_run_may_start_more_workers_than_cores_when_no_test_needs_them(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    pytester.makepyfile(test_nested=NESTED_XDIST)
    result = pytester.runpytest_subprocess(
        "-p", "pytester", "-p", "no:cacheprovider", "-n", "2", "--neuron-cores=0-3",
        f"--neuron-lock-dir={lock_dir}",
    )  # fmt: skip
    assert_outcomes(result, passed=1)
