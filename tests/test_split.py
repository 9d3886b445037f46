"""``NeuronCores.split(n)``, the per-lease key and ``neuron_work_dir``.

Pure tests of the parts (table-driven and hypothesis), then real runs: parts started as client and
server processes on the fake runtime at once, and two concurrent runs whose parts never share a core,
a port or a key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, assert_outcomes
from hypothesis import given
from hypothesis import strategies as st

from pytest_neuron import NeuronCores
from pytest_neuron.core.coreset import format_coreset
from pytest_neuron.core.runtime_env import KEY_ENV, MASTER_PORT, ROOT_COMM_ID, VISIBLE, lease_key

if TYPE_CHECKING:
    from pathlib import Path


def window(first: int, size: int, *, lnc: int = 1, env: dict[str, str] | None = None) -> NeuronCores:
    cores = tuple(range(first, first + size))
    physical = tuple(range(first * lnc, (first + size) * lnc))
    base_env = {VISIBLE: format_coreset(cores), ROOT_COMM_ID: f"localhost:{1000 + physical[0]}"}
    base_env[MASTER_PORT] = str(1512 + physical[0])
    base_env[KEY_ENV] = "run-lease"
    base_env.update(env or {})
    return NeuronCores(
        cores,
        format_coreset(cores),
        base_env,
        0.5,
        physical=physical,
        lnc=lnc,
        key="run-lease",
        port=1512 + physical[0],
        port_base=1000,
    )


@pytest.mark.parametrize(
    ("first", "size", "lnc", "n", "expected"),
    [
        (4, 4, 1, 2, [("4-5", (4, 5), 1516), ("6-7", (6, 7), 1518)]),
        (4, 4, 1, 4, [("4", (4,), 1516), ("5", (5,), 1517), ("6", (6,), 1518), ("7", (7,), 1519)]),
        (0, 2, 2, 2, [("0", (0, 1), 1512), ("1", (2, 3), 1514)]),
        (3, 1, 1, 1, [("3", (3,), 1515)]),
    ],
)
def test_parts(
    first: int, size: int, lnc: int, n: int, expected: list[tuple[str, tuple[int, ...], int]]
) -> None:
    parts = window(first, size, lnc=lnc).split(n)
    got = [(p.visible_cores, p.physical, p.port) for p in parts]
    assert got == expected
    for i, part in enumerate(parts):
        assert part.env[VISIBLE] == part.visible_cores
        assert part.env[MASTER_PORT] == str(part.port)
        assert part.env[ROOT_COMM_ID] == f"localhost:{1000 + part.physical[0]}"
        assert part.key == part.env[KEY_ENV] == f"run-lease.{i}"
        assert part.lnc == lnc
        assert part.wait_seconds == 0.5


def test_ports_set_by_the_user_are_kept() -> None:
    cores = window(0, 4, env={MASTER_PORT: "29500"})
    cores = NeuronCores(**{**cores.__dict__, "derived": (ROOT_COMM_ID,)})
    parts = cores.split(2)
    assert [p.env[MASTER_PORT] for p in parts] == ["29500", "29500"]
    assert [p.env[ROOT_COMM_ID] for p in parts] == ["localhost:1000", "localhost:1002"]


@pytest.mark.parametrize("n", [3, 0, -1, 8, 2.0, True, "2"])
def test_split_that_does_not_divide_is_one_clear_error(n: object) -> None:
    with pytest.raises(ValueError) as info:
        window(0, 4).split(n)  # type: ignore[arg-type]
    text = str(info.value)
    assert text.startswith(f"NeuronCores.split({n!r}): 4 cores (0-3) do not split into")
    assert "expected a whole number >= 1 that divides 4" in text
    assert "\n" not in text


@given(
    first=st.integers(0, 64),
    per=st.integers(1, 8),
    n=st.integers(1, 8),
    lnc=st.sampled_from([1, 2]),
)
def test_parts_are_contiguous_disjoint_and_cover_the_window(first: int, per: int, n: int, lnc: int) -> None:
    whole = window(first, per * n, lnc=lnc)
    parts = whole.split(n)
    assert [c for p in parts for c in p.cores] == list(whole.cores)
    assert [c for p in parts for c in p.physical] == list(whole.physical)
    assert all(p.cores == tuple(range(p.cores[0], p.cores[0] + per)) for p in parts)
    ports = [p.port for p in parts] + [int(p.env[ROOT_COMM_ID].split(":")[1]) for p in parts]
    assert len(set(ports)) == len(ports)


def test_shell_env_quotes_for_a_command_line() -> None:
    cores = window(2, 1, env={"NEURON_RT_LOG_LEVEL": "INFO", "PYTEST_NEURON_LEASE": '{"a": 1}'})
    text = cores.shell_env()
    assert "NEURON_RT_VISIBLE_CORES=2" in text.split()
    assert "PYTEST_NEURON_LEASE='{\"a\": 1}'" in text


def test_lease_key_joins_run_and_lease() -> None:
    assert lease_key("0123456789ab", "fedcba9876543210") == "0123456789ab-fedcba98"


# -- real runs -----------------------------------------------------------------------------------
CLIENT_SERVER = """
import json, os, socket, subprocess, sys, time
import pytest

