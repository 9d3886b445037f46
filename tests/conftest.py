"""Shared fixtures of the plugin tests: a fresh lock directory, a clean Neuron-free environment,
a fake Neuron host, and one check of a pytest run's outcome."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from lease_helpers import Children

#: Arguments of every inner pytest run: no cache files, and no hypothesis plugin
#: (it costs about a second per xdist worker on this machine).
BASE_ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")

_CRASH = re.compile(r"worker '?\w+'? crashed|replacing crashed worker|node down|maximum crashed workers")


@pytest.fixture(scope="session", autouse=True)
def _terminal_of_a_user() -> Iterator[None]:
    """The inner runs print as on a user's 80-column terminal, on CI too: pytest prints every
    short-summary message in full when ``CI`` or ``BUILD_NUMBER`` is set, and as much of it as
    fits a wider terminal, which the output checks would see."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CI", raising=False)
        patch.delenv("BUILD_NUMBER", raising=False)
        patch.setenv("COLUMNS", "80")
        yield


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """A lock directory of this test's own (not created: the plugin creates it)."""
    return tmp_path / "locks"


@pytest.fixture
def neuron_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment without Neuron: no inherited pool, lease, plan, port or xdist worker,
    and host detection that finds nothing (an empty host root, a neuron-ls that does not exist)."""
    for name in list(os.environ):
        if name.startswith(("NEURON_", "PYTEST_NEURON_", "PYTEST_XDIST_")) or name in (
            "MASTER_PORT",
            "PYTEST_TIMEOUT",
            "PYTEST_ADDOPTS",
        ):
            monkeypatch.delenv(name)
    host_root = tmp_path / "empty-host"
    host_root.mkdir()
    monkeypatch.setenv("PYTEST_NEURON_HOST_ROOT", str(host_root))
    monkeypatch.setenv("PYTEST_NEURON_NEURON_LS", str(tmp_path / "no-such-neuron-ls"))


@pytest.fixture
def fake_host(neuron_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An 8-core fake Neuron host (see pytest_neuron.testing) for the runs this test starts."""
    fake = tmp_path / "fake-host"
    monkeypatch.setenv("PYTEST_NEURON_FAKE_DIR", str(fake))
    monkeypatch.setenv("PYTEST_NEURON_FAKE_CORES", "8")
    return fake


def assert_outcomes(result: pytest.RunResult, *, crashed: bool = False, **counts: int) -> None:
    """Exactly these outcome counts, at least one test ran, and no xdist worker crashed
    (unless ``crashed``: then a worker must have crashed)."""
    text = "\n".join(result.outlines + result.errlines)
    outcomes = result.parseoutcomes()
    assert "no tests ran" not in text, text
    assert any(outcomes.get(key) for key in ("passed", "failed", "errors", "skipped")), text
    found = _CRASH.search(text)
    if crashed:
        assert found, f"expected a worker crash:\n{text}"
    else:
        assert found is None, f"unexpected worker crash ({found.group(0)!r}):\n{text}"
    wanted = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, **counts}
    got = {key: outcomes.get(key, 0) for key in wanted}
    assert got == wanted, text


# A marked test, a test using the fixture, and a plain test: the three kinds a run treats apart.
MARKED_FIXTURE_PLAIN = """
import pytest

@pytest.mark.neuron
def test_marked(): pass

def test_fixture(neuron_cores): pass

def test_plain(): pass
"""


@pytest.fixture
def children() -> Iterator[Children]:
    """Helper processes of the lock tests (tests/lease_helpers.py); all of them killed at the end."""
    from lease_helpers import Children

    group = Children()
    yield group
    group.cleanup()
