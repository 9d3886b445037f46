"""pytest-timeout is optional: a suite with a ``--timeout`` option of its own passes with the plugin.

libfabric's fabtests define ``--timeout`` themselves.  A hard dependency on pytest-timeout (which
auto-loads and owns ``--timeout``) stopped such a suite before any test.  ``-p no:timeout`` is how
these runs stand for "pytest-timeout is not installed": pytest then never imports it, and the
installed metadata shows it only as an extra.  The tests of what the plugin does *with*
pytest-timeout are in tests/test_plugin.py.
"""

from __future__ import annotations

import re
from importlib.metadata import requires
from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, assert_outcomes

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("neuron_env")

OWN_TIMEOUT_CONFTEST = """
import pytest

def pytest_addoption(parser):
    # as fabtests' conftest does: the suite's own per-command timeout
    parser.addoption("--timeout", dest="timeout", type=int, default=5, help="seconds per command")

@pytest.fixture
def command_timeout(request):
    return request.config.getoption("--timeout")
"""

OWN_TIMEOUT_TESTS = """
import os, sys
import pytest

@pytest.mark.neuron(2, exec_timeout=60)
def test_marked(command_timeout, neuron_cores):
    assert command_timeout == 7
    assert os.environ["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
    assert "pytest_timeout" not in sys.modules

def test_plain(command_timeout):
    assert command_timeout == 7
"""


def test_pytest_timeout_is_an_extra_not_a_dependency() -> None:
    reqs = requires("pytest-neuron") or []
    timeout = [r for r in reqs if re.match(r"pytest-timeout\b", r)]
    assert timeout, reqs
    assert all('extra == "timeout"' in r or 'extra == "test"' in r for r in timeout), timeout
    assert any('extra == "timeout"' in r for r in timeout), timeout


@pytest.mark.parametrize("scope", ["worker", "test"])
def test_a_suite_with_its_own_timeout_option_passes(
    pytester: pytest.Pytester, lock_dir: Path, scope: str
) -> None:
    pytester.makeconftest(OWN_TIMEOUT_CONFTEST)
    pytester.makepyfile(test_own=OWN_TIMEOUT_TESTS)
    result = pytester.runpytest_subprocess(
        *BASE_ARGS,
        "-p",
        "no:timeout",
        "--timeout=7",
        "--neuron-cores=0-3",
        f"--neuron-scope={scope}",
        f"--neuron-lock-dir={lock_dir}",
        timeout=60,
    )
    # no NeuronWarning either: the suite's --timeout=7 is not pytest-timeout's, so it is not
    # compared with NEURON_RT_EXEC_TIMEOUT=60
    assert_outcomes(result, passed=2)
    assert "NeuronWarning" not in result.stdout.str()


def test_with_pytest_timeout_loaded_the_same_suite_clashes(pytester: pytest.Pytester) -> None:
    """The premise: the clash is pytest-timeout's own, so the plugin must not force it on a suite."""
    pytester.makeconftest(OWN_TIMEOUT_CONFTEST)
    pytester.makepyfile(test_own=OWN_TIMEOUT_TESTS)
    result = pytester.runpytest_subprocess(*BASE_ARGS, "-p", "no:neuron", "--timeout=7", timeout=60)
    assert result.ret != pytest.ExitCode.OK
    assert re.search(r"already used|conflicting option string: --timeout", "\n".join(result.errlines))
