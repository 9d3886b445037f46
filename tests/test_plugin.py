"""The plugin inside pytest: options, ini, precedence, markers, header, per-test variables, the fixture.

In-process ``pytester.runpytest`` only where nothing is leased and os.environ is not changed (option
parsing, --help, --markers, usage errors, a run without a pool); ``runpytest_subprocess`` wherever the
plugin leases cores or exports variables.  Runs with xdist are in tests/test_xdist.py.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, MARKED_FIXTURE_PLAIN, assert_outcomes

import pytest_neuron
from pytest_neuron.core.settings import RUN_SETTINGS, TEST_SETTINGS
from pytest_neuron.core.topology import identity_topology
from pytest_neuron.locks.lease import LeaseManager

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("neuron_env")

TIMEOUT = 60.0
RUNTIME_VARS = (
    "NEURON_RT_LOG_LEVEL",
    "NEURON_RT_LOG_LOCATION",
    "NEURON_RT_EXEC_TIMEOUT",
    "NEURON_RT_VALIDATE_HASH",
)


def run(pytester: pytest.Pytester, *args: str | os.PathLike[str]) -> pytest.RunResult:
    """pytest in a subprocess, as a user starts it."""
    return pytester.runpytest_subprocess(*BASE_ARGS, *args, timeout=TIMEOUT)


def run_inprocess(pytester: pytest.Pytester, *args: str | os.PathLike[str]) -> pytest.RunResult:
    """pytest in this process: only for runs that neither lease nor export anything."""

    def environ() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # pytest's own

    before = environ()
    result = pytester.runpytest_inprocess(*BASE_ARGS, *args)
    assert environ() == before
    return result


def usage_error_line(result: pytest.RunResult) -> str:
    """The one line a usage error prints, after checking the exit code and that no traceback came."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.outlines + result.errlines
    text = "\n".join(result.outlines + result.errlines)
    assert "Traceback" not in text, text
    assert "INTERNALERROR" not in text, text
    lines = [line for line in result.errlines if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# -- options, ini keys, markers ----------------------------------------------------------------
def test_help_shows_the_neuron_group_and_ini_keys(pytester: pytest.Pytester) -> None:
    result = run_inprocess(pytester, "--help")
    assert result.ret == 0
    text = result.stdout.str()
    assert "NeuronCores for parallel runs (pytest-neuron):" in text
    options = ["--neuron-cores", "--no-neuron-validate-hash"]
    options += [spec.option for spec in (*RUN_SETTINGS, *TEST_SETTINGS)]
    for option in options:
        assert f"  {option}" in text, option
    group = text[text.index("NeuronCores for parallel runs") :]
    group = group[: group.index("\n\n")]
    assert all(option in group for option in options), group
    for ini in ["neuron_cores", *(spec.ini for spec in (*RUN_SETTINGS, *TEST_SETTINGS))]:
        kind = "bool" if ini in ("neuron_require", "neuron_validate_hash") else "string"
        assert f"  {ini} ({kind}):" in text, ini
    # choices as the placeholder, and every default written one way
    assert "--neuron-scope={worker,test}" in group
    assert "--neuron-order={biggest-first,durations,collection}" in group
    assert "--neuron-cores-per-worker=N" in group
    assert "--neuron-trace=PATH" in group
    flat = " ".join(group.split())
    for spec in (*RUN_SETTINGS, *TEST_SETTINGS):
        assert flat.count(f"[env {spec.env}] (default: ") == 1, spec.option
    assert "(default)" not in flat
    assert ", default" not in flat


def test_markers_documents_neuron(pytester: pytest.Pytester) -> None:
    result = run_inprocess(pytester, "--markers")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.neuron(cores=1, *, log_level=None, log_location=None, exec_timeout=None, "
            "validate_hash=None, lnc=None): run this test with `cores` NeuronCores of its own*"
        ]
    )


