"""End to end, scenario 6 of issue 5: bad input gives one clean line, never a traceback.

Every case is a real ``pytest`` subprocess (with ``-n 2``: the controller must refuse before any
worker starts).  A usage error exits 4 and prints exactly one line, ``ERROR: ...``, that quotes the bad
value and names where it came from; no ``Traceback``, no ``INTERNALERROR``.  A bad marker fails only
its own test, with a one-line message naming the test and the value.

NEURON_RT_VISIBLE_CORES cases run on a simulated trn1.32xlarge (16 fake /dev/neuron* devices, 32 cores,
no neuron-ls), so the inherited set is checked against a host that really has cores 0-31.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import TYPE_CHECKING

import pytest
from conftest import assert_outcomes
from e2e_helpers import (
    POOL_ARG,
    Procs,
    procs_fixture,  # noqa: F401  (a fixture: pytest finds it imported)
    pytest_command,
    text_of,
)
from lease_helpers import other_user, shared_tmpdir
from topology_fixtures import fake_root

from pytest_neuron.core.topology import identity_topology
from pytest_neuron.locks.lease import LeaseManager

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("neuron_env")

ACCEPTED_FORMS = "expected an index '4', a range '4-7', or a comma list such as '0-3,8'"
SUITE = "def test_a():\n    pass\n"


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    directory = tmp_path / "suite"
    directory.mkdir()
    (directory / "test_a.py").write_text(SUITE)
    return directory


def run(procs: Procs, suite: Path, *args: str, env: dict[str, str] | None = None) -> pytest.RunResult:
    return procs.run(*args, cwd=suite, env=None if env is None else {**os.environ, **env}, timeout=60)


def usage_error(result: pytest.RunResult) -> str:
    """The one line of a usage error, after checking the exit code and that nothing else was said."""
    text = text_of(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "Traceback" not in text, text
    assert "INTERNALERROR" not in text, text
    assert "[gw" not in text, text  # refused before any worker started
    lines = [line for line in result.outlines + result.errlines if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("ERROR: "), text
    return lines[0]


# -- NEURON_RT_VISIBLE_CORES on a 32-core host ----------------------------------------------------
@pytest.fixture
def trn1_host(neuron_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A trn1.32xlarge for host detection: 16 devices x 2 cores (neuron_env: no neuron-ls)."""
    root = fake_root(tmp_path / "trn1", devices=range(16), product_name="trn1.32xlarge")
    monkeypatch.setenv("PYTEST_NEURON_HOST_ROOT", str(root))
    return root


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("abc", "'abc' is not an index or a range"),
        ("3-1", "range '3-1' is reversed"),
        ("0-", "'0-' is not an index or a range"),
        ("-1", "negative index '-1'"),
        ("0,,1", "it has an empty part"),
        ("1,1", "'1' repeats core 1"),
        ("64", "core 64 is outside the cores of /dev/neuron* x 2 cores (trn1.32xlarge) (0-31)"),
    ],
)
def test_a_bad_inherited_visible_cores_is_one_line(
    procs: Procs, suite: Path, lock_dir: Path, trn1_host: Path, *, value: str, why: str
) -> None:
    result = run(
        procs, suite, "-n", "2", f"--neuron-lock-dir={lock_dir}", env={"NEURON_RT_VISIBLE_CORES": value}
    )
    line = usage_error(result)
    assert line.startswith(
        f"ERROR: invalid core set {value!r} from environment variable NEURON_RT_VISIBLE_CORES: {why}; "
        f"{ACCEPTED_FORMS}"
    ), line
    assert not lock_dir.exists()  # refused before anything was created


def test_the_simulated_host_has_32_cores(procs: Procs, suite: Path, lock_dir: Path, trn1_host: Path) -> None:
    """The control of the table above: on that host, a good value is accepted as given."""
    result = run(procs, suite, f"--neuron-lock-dir={lock_dir}", env={"NEURON_RT_VISIBLE_CORES": "0-31"})
    assert_outcomes(result, passed=1)
    result.stdout.fnmatch_lines(["neuron: pool 0-31 from NEURON_RT_VISIBLE_CORES=0-31 of *trn1.32xlarge*"])


