"""The fake Neuron runtime, exercised with real processes.

Every reservation lives for the life of the process that made it, so nothing
here initialises the runtime in the pytest process: in-process cases run in a
``python -c`` child and holders are ``python -m pytest_neuron.testing run``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from pytest_neuron.testing import (
    FakeHost,
    FakeHostError,
    LogFormatError,
    Overlap,
    check_log,
    free_cores,
    open_devices,
    read_log,
    summarize_log,
)
from pytest_neuron.testing.log import append_event

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BUSY = "NRT:nrt_allocate_neuron_cores NeuronCore(s) not available - Requested:"
CLI = [sys.executable, "-m", "pytest_neuron.testing"]


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "fake", cores=8, cores_per_device=2)


def env_for(host: FakeHost, **neuron: str) -> dict[str, str]:
    """A clean environment describing ``host``, plus ``NEURON_RT_<KEY>=value`` for each keyword."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURON_RT_", "PYTEST_NEURON_FAKE_"))}
    env.update(host.to_env())
    env.update({f"NEURON_RT_{key}": value for key, value in neuron.items()})
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=30, check=False)


def hold_briefly(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(env, "run", "--seconds", "0")


def run_script(code: str, env: dict[str, str]) -> Any:
    """Run ``code`` in a fresh interpreter and return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


class Holders:
    """Long-running ``run`` processes, killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [*CLI, "run", "--seconds", "60"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)[1]
        return proc, line.strip()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def holders() -> Iterator[Holders]:
    started = Holders()
    yield started
    started.close()


def test_in_process_init_renumbers_from_zero_and_logs_start_and_end(host: FakeHost) -> None:
    code = """if True:
        import json, os
        from pytest_neuron.testing import free_cores, init_runtime
        h = init_runtime()
        seen = dict(cores=h.cores, physical=h.physical, local=h.local_ids, pid=h.pid, me=os.getpid(),
                    devices=h.devices, visible=h.visible_cores, id=h.reservation_id, free=free_cores())
        h.close()
        seen["free_after_close"] = free_cores()
        again = init_runtime(env={**os.environ, "NEURON_RT_VISIBLE_CORES": "0"})
        seen["again"] = [again is not h, again.cores]
        print(json.dumps(seen))
    """
    seen = run_script(code, env_for(host, VISIBLE_CORES="4-7"))
    assert seen["cores"] == seen["physical"] == [4, 5, 6, 7]
    assert seen["local"] == [0, 1, 2, 3]
    assert seen["pid"] == seen["me"]
    assert seen["devices"] == [2, 3]
    assert seen["visible"] == "4-7"
    assert seen["free"] == [0, 1, 2, 3]
    assert seen["free_after_close"] == list(range(8))
    assert seen["again"] == [True, [0]]
    events = read_log(host.fake_dir)
    assert [(e["event"], e["id"]) for e in events[:2]] == [("start", seen["id"]), ("end", seen["id"])]
    assert events[0]["cores"] == [4, 5, 6, 7]
    assert events[0]["pid"] == seen["pid"]
    assert [e["event"] for e in events[2:]] == ["start", "end"]  # the re-init, ended by atexit
    assert check_log(host.fake_dir) == []
    assert free_cores(host) == tuple(range(8))


def test_second_init_returns_the_same_handle_and_ignores_env_changes(host: FakeHost) -> None:
    code = """if True:
        import json, os
        from pytest_neuron.testing import init_runtime
        first = init_runtime()
        os.environ["NEURON_RT_VISIBLE_CORES"] = "5"
        second = init_runtime()
        third = init_runtime(env={"NEURON_RT_VISIBLE_CORES": "6"})
        print(json.dumps([first is second is third, third.cores]))
    """
    assert run_script(code, env_for(host, VISIBLE_CORES="2")) == [True, [2]]


def test_an_overlapping_request_is_busy_and_a_disjoint_one_succeeds(host: FakeHost, holders: Holders) -> None:
    holder, line = holders.start(env_for(host, VISIBLE_CORES="4-7"))
    assert line == f"fake-neuron: pid {holder.pid} holds cores 4-7 (local 0-3)"

    busy = hold_briefly(env_for(host, VISIBLE_CORES="3-4"))
    assert busy.returncode == 1
    assert busy.stderr == f"{BUSY}nc3-nc4 Available:4\n"  # one line, no traceback
    assert free_cores(host) == (0, 1, 2, 3)  # all or nothing: core 3 was given back

    single = hold_briefly(env_for(host, VISIBLE_CORES="6"))
    assert (single.returncode, single.stderr) == (1, f"{BUSY}nc6-nc6 Available:4\n")

    disjoint = hold_briefly(env_for(host, VISIBLE_CORES="0-3"))
    assert disjoint.returncode == 0, disjoint.stderr
    assert "holds cores 0-3 (local 0-3)" in disjoint.stdout
    assert check_log(host.fake_dir) == []


@pytest.mark.parametrize(
    ("neuron", "message"),
    [
        ({"VISIBLE_CORES": "3,5,6"}, "NRT:nrt_allocate_neuron_cores Neuron cores are not contiguous"),
        ({"VISIBLE_CORES": "5,4"}, "NRT:nrt_allocate_neuron_cores Neuron cores are not contiguous"),
        ({"VISIBLE_CORES": "6-9"}, "not present - Requested:nc6-nc9 Present:nc0-nc7"),
        ({"VISIBLE_CORES": "8"}, "not present - Requested:nc8-nc8"),
        ({"VISIBLE_CORES": "two"}, "invalid core set 'two' from NEURON_RT_VISIBLE_CORES"),
        ({"VISIBLE_CORES": ""}, "invalid core set '' from NEURON_RT_VISIBLE_CORES"),
        ({"VISIBLE_CORES": "-1"}, "negative index"),
        ({"NUM_CORES": "9"}, "more NeuronCores requested than present - Requested:9 Present:8"),
        ({"NUM_CORES": "-1"}, "invalid NEURON_RT_NUM_CORES='-1'"),
        ({"NUM_CORES": "all"}, "invalid NEURON_RT_NUM_CORES='all'"),
    ],
)
def test_the_runtime_rejects_bad_requests(host: FakeHost, neuron: dict[str, str], message: str) -> None:
    done = hold_briefly(env_for(host, **neuron))
    assert done.returncode == 1
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""
    assert not host.log_file.exists()


def test_visible_cores_take_precedence_over_num_cores(host: FakeHost) -> None:
    done = hold_briefly(env_for(host, VISIBLE_CORES="1", NUM_CORES="99"))
    assert done.returncode == 0, done.stderr
    assert "holds cores 1 (local 0)" in done.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "PYTEST_NEURON_FAKE_DIR is not set"),
        ({"PYTEST_NEURON_FAKE_CORES": "0"}, "PYTEST_NEURON_FAKE_CORES='0' is not a positive integer"),
        ({"PYTEST_NEURON_FAKE_CORES": "many"}, "PYTEST_NEURON_FAKE_CORES='many' is not a positive integer"),
        ({"PYTEST_NEURON_FAKE_CORES_PER_DEVICE": "-2"}, "PYTEST_NEURON_FAKE_CORES_PER_DEVICE='-2' is not"),
        ({"PYTEST_NEURON_FAKE_LNC": "4"}, "PYTEST_NEURON_FAKE_LNC='4' must be 1 or 2"),
    ],
)
def test_a_misconfigured_fake_host_is_one_clear_line(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    if env:
        env = {"PYTEST_NEURON_FAKE_DIR": str(tmp_path), **env}
    with pytest.raises(FakeHostError, match=r"^[^\n]*$") as info:
        FakeHost.from_env(env)
    assert message in str(info.value)
    cli = hold_briefly({**env_for(FakeHost(tmp_path)), "PYTEST_NEURON_FAKE_DIR": "", **env})
    assert cli.returncode == 2
    assert message in cli.stderr


def test_fake_host_defaults_and_direct_validation(tmp_path: Path) -> None:
    default = FakeHost.from_env({"PYTEST_NEURON_FAKE_DIR": str(tmp_path)})
    assert (default.cores, default.cores_per_device, default.lnc, default.devices) == (32, 2, 1, 16)
    assert FakeHost.from_env(default.to_env()) == default
    with pytest.raises(FakeHostError, match=r"FakeHost\.cores must be a positive integer"):
        FakeHost(tmp_path, cores=0)
    with pytest.raises(FakeHostError, match=r"FakeHost\.lnc must be 1 or 2"):
        FakeHost(tmp_path, lnc=4)


def test_num_cores_picks_the_first_free_contiguous_run(host: FakeHost, holders: Holders) -> None:
    holders.start(env_for(host, VISIBLE_CORES="1"))
    assert "holds cores 0 (local 0)" in hold_briefly(env_for(host, NUM_CORES="1")).stdout
    assert "holds cores 2-3 (local 0-1)" in hold_briefly(env_for(host, NUM_CORES="2")).stdout
    too_long = hold_briefly(env_for(host, NUM_CORES="7"))  # 7 cores are free, but not in one run
    assert (too_long.returncode, too_long.stderr) == (1, f"{BUSY}7 Available:7\n")
    everything = hold_briefly(env_for(host, NUM_CORES="0"))  # 0 means all cores of the host
    assert (everything.returncode, everything.stderr) == (1, f"{BUSY}nc0-nc7 Available:7\n")


def test_sigkill_frees_the_cores_at_once_and_the_next_holder_reaps(host: FakeHost, holders: Holders) -> None:
    victim, _ = holders.start(env_for(host, VISIBLE_CORES="2-3"))
    (start,) = read_log(host.fake_dir)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert free_cores(host) == tuple(range(8))
    assert summarize_log(host.fake_dir).open == 1

    assert hold_briefly(env_for(host, VISIBLE_CORES="3")).returncode == 0
    events = read_log(host.fake_dir)
    assert [(e["event"], e.get("reaped")) for e in events] == [
        ("start", None),
        ("end", True),
        ("start", None),
        ("end", None),
    ]
    assert events[1]["id"] == start["id"]
    assert check_log(host.fake_dir) == []
    summary = summarize_log(host.fake_dir)
    assert (summary.reservations, summary.open, summary.reaped) == (2, 0, 1)


def test_a_holder_leaving_with_os_exit_is_reaped_once(host: FakeHost) -> None:
    code = """if True:
        import os
        from pytest_neuron.testing import init_runtime
        init_runtime()
        os._exit(0)
    """
    done = subprocess.run(
        [sys.executable, "-c", code], env=env_for(host, VISIBLE_CORES="0-1"), timeout=30, check=False
    )
    assert done.returncode == 0
    for core in ("0", "1"):  # both take a core of the dead reservation; only the first reaps it
        assert hold_briefly(env_for(host, VISIBLE_CORES=core)).returncode == 0
    reaped = [e for e in read_log(host.fake_dir) if e.get("reaped")]
    assert len(reaped) == 1
    assert check_log(host.fake_dir) == []


def test_sigterm_ends_the_hold_cleanly(host: FakeHost, holders: Holders) -> None:
    holder, _ = holders.start(env_for(host, VISIBLE_CORES="0"))
    holder.terminate()
    assert holder.wait(timeout=10) == 0
    assert [(e["event"], e.get("reaped")) for e in read_log(host.fake_dir)] == [
        ("start", None),
        ("end", None),
    ]


def write_log(path: Path, events: list[dict[str, object]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for event in events:
        append_event(path / "reservations.log", event)
    return path


def test_the_checker_finds_overlaps_in_a_bad_log(tmp_path: Path) -> None:
    fake_dir = write_log(
        tmp_path,
        [
            {"event": "start", "id": "a", "pid": 10, "cores": [3, 4], "t": 1.0},
            {"event": "start", "id": "b", "pid": 11, "cores": [4], "t": 4.0},
            {"event": "end", "id": "a", "t": 5.0},
            {"event": "end", "id": "b", "t": 6.0},
            {"event": "start", "id": "c", "pid": 12, "cores": [0], "t": 10.0},  # never ended
            {"event": "start", "id": "d", "pid": 13, "cores": [0], "t": 20.0},
            {"event": "end", "id": "d", "t": 21.0},
        ],
    )
    inf = float("inf")
    assert check_log(fake_dir) == [
        Overlap(0, "c", 12, 10.0, inf, "d", 13, 20.0, 21.0),
        Overlap(4, "a", 10, 1.0, 5.0, "b", 11, 4.0, 6.0),
    ]
    done = run_cli(dict(os.environ), "check", str(fake_dir))
    assert done.returncode == 1
    assert done.stdout.splitlines()[1].startswith("core 4: reservation a (pid 10, ")


def test_the_checker_passes_a_good_log(tmp_path: Path) -> None:
    fake_dir = write_log(
        tmp_path,
        [
            {"event": "start", "id": "a", "pid": 10, "cores": [3, 4], "t": 1.0},
            {"event": "end", "id": "a", "t": 5.0},
            {"event": "start", "id": "b", "pid": 11, "cores": [4], "t": 5.0},  # starts as a ends
            {"event": "end", "id": "b", "t": 6.0},
            {"event": "start", "id": "c", "pid": 12, "cores": [0], "t": 10.0},
            {"event": "end", "id": "c", "t": 19.5, "reaped": True},
            {"event": "start", "id": "d", "pid": 13, "cores": [0], "t": 20.0},
            {"event": "end", "id": "d", "t": 21.0},
        ],
    )
    assert check_log(fake_dir) == []
    summary = summarize_log(fake_dir)
    assert (summary.reservations, summary.max_cores_held, summary.open, summary.reaped) == (4, 2, 0, 1)
    env = {**os.environ, "PYTEST_NEURON_FAKE_DIR": str(fake_dir)}
    done = run_cli(env, "check")
    assert (done.returncode, done.stdout) == (0, "no overlap in 4 reservations\n")


def test_the_checker_rejects_a_malformed_log(tmp_path: Path) -> None:
    (tmp_path / "reservations.log").write_text('{"event": "start"\n', encoding="utf-8")
    with pytest.raises(LogFormatError, match=r"reservations\.log:1: not a JSON object"):
        check_log(tmp_path)
    assert run_cli(dict(os.environ), "check", str(tmp_path)).returncode == 2
    assert run_cli(dict(os.environ), "check", str(tmp_path / "missing")).returncode == 2


def test_lnc2_logical_cores_lock_physical_cores(tmp_path: Path, holders: Holders) -> None:
    lnc2 = FakeHost(tmp_path, cores=4, cores_per_device=2, lnc=2)
    lnc1 = FakeHost(tmp_path, cores=8, cores_per_device=4, lnc=1)
    _, line = holders.start(env_for(lnc2, VISIBLE_CORES="1"))
    assert line.endswith("holds cores 1 (local 0)")
    assert read_log(tmp_path)[0]["cores"] == [2, 3]
    for physical in ("2", "3"):
        busy = hold_briefly(env_for(lnc1, VISIBLE_CORES=physical))
        assert (busy.returncode, busy.stderr) == (1, f"{BUSY}nc{physical}-nc{physical} Available:6\n")
    assert hold_briefly(env_for(lnc1, VISIBLE_CORES="1")).returncode == 0
    assert hold_briefly(env_for(lnc1, VISIBLE_CORES="4")).returncode == 0
    assert free_cores(lnc2) == (0, 2, 3)
    assert check_log(tmp_path) == []


def test_the_device_file_is_visible_in_proc_fd(host: FakeHost, holders: Holders) -> None:
    code = """if True:
        import json, os, sys
        from pytest_neuron.testing import FakeHost, init_runtime, open_devices
        prefix = str(FakeHost.from_env().dev_dir / "neuron")
        def links():
            found = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    found.append(os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    pass
            return sorted(t for t in found if t.startswith(prefix))
        before = links()
        init_runtime(open_device=sys.argv[1] == "open")
        print(json.dumps([before, links(), open_devices()]))
    """
    env = env_for(host, VISIBLE_CORES="3-4")
    for mode, devices in (("open", [1, 2]), ("closed", [])):
        done = subprocess.run(
            [sys.executable, "-c", code, mode], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        before, after, found = json.loads(done.stdout)
        assert before == []
        assert after == [str(host.dev_dir / f"neuron{d}") for d in devices]
        assert found == devices
    holder, _ = holders.start(env_for(host, VISIBLE_CORES="0"))
    assert open_devices(host, holder.pid) == (0,)
    assert sorted(p.name for p in host.dev_dir.iterdir()) == [f"neuron{d}" for d in range(4)]


def test_a_forked_child_neither_owns_nor_ends_the_parents_reservation(host: FakeHost) -> None:
    code = """if True:
        import json, os, sys
        from pytest_neuron.testing import RuntimeBusyError, init_runtime, open_devices, read_log
        handle = init_runtime()
        child = os.fork()
        if child == 0:
            try:
                init_runtime()
            except RuntimeBusyError:
                sys.exit(0 if open_devices() == () else 3)
            sys.exit(4)
        _, status = os.waitpid(child, 0)
        ends = [e for e in read_log(handle.host.fake_dir) if e["event"] == "end"]
        print(json.dumps([os.waitstatus_to_exitcode(status), len(ends)]))
    """
    assert run_script(code, env_for(host, VISIBLE_CORES="0")) == [0, 0]
    assert [e["event"] for e in read_log(host.fake_dir)] == ["start", "end"]


def test_racing_processes_never_share_a_core(host: FakeHost) -> None:
    env = env_for(host, NUM_CORES="3")
    procs = [
        subprocess.Popen(
            [*CLI, "run", "--seconds", "0.3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(8)
    ]
    results = [(proc.wait(timeout=30), *proc.communicate(timeout=10)) for proc in procs]
    assert {code for code, _, _ in results} <= {0, 1}
    assert all(BUSY.encode() in err for code, _, err in results if code == 1)
    granted = sum(1 for code, _, _ in results if code == 0)
    assert granted >= 2
    assert check_log(host.fake_dir) == []
    summary = summarize_log(host.fake_dir)
    assert (summary.reservations, summary.open) == (granted, 0)
    assert summary.max_cores_held <= 6


def test_cores_env_only_refuses_to_take_the_whole_host(host: FakeHost) -> None:
    refused = run_cli(env_for(host), "run", "--seconds", "0", "--cores-env-only")
    assert refused.returncode == 1
    assert "--cores-env-only: neither NEURON_RT_VISIBLE_CORES nor NEURON_RT_NUM_CORES" in refused.stderr
    assert run_cli(env_for(host, NUM_CORES="2"), "run", "--seconds", "0", "--cores-env-only").returncode == 0