def test_strict_markers_accepts_neuron(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.neuron
        def test_bare(): pass

        @pytest.mark.neuron(2, log_level="INFO")
        def test_args(): pass

        def test_plain(): pass
        """
    )
    result = run_inprocess(pytester, "--strict-markers", "-W", "error")
    assert_outcomes(result, passed=1, skipped=2)


@pytest.mark.parametrize("value", ["", "7-4", "-1", "abc", "0,,1", "1,1"])
def test_a_bad_pool_is_a_usage_error(pytester: pytest.Pytester, lock_dir: Path, value: str) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = run_inprocess(pytester, f"--neuron-cores={value}", f"--neuron-lock-dir={lock_dir}")
    line = usage_error_line(result)
    assert line.startswith("ERROR: invalid core set ")
    assert f"{value!r} from --neuron-cores" in line
    assert "expected an index '4', a range '4-7', or a comma list such as '0-3,8'" in line
    assert not lock_dir.exists()


def test_a_bad_pool_is_a_usage_error_under_xdist_too(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makepyfile("def test_a(): pass")
    line = usage_error_line(run(pytester, "-n", "2", "--neuron-cores=7-4", f"--neuron-lock-dir={lock_dir}"))
    assert "'7-4' from --neuron-cores" in line


@pytest.mark.parametrize(
    ("ini", "env", "args", "message"),
    [
        (
            "neuron_scope = sideways",
            {},
            [],
            "invalid value 'sideways' from ini neuron_scope: expected worker or test",
        ),
        (
            "",
            {"PYTEST_NEURON_WAIT_TIMEOUT": "-1"},
            [],
            "invalid value '-1' from environment variable PYTEST_NEURON_WAIT_TIMEOUT: expected a number",
        ),
        ("", {}, ["--neuron-cores-per-worker=0"], "invalid value '0' from --neuron-cores-per-worker"),
        (
            "neuron_log_level = VERBOSE",
            {},
            [],
            "invalid value 'VERBOSE' from ini neuron_log_level: expected one of",
        ),
        (
            "",
            {"NEURON_RT_EXEC_TIMEOUT": "1.5"},
            [],
            "from environment variable NEURON_RT_EXEC_TIMEOUT: expected a whole",
        ),
        ("", {}, ["--neuron-exec-timeout=-5"], "invalid value '-5' from --neuron-exec-timeout"),
        ("neuron_log_location = file", {}, [], "invalid value 'file' from ini neuron_log_location"),
        ("neuron_cores = 3-1", {}, [], "invalid core set '3-1' from ini neuron_cores"),
        # a bad ini value is never read when the command line answers
        (
            "neuron_scope = sideways",
            {},
            ["--neuron-scope=test", "--neuron-log-level=LOUD"],
            "from --neuron-log-level",
        ),
    ],
)
def test_a_bad_setting_names_its_source(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    *,
    ini: str,
    env: dict[str, str],
    args: list[str],
    message: str,
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_a(): pass")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pool = [] if "neuron_cores" in ini else ["--neuron-cores=0-3"]
    assert message in usage_error_line(run_inprocess(pytester, *pool, *args))


@pytest.mark.parametrize(
    ("ini", "env"),
    [
        ("neuron_scope = sideways", {}),
        ("neuron_log_level = VERBOSE", {}),
        ("", {"PYTEST_NEURON_WAIT_TIMEOUT": "-1"}),
        ("", {"NEURON_RT_EXEC_TIMEOUT": "1.5", "NEURON_RT_LOG_LEVEL": "LOUD"}),
    ],
)
def test_without_a_pool_environment_and_ini_values_do_not_matter(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *, ini: str, env: dict[str, str]
) -> None:
    # the same outcome as with -p no:neuron: the plugin has nothing to do on this machine
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_a(): pass")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run_inprocess(pytester)
    result.assert_outcomes(passed=1)


# -- precedence, the header and the summary -----------------------------------------------------
INI = """
[pytest]
neuron_cores = 0-3
neuron_scope = test
neuron_log_level = INFO
neuron_lock_dir = {ini_lock_dir}
"""

PRECEDENCE_TEST = """
import os
import pytest

@pytest.mark.neuron(1)
def test_sees():
    visible = os.environ["NEURON_RT_VISIBLE_CORES"]
    assert len(visible.split("-")) == {parts}, visible
    assert os.environ.get("NEURON_RT_LOG_LEVEL") == {level!r}
"""


@pytest.mark.parametrize(
    ("env", "args", "pool", "scope", "level", "visible_parts"),
    [
        # ini alone: test scope leases the one core the marker asks for
        ({}, [], "0-3 from ini neuron_cores=0-3", "test", "INFO", 1),
        # the command line beats ini (the whole pool 0-1 in worker scope: "0-1" has two parts)
        (
            {},
            ["--neuron-cores=0-1", "--neuron-scope=worker", "--neuron-log-level=debug"],
            "0-1 from --neuron-cores=0-1",
            "worker",
            "DEBUG",
            2,
        ),
        # the environment beats ini
        (
            {"PYTEST_NEURON_SCOPE": "worker", "NEURON_RT_LOG_LEVEL": "WARN"},
            [],
            "0-3 from ini",
            "worker",
            "WARN",
            2,
        ),
        # the command line beats the environment
        (
            {"PYTEST_NEURON_SCOPE": "worker", "NEURON_RT_LOG_LEVEL": "WARN"},
            ["--neuron-scope=test", "--neuron-log-level=TRACE"],
            "0-3 from ini",
            "test",
            "TRACE",
            1,
        ),
    ],
)
def test_precedence_of_ini_environment_and_command_line(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    env: dict[str, str],
    args: list[str],
    pool: str,
    scope: str,
    level: str,
    visible_parts: int,
) -> None:
    ini_lock_dir = tmp_path / "ini-locks"
    pytester.makeini(INI.format(ini_lock_dir=ini_lock_dir))
    pytester.makepyfile(PRECEDENCE_TEST.format(parts=visible_parts, level=level))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run(pytester, "-v", *args)
    assert_outcomes(result, passed=1)
    result.stdout.fnmatch_lines(
        [
            f"neuron: pool {pool}*; scope {scope}*",
            f"neuron: lock directory {ini_lock_dir} (ini neuron_lock_dir)",
        ]
    )
    if any(arg.startswith("--neuron-scope") for arg in args):
        source = "--neuron-scope"
    elif "PYTEST_NEURON_SCOPE" in env:
        source = "environment variable PYTEST_NEURON_SCOPE"
    else:
        source = "ini neuron_scope"
    result.stdout.fnmatch_lines([f"neuron: pool {pool}*; scope {scope} (from {source})"])
    # the runtime settings are listed too, and the scope and lock directory are not repeated
    result.stdout.fnmatch_lines([f"neuron: log_level {level} (from *)"])
    assert not [line for line in result.outlines if line.startswith(("neuron: scope", "neuron: lock_dir"))]
    assert ini_lock_dir.is_dir()


@pytest.mark.parametrize(
    ("env", "args", "header"),
    [
        (
            {},
            ["--neuron-cores=0-3", "--neuron-lock-dir={lock_dir}"],
            [
                "neuron: pool 0-3 from --neuron-cores=0-3; scope worker",
                "neuron: lock directory {lock_dir} (--neuron-lock-dir)",
            ],
        ),
        (
            {"NEURON_RT_VISIBLE_CORES": "2-5", "PYTEST_NEURON_LOCK_DIR": "{lock_dir}"},
            ["--neuron-scope=test"],
            [
                "neuron: pool 2-5 from NEURON_RT_VISIBLE_CORES=2-5; scope test",
                "neuron: lock directory {lock_dir} (environment variable PYTEST_NEURON_LOCK_DIR)",
            ],
        ),
    ],
)
def test_header_names_pool_source_scope_and_lock_dir(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    lock_dir: Path,
    *,
    env: dict[str, str],
    args: list[str],
    header: list[str],
) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.neuron(2)\ndef test_a(): pass\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(lock_dir=lock_dir))
    result = run(pytester, *(arg.format(lock_dir=lock_dir) for arg in args))
    assert_outcomes(result, passed=1)
    result.stdout.fnmatch_lines([line.format(lock_dir=lock_dir) for line in header])
    summary = (
        "this process held cores 0-3"
        if "worker" in header[0]
        else "1 test leased cores; waited *s for cores over 1 lease request"
    )
    result.stdout.fnmatch_lines(["*= neuron =*", summary])


# -- no pool: inert ---------------------------------------------------------------------------
INERT_CONFTEST = """
import os
STARTED_WITH = dict(os.environ)
"""

INERT_TESTS = """
import os
import pytest
from conftest import STARTED_WITH

def untouched():
    now = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    assert now == {k: v for k, v in STARTED_WITH.items() if k != "PYTEST_CURRENT_TEST"}

def test_unmarked():
    untouched()

@pytest.mark.neuron(2)
def test_marked():
    raise AssertionError("must not run without cores")

def test_fixture(neuron_cores):
    raise AssertionError("must not run without cores")

def test_unmarked_after():
    untouched()
"""


@pytest.mark.parametrize("require", [False, True])
def test_inert_without_a_pool(pytester: pytest.Pytester, lock_dir: Path, require: bool) -> None:
    pytester.makeconftest(INERT_CONFTEST)
    pytester.makepyfile(INERT_TESTS)
    args = ["-rsE", f"--neuron-lock-dir={lock_dir}", *(["--neuron-require"] if require else [])]
    result = run_inprocess(pytester, *args)
    result.stdout.fnmatch_lines(
        ["neuron: no Neuron cores (no device found, no pool given); neuron tests will be skipped"]
    )
    reason = (
        "no Neuron cores: no device was found on this host and no pool was given (pass --neuron-cores=0-7*"
    )
    if require:
        assert_outcomes(result, passed=2, errors=2)
        result.stdout.fnmatch_lines([f"*{reason}; failing because of --neuron-require*"] * 2)
    else:
        assert_outcomes(result, passed=2, skipped=2)
        # skipped by a marker, so the report points at the tests, not at the plugin's code
        result.stdout.fnmatch_lines([f"SKIPPED [[]1[]] test_inert_without_a_pool.py*{reason}"] * 2)
        assert "pytest_neuron" not in result.stdout.str()
    assert not lock_dir.exists()
    assert "= neuron =" not in result.stdout.str()


def test_require_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lock_dir: Path
) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.neuron\ndef test_a(): pass\n")
    monkeypatch.setenv("PYTEST_NEURON_REQUIRE", "yes")
    result = run_inprocess(pytester, f"--neuron-lock-dir={lock_dir}")
    assert_outcomes(result, errors=1)
    result.stdout.fnmatch_lines(
        ["*failing because of --neuron-require (environment variable PYTEST_NEURON_REQUIRE)"]
    )


# -- worker scope without xdist ----------------------------------------------------------------
EARLY_CONFTEST = """
import json, os
from pytest_neuron.testing import init_runtime

# The runtime reads NEURON_RT_VISIBLE_CORES once, when it starts: here, at conftest import.
RUNTIME = init_runtime()
with open({record!r}, "w") as f:
    json.dump({{"conftest": os.environ.get("NEURON_RT_VISIBLE_CORES"), "runtime": list(RUNTIME.cores)}}, f)
"""

EARLY_TESTS = """
import os
from conftest import RUNTIME

AT_IMPORT = os.environ.get("NEURON_RT_VISIBLE_CORES")

def test_slice(neuron_cores):
    assert AT_IMPORT == os.environ["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
    assert RUNTIME.cores == neuron_cores.cores
"""


@pytest.mark.parametrize(
    ("args", "cores"),
    [
        ([], "0-7"),
        (["-n", "0"], "0-7"),
        (["-p", "no:xdist"], "0-7"),
        (["--neuron-cores-per-worker=2"], "0-1"),
    ],
)
def test_worker_scope_without_xdist_leases_before_conftest_import(
    pytester: pytest.Pytester, lock_dir: Path, fake_host: Path, tmp_path: Path, *, args: list[str], cores: str
) -> None:
    record = tmp_path / "record.json"
    pytester.makeconftest(EARLY_CONFTEST.format(record=str(record)))
    pytester.makepyfile(EARLY_TESTS)
    result = run(pytester, "--neuron-cores=0-7", f"--neuron-lock-dir={lock_dir}", *args)
    assert_outcomes(result, passed=1)
    seen = json.loads(record.read_text())
    assert seen["conftest"] == cores
    first, _, last = cores.partition("-")
    assert seen["runtime"] == list(range(int(first), int(last) + 1))
    result.stdout.fnmatch_lines([f"this process held cores {cores}"])


def test_early_cmdline_guard(pytester: pytest.Pytester, lock_dir: Path, tmp_path: Path) -> None:
    """bootstrap.early_cmdline reads pytest's Config.known_args_namespace in pytest_load_initial_conftests,
    before config.option is filled.  If pytest drops that attribute or stops parsing plugin options into it
    by then, the plugin would silently see no pool and lease nothing in time: fail here, loudly."""
    record = tmp_path / "guard.json"
    pytester.makepyfile(
        neuron_guard=f"""
        import json
        import pytest
        from pytest_neuron.plugins.bootstrap import early_cmdline

        @pytest.hookimpl(tryfirst=True)
        def pytest_load_initial_conftests(early_config):
            seen = {{"has_namespace": hasattr(early_config, "known_args_namespace")}}
            if seen["has_namespace"]:
                namespace = early_config.known_args_namespace
                names = ("neuron_cores", "neuron_scope", "neuron_cores_per_worker", "numprocesses")
                seen["namespace"] = {{k: getattr(namespace, k, "MISSING") for k in names}}
                read = early_cmdline(early_config)
                seen["early_cmdline"] = {{k: read(k) for k in ("neuron_cores", "neuron_scope")}}
            with open({str(record)!r}, "w") as f:
                json.dump(seen, f)
        """
    )
    pytester.makepyfile("def test_a(): pass")
    result = run(
        pytester,
        "-p",
        "neuron_guard",
        "--neuron-cores=0-3",
        "--neuron-scope=test",
        "--neuron-cores-per-worker=2",
        "-n",
        "0",
        f"--neuron-lock-dir={lock_dir}",
    )
    assert_outcomes(result, passed=1)
    seen = json.loads(record.read_text())
    assert seen["has_namespace"], "pytest.Config.known_args_namespace is gone: fix bootstrap.early_cmdline"
    assert seen["namespace"] == {
        "neuron_cores": "0-3",
        "neuron_scope": "test",
        "neuron_cores_per_worker": "2",
        "numprocesses": 0,
    }, "known_args_namespace no longer carries plugin options at pytest_load_initial_conftests"
    assert seen["early_cmdline"] == {"neuron_cores": "0-3", "neuron_scope": "test"}


# -- per-test runtime variables ----------------------------------------------------------------
RUNTIME_VAR_TESTS = """
import os
import pytest

VARS = {names!r}

def seen():
    return {{name: os.environ.get(name) for name in VARS}}

def test_1_defaults():
    assert seen() == {defaults!r}

@pytest.mark.neuron(1, log_level="trace", log_location="console", exec_timeout=5, validate_hash=True)
def test_2_marker():
    assert seen() == {{
        "NEURON_RT_LOG_LEVEL": "TRACE",
        "NEURON_RT_LOG_LOCATION": "console",
        "NEURON_RT_EXEC_TIMEOUT": "5",
        "NEURON_RT_VALIDATE_HASH": "true",
    }}

def test_3_restored():
    assert seen() == {defaults!r}

@pytest.mark.neuron(validate_hash=False)
def test_4_marker_false(neuron_cores):
    assert os.environ["NEURON_RT_VALIDATE_HASH"] == neuron_cores.env["NEURON_RT_VALIDATE_HASH"] == "false"

def test_5_restored():
    assert seen() == {defaults!r}
"""


@pytest.mark.parametrize("scope", ["worker", "test"])
@pytest.mark.parametrize(
    ("args", "hash_default"),
    [([], None), (["--no-neuron-validate-hash"], "false"), (["--neuron-validate-hash"], "true")],
)
def test_runtime_variables_are_set_per_test_and_restored_exactly(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    lock_dir: Path,
    *,
    scope: str,
    args: list[str],
    hash_default: str | None,
) -> None:
    # log level from the environment, location from ini, exec timeout from the command line
    monkeypatch.setenv("NEURON_RT_LOG_LEVEL", "WARN")
    pytester.makeini("[pytest]\nneuron_log_location = syslog\nneuron_log_level = ERROR\n")
    defaults = {
        "NEURON_RT_LOG_LEVEL": "WARN",
        "NEURON_RT_LOG_LOCATION": "syslog",
        "NEURON_RT_EXEC_TIMEOUT": "30",
        "NEURON_RT_VALIDATE_HASH": hash_default,
    }
    pytester.makepyfile(RUNTIME_VAR_TESTS.format(names=RUNTIME_VARS, defaults=defaults))
    result = run(
        pytester,
        "-p",
        "no:randomly",
        "--neuron-cores=0-3",
        f"--neuron-scope={scope}",
        "--neuron-exec-timeout=30",
        f"--neuron-lock-dir={lock_dir}",
        *args,
    )
    assert_outcomes(result, passed=5)


# -- core counts, marker errors, the fixture ----------------------------------------------------
def test_a_test_needing_more_cores_than_its_worker_fails_with_both_remedies(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.neuron(4)
        def test_four(): pass

        @pytest.mark.neuron(2)
        def test_two(): pass

        def test_plain(): pass
        """
    )
    result = run(
        pytester, "--neuron-cores=0-7", "--neuron-cores-per-worker=2", f"--neuron-lock-dir={lock_dir}"
    )
    assert_outcomes(result, passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_four*",
            "*::test_four needs 4 cores but its worker has 2 (0-1); give workers more with "
            "--neuron-cores-per-worker=4, or let each test lease its own with --neuron-scope=test",
        ]
    )