PEER = '''
import os, socket, sys, time
from pytest_neuron.testing import init_runtime
role, core, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ["NEURON_RT_VISIBLE_CORES"] = core   # the core comes on the command line, as in fabtests
runtime = init_runtime()
if role == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(1)
    conn, _ = s.accept(); conn.sendall(("server on " + runtime.visible_cores).encode()); conn.close()
else:
    for _ in range(500):
        try:
            c = socket.create_connection(("127.0.0.1", port)); break
        except OSError:
            time.sleep(0.02)
    print(c.recv(100).decode(), "| client on", runtime.visible_cores)
'''

@pytest.mark.parametrize("i", range(4))
@pytest.mark.neuron(2)
def test_client_server(i, neuron_cores, tmp_path):
    server, client = neuron_cores.split(2)
    assert server.cores != client.cores and server.port != client.port
    peer = tmp_path / "peer.py"
    peer.write_text(PEER)
    # one port for the pair: the window's own, which no other window held now gets
    port = str(neuron_cores.port)
    cmd = [sys.executable, str(peer)]
    s = subprocess.Popen([*cmd, "server", server.visible_cores, port], env={**os.environ, **server.env})
    out = subprocess.run([*cmd, "client", client.visible_cores, port], env={**os.environ, **client.env},
                         capture_output=True, text=True, timeout=60)
    assert s.wait(timeout=60) == 0
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"server on {server.visible_cores} | client on {client.visible_cores}"
    with open(os.environ["RECORDS"], "a") as f:
        for part in (server, client):
            f.write(json.dumps({"cores": part.cores, "port": part.port, "key": part.key,
                                "comm": part.env["NEURON_RT_ROOT_COMM_ID"], "t": [time.time()]}) + "\\n")
"""


def test_client_and_server_each_get_a_core_in_two_concurrent_runs(
    pytester: pytest.Pytester, lock_dir: Path, fake_host: Path, tmp_path: Path
) -> None:
    records = tmp_path / "records.jsonl"
    pytester.makepyfile(test_cs=CLIENT_SERVER)
    env = {**os.environ, "RECORDS": str(records)}
    args = [
        *BASE_ARGS,
        "-n",
        "2",
        "--neuron-cores=0-7",
        "--neuron-scope=test",
        f"--neuron-lock-dir={lock_dir}",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", *args],
            cwd=pytester.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out
        assert "4 passed" in out, out
        assert "NeuronCore(s) not available" not in out
    seen = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(seen) == 16
    assert len({r["key"] for r in seen}) == 16  # unique across parts, tests and runs


WORK_DIR_TESTS = """
import os
import pytest

def test_key(neuron_cores, neuron_work_dir):
    assert os.environ["PYTEST_NEURON_KEY"] == neuron_cores.key == neuron_cores.env["PYTEST_NEURON_KEY"]
    assert neuron_work_dir.is_dir() and neuron_work_dir.name == "neuron-" + neuron_cores.key
    (neuron_work_dir / "artifact").write_text(neuron_cores.key)
    with open(os.environ["RECORDS"], "a") as f:
        f.write(f"{neuron_cores.key} {neuron_work_dir} {CONFIGURE_KEY} {os.getpid()}\\n")
"""

WORK_DIR_CONFTEST = """
import os
CONFIGURE_KEY = None

def pytest_configure(config):
    # as nkipy's conftest: a per-worker artifacts directory, named at configure time
    global CONFIGURE_KEY
    CONFIGURE_KEY = os.environ.get("PYTEST_NEURON_KEY")
"""


@pytest.mark.parametrize("scope", ["worker", "test"])
def test_key_and_work_dir_are_unique_across_runs_and_leases(
    pytester: pytest.Pytester, lock_dir: Path, tmp_path: Path, scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = tmp_path / "records.txt"
    monkeypatch.setenv("RECORDS", str(records))
    pytester.makeconftest(WORK_DIR_CONFTEST)
    pytester.makepyfile(
        test_wd=WORK_DIR_TESTS.replace("CONFIGURE_KEY", "__import__('conftest').CONFIGURE_KEY")
    )
    pytester.makepyfile(
        test_wd2=WORK_DIR_TESTS.replace("CONFIGURE_KEY", "__import__('conftest').CONFIGURE_KEY")
    )
    for _ in range(2):
        result = pytester.runpytest_subprocess(
            *BASE_ARGS,
            "-n",
            "2",
            "--neuron-cores=0-3",
            f"--neuron-scope={scope}",
            f"--neuron-lock-dir={lock_dir}",
            timeout=60,
        )
        assert_outcomes(result, passed=2)
    rows = [line.split() for line in records.read_text().splitlines()]
    keys = [row[0] for row in rows]
    assert len(rows) == 4
    if scope == "test":
        assert len(set(keys)) == 4  # one lease per test
        assert all(row[2] == "None" for row in rows)  # no key at configure time: no worker lease
    else:
        assert all(row[2] == row[0] for row in rows)  # the worker's key is there before conftests run
        # one key per worker process (a worker may run both tests), never shared by two processes
        assert len({(row[0], row[3]) for row in rows}) == len(set(keys)) == len({row[3] for row in rows})
    by_key: dict[str, set[str]] = {}
    for key, path, _, _ in rows:
        by_key.setdefault(key, set()).add(path)
    assert all(len(paths) == 1 for paths in by_key.values())
    assert len({p for paths in by_key.values() for p in paths}) == len(by_key)
