from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_neuron.core.plan import HANDOFF_ENV, Handoff
from pytest_neuron.host.procinfo import my_starttime, proc_state
from pytest_neuron.locks.holders import handoff_value
from pytest_neuron.locks.untrusted import inherited_handoff

ROOT = Path("/tmp/pytest-neuron")


def env_of(value: object) -> dict[str, str]:
    return {HANDOFF_ENV: value if isinstance(value, str) else json.dumps(value)}


def test_value_names_domain_holder_and_cores() -> None:
    data = json.loads(handoff_value(ROOT, (4, 5, 6, 7), plugin_vars=("MASTER_PORT",)))
    assert data == {
        "dir": str(ROOT),
        "pid": os.getpid(),
        "start": my_starttime(),
        "cores": "4-7",
        "vars": ["MASTER_PORT"],
        "ids": [],
    }


def test_value_chains_the_lease_ids_of_enclosing_runs() -> None:
    outer = handoff_value(ROOT, (0, 1), lease_id="aaaaaaaaaaaaaaaa", env={})
    inner = handoff_value(ROOT, (0,), lease_id="bbbbbbbbbbbbbbbb", env={HANDOFF_ENV: outer})
    assert json.loads(inner)["ids"] == ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]
    garbled = handoff_value(ROOT, (0,), lease_id="cccccccccccccccc", env={HANDOFF_ENV: "{not json"})
    assert json.loads(garbled)["ids"] == ["cccccccccccccccc"]


def test_plugin_set_variables_are_handed_down() -> None:
    handoff = inherited_handoff(env_of(handoff_value(ROOT, (0, 1), plugin_vars=("MASTER_PORT", "X"))))
    assert handoff is not None
    assert handoff.plugin_vars == ("MASTER_PORT", "X")


@pytest.mark.parametrize(("cores", "expected"), [((2, 3), {2, 3}), ((0, 1, 4), {0, 1, 4}), ((9,), {9})])
def test_own_value_is_inherited(cores: tuple[int, ...], expected: set[int]) -> None:
    handoff = inherited_handoff(env_of(handoff_value(ROOT, cores)))
    assert handoff == Handoff(root=ROOT, pid=os.getpid(), starttime=my_starttime(), cores=frozenset(expected))
    assert handoff.nested_root == ROOT / "nested" / f"{os.getpid()}-{my_starttime()}"


def test_a_value_from_an_ancestor_is_inherited() -> None:
    parent = os.getppid()
    value = {"dir": str(ROOT), "pid": parent, "start": proc_state(parent).starttime, "cores": "0-1"}
    handoff = inherited_handoff(env_of(value))
    assert handoff is not None
    assert handoff.pid == parent


def test_a_value_from_a_process_that_is_not_an_ancestor_is_ignored() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        value = {"dir": str(ROOT), "pid": child.pid, "start": proc_state(child.pid).starttime, "cores": "0-1"}
        assert inherited_handoff(env_of(value)) is None
    finally:
        child.kill()
        child.wait()


def test_a_recycled_pid_is_ignored() -> None:
    start = my_starttime()
    assert start is not None
    value = {"dir": str(ROOT), "pid": os.getpid(), "start": start + 1, "cores": "0-1"}
    assert inherited_handoff(env_of(value)) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not json",
        "{",
        "null",
        "42",
        '"a string"',
        "[]",
        "{}",
        {"pid": 1, "start": None, "cores": "0"},
        {"dir": "/x", "start": None, "cores": "0"},
        {"dir": "/x", "pid": 1, "cores": "0"},
        {"dir": "/x", "pid": 1, "start": None},
        {"dir": "/x", "pid": "one", "start": None, "cores": "0"},
        {"dir": "/x", "pid": None, "start": None, "cores": "0"},
        {"dir": "/x", "pid": [1], "start": None, "cores": "0"},
        {"dir": "/x", "pid": 1, "start": "yesterday", "cores": "0"},
        {"dir": "/x", "pid": 1, "start": None, "cores": "zero"},
        {"dir": "/x", "pid": 1, "start": None, "cores": ""},
        {"dir": "/x", "pid": 1, "start": None, "cores": "3-1"},
        {"dir": None, "pid": 1, "start": None, "cores": "0"},
        {"dir": ["/x"], "pid": 1, "start": None, "cores": "0"},
        {"dir": "/x", "pid": -5, "start": None, "cores": "0"},
        {"dir": "/x", "pid": 0, "start": None, "cores": "0"},
        {"dir": "/x", "pid": 2**40, "start": None, "cores": "0"},
    ],
)
def test_garbage_is_ignored(value: object) -> None:
    assert inherited_handoff(env_of(value)) is None


def test_no_variable_is_no_handoff() -> None:
    assert inherited_handoff({}) is None


@pytest.mark.parametrize(
    "value",
    [
        '{"dir": "/x", "pid": Infinity, "start": null, "cores": "0"}',
        '{"dir": "/x", "pid": 1e400, "start": null, "cores": "0"}',
        '{"dir": "/x", "pid": 1, "start": -Infinity, "cores": "0"}',
        "[" * 100_000,
    ],
    ids=["Infinity", "1e400", "start-Infinity", "deep"],
)
def test_garbage_that_breaks_int_or_json_is_ignored(value: str) -> None:
    assert inherited_handoff(env_of(value)) is None