BAD_MARKERS = {
    "zero": ("cores=0", "cores=0 must be at least 1"),
    "negative": ("-2", "cores=-2 must be at least 1"),
    "word": ("'two'", "cores='two' names a parameter, but this test is not parametrized"),
    "float": ("2.0", "cores=2.0 is not a whole number"),
    "bool": ("True", "cores=True is not a whole number"),
    "too_many": ("9", "cores=9 is more than the pool's 8 cores"),
    "keyword": ("2, core=2", "unknown keyword 'core'"),
    "level": ("log_level='VERBOSE'", "invalid value 'VERBOSE' from"),
    "negative_timeout": ("exec_timeout=-5", "invalid value -5 from @pytest.mark.neuron on"),
    "fraction_timeout": ("exec_timeout=1.5", "invalid value 1.5 from @pytest.mark.neuron on"),
    "both": ("2, cores=2", "cores given both positionally and as a keyword"),
}


@pytest.mark.parametrize("scope", ["worker", "test"])
def test_marker_errors_fail_that_test_only(pytester: pytest.Pytester, lock_dir: Path, scope: str) -> None:
    source = ["import pytest", ""]
    for name, (args, _) in BAD_MARKERS.items():
        source += [f"@pytest.mark.neuron({args})", f"def test_{name}(): pass", ""]
    source += ["@pytest.mark.neuron(8)", "def test_good(): pass", "", "def test_plain(): pass"]
    pytester.makepyfile(test_markers="\n".join(source))
    result = run(pytester, "--neuron-cores=0-7", f"--neuron-scope={scope}", f"--neuron-lock-dir={lock_dir}")
    assert_outcomes(result, passed=2, errors=len(BAD_MARKERS))
    lines = result.outlines
    for name, (_, message) in BAD_MARKERS.items():
        header = next(i for i, line in enumerate(lines) if f" ERROR at setup of test_{name} " in line)
        assert f"@pytest.mark.neuron on test_markers.py::test_{name}" in lines[header + 1]
        assert message in lines[header + 1]