# -- settings -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["--neuron-cores-per-worker=0"],
            {},
            "invalid value '0' from --neuron-cores-per-worker: expected a whole number >= 1",
            id="cores-per-worker-0",
        ),
        pytest.param(
            ["--neuron-cores-per-worker=33"],
            {},
            "invalid value '33' from --neuron-cores-per-worker: more than the 32 cores of the pool "
            "(--neuron-cores=0-31)",
            id="cores-per-worker-33",
        ),
        pytest.param(
            [],
            {"PYTEST_NEURON_CORES_PER_WORKER": "33"},
            "invalid value '33' from environment variable PYTEST_NEURON_CORES_PER_WORKER: more than "
            "the 32 cores of the pool",
            id="cores-per-worker-33-env",
        ),
        pytest.param(
            ["--neuron-log-level=VERBOSE"],
            {},
            "invalid value 'VERBOSE' from --neuron-log-level: expected one of ERROR, WARNING, WARN, INFO, "
            "DEBUG, TRACE, QUIET",
            id="log-level-VERBOSE",
        ),
        pytest.param(
            [],
            {"NEURON_RT_LOG_LEVEL": "VERBOSE"},
            "invalid value 'VERBOSE' from environment variable NEURON_RT_LOG_LEVEL: expected one of",
            id="log-level-VERBOSE-env",
        ),
        pytest.param(
            ["--neuron-exec-timeout=-5"],
            {},
            "invalid value '-5' from --neuron-exec-timeout: expected a whole number of seconds >= 0",
            id="exec-timeout--5",
        ),
        pytest.param(
            [],
            {"NEURON_RT_EXEC_TIMEOUT": "-5"},
            "invalid value '-5' from environment variable NEURON_RT_EXEC_TIMEOUT: expected a whole number",
            id="exec-timeout--5-env",
        ),
        pytest.param(
            ["--neuron-exec-timeout=1.5"],
            {},
            "invalid value '1.5' from --neuron-exec-timeout: expected a whole number of seconds >= 0",
            id="exec-timeout-1.5",
        ),
        pytest.param(
            [],
            {"NEURON_RT_EXEC_TIMEOUT": "1.5"},
            "invalid value '1.5' from environment variable NEURON_RT_EXEC_TIMEOUT: expected a whole number",
            id="exec-timeout-1.5-env",
        ),
        # issue 15 §4: what the whole-number settings reject, blank runtime values, relative lock dirs
        *[
            pytest.param(
                [f"--neuron-wait-timeout={raw}"],
                {},
                f"invalid value {raw!r} from --neuron-wait-timeout: expected a number of seconds >= 0",
                id=f"wait-timeout-{raw}",
            )
            for raw in ("１２", "٤", "1_0")
        ],
        pytest.param(
            [],
            {"NEURON_RT_LOG_LEVEL": " "},
            "environment variable NEURON_RT_LOG_LEVEL is set but blank (' '): give it a value or unset it",
            id="log-level-blank-env",
        ),
        pytest.param(
            [f"--neuron-exec-timeout={10**30}"],
            {},
            f"invalid value '{10**30}' from --neuron-exec-timeout: expected a whole number of seconds >= 0 "
            "(at most 2147483647)",
            id="exec-timeout-1e30",
        ),
        pytest.param(
            ["--neuron-lock-dir=locks"],
            {},
            "invalid value 'locks' from --neuron-lock-dir: expected an absolute directory path",
            id="lock-dir-relative",
        ),
    ],
)
def test_a_bad_setting_is_one_line(
    procs: Procs, suite: Path, lock_dir: Path, *, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run(procs, suite, "-n", "2", POOL_ARG, f"--neuron-lock-dir={lock_dir}", *args, env=env)
    line = usage_error(result)
    assert line.startswith(f"ERROR: {message}"), line


# -- markers --------------------------------------------------------------------------------------
BAD_MARKERS = {
    "zero": ("cores=0", "cores=0 must be at least 1"),
    "negative": ("-2", "cores=-2 must be at least 1"),
    "word": (
        '"two"',
        "cores='two' names a parameter, but this test is not parametrized; expected an int, "
        "or the name of one of its parametrize arguments",
    ),
    "too_many": ("33", "cores=33 is more than the pool's 32 cores"),
}
GOOD_MARKERS = {"one": "1", "sixteen": "16"}


@pytest.mark.parametrize("scope", ["worker", "test"])
def test_a_bad_marker_fails_only_its_test(procs: Procs, suite: Path, lock_dir: Path, scope: str) -> None:
    source = ["import pytest", ""]
    for name, (args, _) in {**BAD_MARKERS, **{k: (v, "") for k, v in GOOD_MARKERS.items()}}.items():
        source += [f"@pytest.mark.neuron({args})", f"def test_{name}(neuron_cores):", "    pass", ""]
    source += ["def test_plain():", "    pass", ""]
    (suite / "test_markers.py").write_text("\n".join(source))
    result = run(
        procs, suite, "-n", "2", POOL_ARG, f"--neuron-scope={scope}", f"--neuron-lock-dir={lock_dir}", "-rE"
    )
    text = text_of(result)
    assert "Traceback" not in text, text
    assert "INTERNALERROR" not in text, text
    assert result.ret == pytest.ExitCode.TESTS_FAILED, text
    assert_outcomes(result, passed=len(GOOD_MARKERS) + 2, errors=len(BAD_MARKERS))  # + test_plain, test_a
    lines = result.outlines
    for name, (_, message) in BAD_MARKERS.items():
        header = next(i for i, line in enumerate(lines) if f" ERROR at setup of test_{name} " in line)
        detail = [line for line in lines[header + 1 : header + 3] if not line.startswith("[gw")]
        assert detail[0] == f"@pytest.mark.neuron on test_markers.py::test_{name}: {message}", text


# -- the lock directory ---------------------------------------------------------------------------
def test_a_lock_directory_that_is_a_file(procs: Procs, suite: Path, tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("precious\n")
    line = usage_error(run(procs, suite, "-n", "2", POOL_ARG, f"--neuron-lock-dir={path}"))
    assert line == f"ERROR: lock directory {str(path)!r} from --neuron-lock-dir exists and is not a directory"
    assert path.read_text() == "precious\n"


@pytest.mark.parametrize("name", ["cores/core-0005.lock", "alloc.lock"])
def test_a_lock_directory_holding_a_symlinked_lock_file(
    procs: Procs, suite: Path, lock_dir: Path, tmp_path: Path, name: str
) -> None:
    target = tmp_path / "victim"
    target.write_text("precious\n")
    link = lock_dir / name
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    line = usage_error(run(procs, suite, "-n", "2", POOL_ARG, f"--neuron-lock-dir={lock_dir}"))
    assert line == (
        f"ERROR: lock file {str(link)!r} in the lock directory from --neuron-lock-dir is a symbolic link; "
        "refusing to use it (remove it, or choose another --neuron-lock-dir)"
    )
    assert target.read_text() == "precious\n"
    assert stat.S_IMODE(target.stat().st_mode) != 0o666  # not chmod-ed through the link either


def test_an_unwritable_lock_directory(procs: Procs, suite: Path, lock_dir: Path) -> None:
    """As root every directory is writable: the run then happens as ``nobody``."""
    if os.geteuid() != 0:
        lock_dir.mkdir(mode=0o555)
        try:
            result = run(procs, suite, "-n", "2", POOL_ARG, f"--neuron-lock-dir={lock_dir}")
        finally:
            lock_dir.chmod(0o755)
        uid = os.getuid()
    else:
        user, why = other_user("nobody")
        if user is None:
            pytest.skip(why)
        with shared_tmpdir() as shared:
            shutil.copy(suite / "test_a.py", shared / "test_a.py")
            (shared / "test_a.py").chmod(0o644)
            locks = shared / "locks"
            locks.mkdir(mode=0o755)  # root's, not writable by nobody
            scratch = shared / "scratch"
            scratch.mkdir()
            scratch.chmod(0o777)
            env = {
                **user.env,
                **{k: v for k, v in os.environ.items() if k.startswith("PYTEST_NEURON_")},
            }
            argv = pytest_command(
                "-n", "2", POOL_ARG, f"--neuron-lock-dir={locks}", f"--basetemp={scratch / 'basetemp'}"
            )
            argv[0] = user.python
            proc = procs.start(argv, cwd=shared, env=env, user=(user.uid, user.gid))
            result = procs.finish(proc, timeout=60)
            lock_dir = locks
            uid = user.uid
            assert sorted(p.name for p in locks.iterdir()) == []  # nothing was created in it
    line = usage_error(result)
    assert line == (
        f"ERROR: lock directory {str(lock_dir)!r} from --neuron-lock-dir is not writable by this user "
        f"(uid {uid})"
    )


# -- other files of the lock directory: planted links must neither be written through nor hang a run
@pytest.fixture
def all_cores_held(lock_dir: Path) -> Iterator[None]:
    """Every core of the pool held by this process (a busy host): the inner run must wait."""
    manager = LeaseManager(lock_dir, identity_topology(frozenset(range(32)), POOL_ARG))
    lease = manager.acquire(32, timeout=5, worker="bad-input: every core")
    yield
    manager.release(lease)


@pytest.mark.usefixtures("all_cores_held")
def test_a_symlinked_doorbell_is_never_written_through(
    procs: Procs, suite: Path, lock_dir: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = lock_dir / "waiters" / "00000000000000000001-00000001-000000.fifo"
    link.symlink_to(victim)
    result = run(procs, suite, POOL_ARG, f"--neuron-lock-dir={lock_dir}", "--neuron-wait-timeout=0.3")
    assert victim.read_text() == "precious\n"  # the bug: "!recious\n"
    text = text_of(result)
    assert "Traceback" not in text, text
    # refusing the link, as for lock files, or waiting for the busy pool and giving up once: both are fine
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    errors = [line for line in result.errlines if line.startswith("ERROR: ")]
    assert len(errors) == 1, text
    assert str(link) in errors[0] or "this run gave up after" in errors[0], errors


def test_a_holder_record_linked_to_a_fifo_does_not_hang_the_run(
    procs: Procs, suite: Path, lock_dir: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = lock_dir / "holders" / "0123456789abcdef.json"  # where a lease's record goes
    link.parent.mkdir(parents=True)
    link.symlink_to(fifo)
    proc = procs.start_pytest(POOL_ARG, f"--neuron-lock-dir={lock_dir}", "--neuron-wait-timeout=1", cwd=suite)
    result = procs.finish(proc, timeout=6)  # the bug: still blocked in open() of the FIFO; killed here
    text = text_of(result)
    assert "Traceback" not in text, text
    if result.ret == pytest.ExitCode.USAGE_ERROR:
        assert str(link) in usage_error(result)
    else:
        assert_outcomes(result, passed=1)  # core 0's lock is free: the record is not a holder


# -- impossible requests fail at once --------------------------------------------------------------
@pytest.mark.parametrize(
    ("pool", "marker", "env"),
    [
        ("--neuron-cores=0-3,8-11", "8", {}),
        ("--neuron-cores=4,6", "2", {}),
        (None, "2", {"NEURON_RT_VISIBLE_CORES": "4,6"}),
    ],
    ids=["gap", "two-apart", "inherited"],
)
def test_a_pool_without_a_window_of_the_size_fails_at_once(
    procs: Procs, suite: Path, lock_dir: Path, *, pool: str | None, marker: str, env: dict[str, str]
) -> None:
    (suite / "test_big.py").write_text(
        f"import pytest\n\n@pytest.mark.neuron({marker})\ndef test_big():\n    pass\n"
    )
    args = [pool] if pool else []
    result = run(procs, suite, *args, "--neuron-scope=test", f"--neuron-lock-dir={lock_dir}", env=env)
    text = text_of(result)
    assert "Traceback" not in text, text
    assert result.duration < 60, result.duration  # the bug: the whole 600 s bound
    assert_outcomes(result, passed=1, errors=1)
    assert f"no {marker} consecutive cores" in text, text
