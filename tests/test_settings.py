"""Pure tables: settings.resolve and every parser, the neuron marker, EnvPatch and lease_env."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from pytest_neuron.core.marker import KEYWORDS, MarkerError, Request, parse_marker
from pytest_neuron.core.plan import HANDOFF_ENV
from pytest_neuron.core.runtime_env import MASTER_PORT, ROOT_COMM_ID, VISIBLE, lease_env, settings_env
from pytest_neuron.core.settings import (
    CORES_PER_WORKER,
    EXEC_TIMEOUT,
    LOG_LEVEL,
    LOG_LEVELS,
    RUN_SETTINGS,
    RUNTIME_VARS,
    SCOPE,
    TEST_SETTINGS,
    VALIDATE_HASH,
    WAIT_TIMEOUT,
    SettingError,
    Spec,
    parse_bool,
    parse_exec_timeout,
    parse_lock_dir,
    parse_log_level,
    parse_log_location,
    parse_path,
    parse_port,
    parse_positive_int,
    parse_scope,
    parse_seconds,
    resolve,
)
from pytest_neuron.host.envpatch import EnvPatch

SRC = "the source"


# -- every parser: accepted values -------------------------------------------------------------
@pytest.mark.parametrize(
    ("parse", "raw", "expected"),
    [
        *[(parse_log_level, level, level) for level in LOG_LEVELS],
        (parse_log_level, "debug", "DEBUG"),
        (parse_log_level, " Warn ", "WARN"),
        (parse_log_location, "console", "console"),
        (parse_log_location, "SYSLOG", "syslog"),
        (parse_exec_timeout, "0", 0),
        (parse_exec_timeout, " 30 ", 30),
        (parse_exec_timeout, 45, 45),
        (parse_exec_timeout, 0, 0),
        (parse_bool, True, True),
        (parse_bool, False, False),
        *[(parse_bool, text, True) for text in ("1", "true", "TRUE", "yes", "on", " On ")],
        *[(parse_bool, text, False) for text in ("0", "false", "False", "no", "off")],
        (parse_bool, 1, True),
        (parse_bool, 0, False),
        (parse_scope, "worker", "worker"),
        (parse_scope, " TEST ", "test"),
        (parse_positive_int, "1", 1),
        (parse_positive_int, 4, 4),
        (parse_positive_int, " 16 ", 16),
        (parse_port, "1024", 1024),
        (parse_port, 64800, 64800),
        (parse_port, "61234", 61234),
        (parse_seconds, "0", 0.0),
        (parse_seconds, "2.5", 2.5),
        (parse_seconds, 600, 600.0),
        (parse_path, "/tmp/x", "/tmp/x"),
        (parse_path, "relative/dir", "relative/dir"),
    ],
)
def test_parser_accepts(parse: Any, raw: object, expected: object) -> None:
    value = parse(raw, SRC)
    assert value == expected
    assert type(value) is type(expected)


# -- every parser: rejected values, with the value, the source and the accepted forms -------
@pytest.mark.parametrize(
    ("parse", "raw", "accepted"),
    [
        (parse_log_level, "VERBOSE", "one of ERROR, WARNING, WARN, INFO, DEBUG, TRACE, QUIET"),
        (parse_log_level, "", "one of ERROR, WARNING"),
        (parse_log_location, "file", "console or syslog"),
        (parse_exec_timeout, "-5", "a whole number of seconds >= 0"),
        (parse_exec_timeout, -5, "a whole number of seconds >= 0"),
        (parse_exec_timeout, "1.5", "a whole number of seconds >= 0"),
        (parse_exec_timeout, 1.5, "a whole number of seconds >= 0"),
        (parse_exec_timeout, True, "a whole number of seconds >= 0"),
        (parse_exec_timeout, "", "a whole number of seconds >= 0"),
        (parse_exec_timeout, "ten", "a whole number of seconds >= 0"),
        (parse_bool, "maybe", "true or false"),
        (parse_bool, "", "true or false"),
        (parse_bool, 2, "true or false"),
        (parse_scope, "session", "worker or test"),
        (parse_scope, "", "worker or test"),
        (parse_positive_int, "0", "a whole number >= 1"),
        (parse_positive_int, "-2", "a whole number >= 1"),
        (parse_positive_int, "2.0", "a whole number >= 1"),
        (parse_positive_int, True, "a whole number >= 1"),
        (parse_positive_int, "two", "a whole number >= 1"),
        (parse_port, "1023", "a port number from 1024 to 64800"),
        (parse_port, "64801", "a port number from 1024 to 64800"),
        (parse_port, "http", "a port number from 1024 to 64800"),
        (parse_seconds, "-1", "a number of seconds >= 0"),
        (parse_seconds, "nan", "a number of seconds >= 0"),
        (parse_seconds, "inf", "a number of seconds >= 0"),
        (parse_seconds, "soon", "a number of seconds >= 0"),
        # issue 15: what the whole-number settings reject, and values too big to mean anything
        (parse_seconds, "１２", "a number of seconds >= 0"),
        (parse_seconds, "٤", "a number of seconds >= 0"),
        (parse_seconds, "1_0", "a number of seconds >= 0"),
        (parse_seconds, "1e3", "a number of seconds >= 0"),
        (parse_seconds, "1e30", "a number of seconds >= 0"),
        (parse_seconds, True, "a number of seconds >= 0"),
        (parse_exec_timeout, str(10**30), "(at most 2147483647)"),
        (parse_lock_dir, "locks", "an absolute directory path"),
        (parse_lock_dir, "./locks", "an absolute directory path"),
        (parse_lock_dir, "~nosuchuser__/locks", "an absolute directory path"),
        (parse_lock_dir, "", "an absolute directory path"),
        (parse_path, "", "a directory path"),
        (parse_path, "   ", "a directory path"),
    ],
)
def test_parser_rejects(parse: Any, raw: object, accepted: str) -> None:
    with pytest.raises(SettingError) as info:
        parse(raw, SRC)
    message = str(info.value)
    assert message.startswith(f"invalid value {raw!r} from {SRC}: expected ")
    assert accepted in message
    assert "\n" not in message


@pytest.mark.parametrize("parse", [parse_exec_timeout, parse_positive_int, parse_port])
def test_parser_rejects_non_ascii_digits(parse: Any) -> None:
    with pytest.raises(SettingError, match="'²' from"):
        parse("²", SRC)


# -- resolve: marker > command line > environment > ini > default ---------------------------
ENV_LEVEL = {"NEURON_RT_LOG_LEVEL": "warn"}


@pytest.mark.parametrize(
    ("marker", "cmdline", "env", "ini", "value", "source"),
    [
        ("trace", "debug", ENV_LEVEL, "info", "TRACE", "the neuron marker"),
        (None, "debug", ENV_LEVEL, "info", "DEBUG", "--neuron-log-level"),
        (None, None, ENV_LEVEL, "info", "WARN", "environment variable NEURON_RT_LOG_LEVEL"),
        (None, None, {}, "info", "INFO", "ini neuron_log_level"),
        (None, None, {}, None, None, "default"),
        # "not given" at each level: None, an empty ini value (a blank NEURON_RT_* value is an error)
        (None, None, {"OTHER": "x"}, "   ", None, "default"),
    ],
)
def test_resolve_precedence(
    *, marker: object, cmdline: object, env: dict[str, str], ini: str | None, value: object, source: str
) -> None:
    resolved = resolve(LOG_LEVEL, marker=marker, cmdline=cmdline, env=env, ini=ini)
    assert (resolved.value, resolved.source) == (value, source)


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_runtime_variable_is_an_error_not_passed_through(blank: str) -> None:
    # the runtime would read the blank value itself
    with pytest.raises(SettingError, match="environment variable NEURON_RT_LOG_LEVEL is set but blank"):
        resolve(LOG_LEVEL, env={"NEURON_RT_LOG_LEVEL": blank}, ini="error")
    assert resolve(WAIT_TIMEOUT, env={"PYTEST_NEURON_WAIT_TIMEOUT": blank}).source == "default"


def test_lock_dir_expands_home_and_normalises() -> None:
    assert parse_lock_dir("~/locks", SRC) == os.path.join(os.path.expanduser("~"), "locks")
    assert parse_lock_dir("/tmp//x/../locks/", SRC) == "/tmp/locks"


@pytest.mark.parametrize(
    ("spec", "env_value", "ini", "default"),
    [
        (SCOPE, "test", "worker", "worker"),
        (CORES_PER_WORKER, "2", "4", None),
        (WAIT_TIMEOUT, "1.5", "30", 600.0),
        (EXEC_TIMEOUT, "30", "60", None),
        (VALIDATE_HASH, "false", "true", None),
    ],
)
def test_resolve_each_source_of_each_spec(spec: Spec[Any], env_value: str, ini: str, default: object) -> None:
    assert spec.env is not None
    env = {spec.env: env_value}
    assert resolve(spec, env={}).value == default
    assert resolve(spec, env={}, ini=ini).value == spec.parse(ini, "x")
    assert resolve(spec, env=env, ini=ini).value == spec.parse(env_value, "x")
    assert resolve(spec, env=env, ini=ini, cmdline=ini).source == spec.option


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [
        ({"marker": "LOUD"}, "the neuron marker"),
        (
            {"marker": "LOUD", "marker_source": "@pytest.mark.neuron on t.py::x"},
            "@pytest.mark.neuron on t.py::x",
        ),
        ({"cmdline": "LOUD"}, "--neuron-log-level"),
        ({"env": {"NEURON_RT_LOG_LEVEL": "LOUD"}}, "environment variable NEURON_RT_LOG_LEVEL"),
        ({"ini": "LOUD"}, "ini neuron_log_level"),
    ],
)
def test_resolve_names_the_source_of_a_bad_value(kwargs: dict[str, Any], source: str) -> None:
    kwargs.setdefault("env", {})
    with pytest.raises(SettingError, match=re.escape(f"invalid value 'LOUD' from {source}: expected one of")):
        resolve(LOG_LEVEL, **kwargs)


def test_a_bad_value_lower_down_is_not_read_when_a_higher_source_answers() -> None:
    resolved = resolve(SCOPE, cmdline="test", env={"PYTEST_NEURON_SCOPE": "bogus"}, ini="bogus")
    assert (resolved.value, resolved.source) == ("test", "--neuron-scope")


def test_spec_names() -> None:
    names = {spec.name for spec in (*RUN_SETTINGS, *TEST_SETTINGS)}
    for spec in (*RUN_SETTINGS, *TEST_SETTINGS):
        assert spec.option == "--neuron-" + spec.name.replace("_", "-")
        assert spec.dest == spec.ini == "neuron_" + spec.name
    assert {"scope", "cores_per_worker", "lock_dir", "wait_timeout", "require"} <= names
    assert RUNTIME_VARS == {
        "log_level": "NEURON_RT_LOG_LEVEL",
        "log_location": "NEURON_RT_LOG_LOCATION",
        "exec_timeout": "NEURON_RT_EXEC_TIMEOUT",
        "lnc": "NEURON_LOGICAL_NC_CONFIG",
        "validate_hash": "NEURON_RT_VALIDATE_HASH",
    }


# -- the marker -----------------------------------------------------------------------------
NODE = "tests/test_x.py::test_y"
WHERE = f"@pytest.mark.neuron on {NODE}: "


@pytest.mark.parametrize(
    ("args", "kwargs", "cores", "settings"),
    [
        ((), {}, 1, {}),
        ((4,), {}, 4, {}),
        ((), {"cores": 32}, 32, {}),
        (
            (2,),
            {"log_level": "info", "log_location": "SYSLOG", "exec_timeout": 30, "validate_hash": False},
            2,
            {"log_level": "INFO", "log_location": "syslog", "exec_timeout": 30, "validate_hash": False},
        ),
        ((), {"exec_timeout": "0", "log_level": None}, 1, {"exec_timeout": 0}),
    ],
)
def test_marker_accepts(
    args: tuple[Any, ...], kwargs: dict[str, Any], cores: int, settings: dict[str, object]
) -> None:
    request = parse_marker(args, kwargs, nodeid=NODE, pool_size=32)
    assert request == Request(cores=cores, settings=settings)


def test_marker_without_a_pool_takes_any_count() -> None:
    assert parse_marker((64,), {}, nodeid=NODE, pool_size=None).cores == 64


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0,), {}, "cores=0 must be at least 1"),
        ((), {"cores": 0}, "cores=0 must be at least 1"),
        ((-2,), {}, "cores=-2 must be at least 1"),
        (("two",), {}, "cores='two' names a parameter, but this test is not parametrized"),
        ((True,), {}, "cores=True is not a whole number"),
        ((2.0,), {}, "cores=2.0 is not a whole number"),
        ((33,), {}, "cores=33 is more than the pool's 32 cores"),
        ((), {"core": 2}, "unknown keyword 'core'; accepted: " + ", ".join(KEYWORDS)),
        ((), {"log_level": "VERBOSE"}, "invalid value 'VERBOSE' from " + WHERE[:-2] + " (log_level=)"),
        ((), {"exec_timeout": -5}, "invalid value -5 from " + WHERE[:-2] + " (exec_timeout=)"),
        ((), {"exec_timeout": 1.5}, "invalid value 1.5 from " + WHERE[:-2] + " (exec_timeout=)"),
        ((), {"validate_hash": "maybe"}, "expected true or false"),
        ((), {"log_location": "file"}, "expected console or syslog"),
        # marker values need not be strings: a number is one clear error, not an AttributeError
        ((), {"log_level": 5}, "invalid value 5 from " + WHERE[:-2] + " (log_level=)"),
        ((), {"log_location": 1}, "invalid value 1 from " + WHERE[:-2] + " (log_location=)"),
        ((2,), {"cores": 2}, "cores given both positionally and as a keyword"),
        ((1, 2), {}, "takes at most one positional argument (cores), got 2"),
    ],
)
def test_marker_rejects(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MarkerError) as info:
        parse_marker(args, kwargs, nodeid=NODE, pool_size=32)
    text = str(info.value)
    assert NODE in text
    assert message in text
    assert "\n" not in text


# -- EnvPatch --------------------------------------------------------------------------------
def test_envpatch_restores_exactly() -> None:
    environ = {"KEEP": "1", "CHANGE": "old", "DROP": "here"}
    before = dict(environ)
    patch = EnvPatch({"CHANGE": "new", "NEW": "x", "DROP": None, "ABSENT": None}, environ).apply()
    assert environ == {"KEEP": "1", "CHANGE": "new", "NEW": "x"}
    patch.restore()
    assert environ == before
    assert "NEW" not in environ  # a variable that was unset is unset again
    patch.restore()  # idempotent
    assert environ == before


def test_envpatch_nests_and_refuses_a_second_apply() -> None:
    environ: dict[str, str] = {"A": "0"}
    with EnvPatch({"A": "1", "B": "1"}, environ):
        with EnvPatch({"A": "2", "B": None}, environ) as inner:
            assert environ == {"A": "2"}
            with pytest.raises(RuntimeError, match="applied twice"):
                inner.apply()
        assert environ == {"A": "1", "B": "1"}
    assert environ == {"A": "0"}


def test_envpatch_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_NEURON_TEST_VAR", raising=False)
    with EnvPatch({"PYTEST_NEURON_TEST_VAR": "1"}):
        assert os.environ["PYTEST_NEURON_TEST_VAR"] == "1"
    assert "PYTEST_NEURON_TEST_VAR" not in os.environ


# -- the environment of a lease and of a test -----------------------------------------------
def test_lease_env_derives_ports_from_the_first_physical_core() -> None:
    env = lease_env((2, 3), 4, port_base=61234, user_env={}, handoff="h")
    assert env == {
        VISIBLE: "2-3",
        HANDOFF_ENV: "h",
        ROOT_COMM_ID: "localhost:61238",
        MASTER_PORT: str(61234 + 512 + 4),
    }


def test_lease_envs_of_disjoint_leases_never_share_a_port() -> None:
    ports: list[str] = []
    for first in range(0, 32, 2):
        env = lease_env((first, first + 1), first, port_base=61234, user_env={}, handoff=None)
        ports += [str(env[ROOT_COMM_ID]).split(":")[1], str(env[MASTER_PORT])]
    assert len(ports) == len(set(ports))


@pytest.mark.parametrize(
    ("user_env", "absent"),
    [
        ({ROOT_COMM_ID: "10.0.0.1:5000"}, {ROOT_COMM_ID}),
        ({MASTER_PORT: "29500"}, {MASTER_PORT}),
        ({ROOT_COMM_ID: "x:1", MASTER_PORT: "2"}, {ROOT_COMM_ID, MASTER_PORT}),
    ],
)
def test_lease_env_leaves_user_ports_alone(user_env: dict[str, str], absent: set[str]) -> None:
    env = lease_env((0,), 0, port_base=2000, user_env=user_env, handoff=None)
    assert absent.isdisjoint(env)
    assert env[VISIBLE] == "0"
    assert env[HANDOFF_ENV] is None  # no lease to hand down: removed for the duration


def test_settings_env() -> None:
    values = {"log_level": "INFO", "log_location": None, "exec_timeout": 0, "validate_hash": False}
    assert settings_env(values, RUNTIME_VARS) == {
        "NEURON_RT_LOG_LEVEL": "INFO",
        "NEURON_RT_EXEC_TIMEOUT": "0",
        "NEURON_RT_VALIDATE_HASH": "false",
    }
    assert settings_env({"validate_hash": True}, RUNTIME_VARS) == {"NEURON_RT_VALIDATE_HASH": "true"}


@pytest.mark.parametrize("first", [223, 224, 4095, 65535])
@pytest.mark.parametrize("base", [1024, 61234, 64800])
def test_lease_env_ports_stay_valid_for_any_core_number(first: int, base: int) -> None:
    env = lease_env((first,), first, port_base=base, user_env={}, handoff=None)
    assert int(str(env[MASTER_PORT])) <= 65535  # the bug: --neuron-cores=65535 gave MASTER_PORT=127281
    assert int(str(env[ROOT_COMM_ID]).rsplit(":", 1)[1]) <= 65535