FIXTURE_TESTS = """
import os
import subprocess
import sys
import pytest
from pytest_neuron import NeuronCores

def run_fake_runtime(env):
    out = subprocess.run(
        [sys.executable, "-m", "pytest_neuron.testing", "run", "--seconds", "0"],
        env={{**os.environ, **env}}, capture_output=True, text=True, check=True,
    )
    return out.stdout

@pytest.mark.neuron({cores}, log_level="INFO")
def test_fields(neuron_cores):
    assert isinstance(neuron_cores, NeuronCores)
    cores = neuron_cores.cores
    assert isinstance(cores, tuple) and len(cores) == {expected_len}
    assert list(cores) == list(range(cores[0], cores[0] + len(cores)))
    assert neuron_cores.visible_cores == (f"{{cores[0]}}-{{cores[-1]}}" if len(cores) > 1 else str(cores[0]))
    assert isinstance(neuron_cores.wait_seconds, float) and neuron_cores.wait_seconds >= 0
    env = neuron_cores.env
    assert env["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
    assert os.environ["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
    assert env["NEURON_RT_LOG_LEVEL"] == "INFO"
    assert env["NEURON_RT_ROOT_COMM_ID"] == f"localhost:{{30000 + cores[0]}}"
    assert env["MASTER_PORT"] == "29555"  # set by the user: left alone
    assert env == {{k: v for k, v in os.environ.items()
                    if k.startswith("NEURON_")
                    or k in ("MASTER_PORT", "PYTEST_NEURON_LEASE", "PYTEST_NEURON_KEY")}}
    assert "holds cores " + neuron_cores.visible_cores in run_fake_runtime(env)
"""


@pytest.mark.parametrize(
    ("scope", "cores", "expected_len"), [("worker", 2, 8), ("test", 2, 2), ("test", 1, 1)]
)
def test_neuron_cores_fixture(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    lock_dir: Path,
    fake_host: Path,
    *,
    scope: str,
    cores: int,
    expected_len: int,
) -> None:
    monkeypatch.setenv("MASTER_PORT", "29555")
    pytester.makepyfile(FIXTURE_TESTS.format(cores=cores, expected_len=expected_len))
    result = run(
        pytester,
        "--neuron-cores=0-7",
        f"--neuron-scope={scope}",
        "--neuron-port-base=30000",
        f"--neuron-lock-dir={lock_dir}",
    )
    assert_outcomes(result, passed=1)


def test_neuron_cores_is_exported_and_typed() -> None:
    assert pytest_neuron.NeuronCores.__dataclass_fields__.keys() == {
        "cores",
        "visible_cores",
        "env",
        "wait_seconds",
        "physical",
        "lnc",
        "key",
        "port",
        "port_base",
        "derived",
    }
    assert "NeuronCores" in pytest_neuron.__all__


def test_an_unmarked_test_in_test_scope_leases_one_core(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makepyfile(
        """
        import os

        def test_unmarked(neuron_cores):
            assert os.environ["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores
            assert len(neuron_cores.cores) == 1

        def test_unmarked_without_fixture():
            assert os.environ["NEURON_RT_VISIBLE_CORES"] in [str(c) for c in range(8)]
        """
    )
    result = run(pytester, "--neuron-cores=0-7", "--neuron-scope=test", f"--neuron-lock-dir={lock_dir}")
    assert_outcomes(result, passed=2)
    result.stdout.fnmatch_lines(["2 tests leased cores; waited *s for cores over * lease requests"])


# -- a busy pool ---------------------------------------------------------------------------------
@pytest.fixture
def busy_pool(lock_dir: Path) -> Iterator[None]:
    """Cores 0-3 of ``lock_dir`` held by this process for the duration of the test."""
    manager = LeaseManager(lock_dir, identity_topology(frozenset(range(4)), "--neuron-cores"))
    lease = manager.acquire(4, timeout=5, worker="busy-pool-fixture")
    yield
    manager.release(lease)


@pytest.mark.usefixtures("busy_pool")
def test_a_run_without_cores_ends_once_after_one_wait(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makepyfile(MARKED_FIXTURE_PLAIN)
    result = run(pytester, "--neuron-cores=0-3", "--neuron-wait-timeout=3", f"--neuron-lock-dir={lock_dir}")
    # no test runs: a runtime started by any of them would see no NEURON_RT_VISIBLE_CORES
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert_no_tests_ran = "no tests ran" in result.stdout.str()
    assert assert_no_tests_ran, result.stdout.str()
    gave_up = "ERROR: pytest-neuron: this run gave up after *s waiting for 4 cores of pool 0-3"
    result.stderr.fnmatch_lines([f"{gave_up} *pid {os.getpid()} *busy-pool-fixture*"])
    assert sum("gave up after" in line for line in result.outlines + result.errlines) == 1
    # one wait (at pytest_load_initial_conftests), not a second one at pytest_configure
    assert sum(" waits for 4 cores " in line for line in result.outlines + result.errlines) <= 1


@pytest.mark.usefixtures("busy_pool")
def test_help_does_not_wait_for_a_busy_pool(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makeini("[pytest]\nneuron_cores = 0-3\nneuron_wait_timeout = 10\n")
    result = run(pytester, "--help", f"--neuron-lock-dir={lock_dir}")
    assert result.ret == 0
    assert result.duration < 8.0, result.duration


# -- JUnit XML and pytest-timeout ---------------------------------------------------------------
@pytest.mark.parametrize("scope", ["worker", "test"])
def test_junit_xml_has_cores_and_wait(
    pytester: pytest.Pytester, lock_dir: Path, tmp_path: Path, scope: str
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.neuron(2)
        def test_two(): pass

        def test_plain(): pass
        """
    )
    xml = tmp_path / "junit.xml"
    result = run(
        pytester,
        "--neuron-cores=0-3",
        f"--neuron-scope={scope}",
        f"--neuron-lock-dir={lock_dir}",
        f"--junitxml={xml}",
    )
    assert_outcomes(result, passed=2)
    cases = {str(case.get("name")): case for case in ET.parse(xml).iter("testcase")}
    assert set(cases) == {"test_two", "test_plain"}
    expected = {"test_two": {"0-1", "2-3"}, "test_plain": {"0", "1", "2", "3"}}
    for name, case in cases.items():
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert set(props) == {"neuron_cores", "neuron_wait_seconds"}, props
        assert float(str(props["neuron_wait_seconds"])) >= 0
        assert props["neuron_cores"] in ({"0-3"} if scope == "worker" else expected[name]), props


@pytest.mark.parametrize(
    ("args", "marker", "warned"),
    [
        # test_a has --timeout (if any), test_b has @pytest.mark.timeout(5)
        (["--timeout=10"], "exec_timeout=30", [("test_a", 10, 30), ("test_b", 5, 30)]),
        (["--timeout=30"], "exec_timeout=30", [("test_a", 30, 30), ("test_b", 5, 30)]),
        (["--timeout=31"], "exec_timeout=30", [("test_b", 5, 30)]),
        (["--timeout=0"], "exec_timeout=30", [("test_b", 5, 30)]),
        ([], "exec_timeout=30", [("test_b", 5, 30)]),
        (["--neuron-exec-timeout=20", "--timeout=20"], "", [("test_a", 20, 20), ("test_b", 5, 20)]),
        (["--neuron-exec-timeout=4"], "", []),
        (["--timeout=10"], "", []),
        # the marker's 0 is what the test runs with, not the command line's 20
        (["--neuron-exec-timeout=20", "--timeout=10"], "exec_timeout=0", []),
    ],
)
def test_warns_when_pytest_timeout_fires_before_the_runtime(
    pytester: pytest.Pytester,
    lock_dir: Path,
    args: list[str],
    marker: str,
    warned: list[tuple[str, int, int]],
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.neuron({marker})
        def test_a(): pass

        @pytest.mark.neuron({marker})
        @pytest.mark.timeout(5)
        def test_b(): pass
        """
    )
    result = run(pytester, "--neuron-cores=0-3", f"--neuron-lock-dir={lock_dir}", *args)
    assert_outcomes(result, passed=2, warnings=len(warned))
    text = result.stdout.str()
    assert text.count("NeuronWarning") == len(warned)
    for test, pytest_timeout, exec_timeout in warned:
        assert (
            f"test_warns_when_pytest_timeout_fires_before_the_runtime.py::{test}: pytest-timeout "
            f"({pytest_timeout}s) fires at or before NEURON_RT_EXEC_TIMEOUT ({exec_timeout}s)"
        ) in text, text


# -- the neuron section of the terminal summary ----------------------------------------------------
def test_neuron_section_layout_and_quiet_levels(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.neuron(1)\ndef test_a(): pass\n")
    common = ("--neuron-cores=0-3", f"--neuron-lock-dir={lock_dir}")
    lines = run(pytester, *common).outlines
    rule = next(i for i, line in enumerate(lines) if re.fullmatch(r"=+ neuron =+", line))
    assert lines[rule + 1] == "this process held cores 0-3"  # no blank line under the rule
    quiet = run(pytester, *common, "-q").outlines  # -q: only what went wrong (issue 16 item 3)
    assert not [line for line in quiet if "held cores" in line or re.fullmatch(r"=+ neuron =+", line)]
    quieter = run(pytester, *common, "-qq")
    assert quieter.ret == pytest.ExitCode.OK
    assert not [line for line in quieter.outlines if "neuron" in line or "held cores" in line]
