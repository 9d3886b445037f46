"""Every setting of pytest-neuron, and the one function that resolves each.

Precedence, everywhere: marker > command line > environment > ini > default.
A value is validated where it is resolved, and a bad one raises
:class:`SettingError` whose message quotes the value and names its source
(``--neuron-scope``, ``PYTEST_NEURON_SCOPE``, ``ini neuron_scope``, or the
marker of a test) and what is accepted.

The pool itself (``--neuron-cores``) is not resolved here but by the topology
chain, where ini ``neuron_cores`` comes before an inherited
``NEURON_RT_VISIBLE_CORES`` (see topology.py).
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .record import record
from .topology import LNC_VARIABLE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

T = TypeVar("T")

LOG_LEVELS = ("ERROR", "WARNING", "WARN", "INFO", "DEBUG", "TRACE", "QUIET")
LOG_LOCATIONS = ("console", "syslog")
SCOPES = ("worker", "test")
ORDERS = ("biggest-first", "durations", "collection")
ORDER_ALIASES = {"collected": "collection"}  # the name 0.1 gave `collection`
DEFAULT_WAIT_TIMEOUT = 600.0
DEFAULT_PORT_BASE = 61234
DEFAULT_LOCK_DIR = "/tmp/pytest-neuron"
LOCK_DIR_ENV = "PYTEST_NEURON_LOCK_DIR"  # read by the status command too
MAX_SECONDS = 10**7  # about 116 days: the largest wait bound accepted
MAX_EXEC_TIMEOUT = 2**31 - 1  # the largest value NEURON_RT_EXEC_TIMEOUT is exported with
_DECIMAL = r"[0-9]+(\.[0-9]*)?|\.[0-9]+"  # compiled by re on first use: most runs give no seconds


class SettingError(ValueError):
    """A bad setting; ``str()`` is the one-line message."""


def _bad(value: object, source: str, accepted: str) -> SettingError:
    return SettingError(f"invalid value {value!r} from {source}: expected {accepted}")


def _whole(text: str) -> bool:
    """Plain ASCII digits only: ``str.isdigit`` also accepts '²', which ``int`` rejects."""
    return text.isascii() and text.isdigit()


def parse_log_level(value: object, source: str) -> str:
    level = str(value).strip().upper()
    if level not in LOG_LEVELS:
        raise _bad(value, source, "one of " + ", ".join(LOG_LEVELS))
    return level


def parse_log_location(value: object, source: str) -> str:
    location = str(value).strip().lower()
    if location not in LOG_LOCATIONS:
        raise _bad(value, source, "console or syslog")
    return location


def parse_exec_timeout(value: object, source: str) -> int:
    """Whole seconds >= 0, as NEURON_RT_EXEC_TIMEOUT takes them."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _bad(value, source, "a whole number of seconds >= 0")
    text = str(value).strip()
    if not _whole(text) or int(text) > MAX_EXEC_TIMEOUT:
        raise _bad(value, source, f"a whole number of seconds >= 0 (at most {MAX_EXEC_TIMEOUT})")
    return int(text)


def parse_bool(value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _bad(value, source, "true or false")


def parse_lnc(value: object, source: str) -> int:
    """A logical NeuronCore config: 1 or 2 (an int or a digit string)."""
    if isinstance(value, bool) or str(value).strip() not in ("1", "2"):
        raise _bad(value, source, "a logical NeuronCore config, 1 or 2")
    return int(str(value).strip())


def parse_scope(value: object, source: str) -> str:
    scope = str(value).strip().lower()
    if scope not in SCOPES:
        raise _bad(value, source, "worker or test")
    return scope


def parse_positive_int(value: object, source: str) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not _whole(text) or int(text) < 1:
        raise _bad(value, source, "a whole number >= 1")
    return int(text)


def parse_port(value: object, source: str) -> int:
    text = str(value).strip()
    if not _whole(text) or not 1024 <= int(text) <= 64800:
        raise _bad(value, source, "a port number from 1024 to 64800")
    return int(text)


def parse_seconds(value: object, source: str) -> float:
    """Plain ASCII decimal seconds, 0 to ``MAX_SECONDS`` (no '１２', '٤', '1_0', 'nan' or '1e3')."""
    accepted = f"a number of seconds >= 0 such as 30 or 2.5 (at most {MAX_SECONDS})"
    if isinstance(value, bool):
        raise _bad(value, source, accepted)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        if not re.fullmatch(_DECIMAL, text):
            raise _bad(value, source, accepted)
        seconds = float(text)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise _bad(value, source, accepted)
    return seconds


def parse_order(value: object, source: str) -> str:
    order = str(value).strip().lower()
    order = ORDER_ALIASES.get(order, order)
    if order not in ORDERS:
        raise _bad(value, source, "biggest-first, durations or collection")
    return order


def parse_path(value: object, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(value, source, "a directory path")
    return value


TRACE_ACCEPTED = "a new path or a regular file (the JSON trace; the HTML timeline goes next to it)"


def parse_trace_path(value: object, source: str) -> str:
    """A path the trace can be written to: a regular file or a new path under a writable directory.

    Checked when the run starts (reads only: nothing is created), so a bad path is one line, not a
    traceback at the end of the run.
    """
    if not isinstance(value, str) or not value.strip():
        raise _bad(value, source, TRACE_ACCEPTED)
    path = os.path.abspath(value)
    if os.path.lexists(path) and not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "not a regular file"
        raise SettingError(
            f"invalid value {value!r} from {source}: {path} is {what}; expected {TRACE_ACCEPTED}"
        )
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise SettingError(
            f"invalid value {value!r} from {source}: {parent} is not a directory; expected {TRACE_ACCEPTED}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SettingError(
            f"invalid value {value!r} from {source}: cannot write in {parent}; expected {TRACE_ACCEPTED}"
        )
    return value


def parse_lock_dir(value: object, source: str) -> str:
    """An absolute directory (``~`` expanded): runs in other directories must find the same locks."""
    accepted = "an absolute directory path such as /tmp/pytest-neuron (or ~/...)"
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise _bad(value, source, accepted)
    path = os.path.expanduser(value) if value.startswith("~") else value
    if path.startswith("~") or not os.path.isabs(path):
        raise _bad(value, source, accepted)
    return os.path.normpath(path)


@record
class Spec(Generic[T]):
    """One setting: where it may come from, how it is read, what it defaults to."""

    name: str
    parse: Callable[[Any, str], T]
    default: T | None
    help: str
    env: str | None = None

    @property
    def option(self) -> str:
        return "--neuron-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "neuron_" + self.name

    @property
    def ini(self) -> str:
        return "neuron_" + self.name


@record
class Resolved(Generic[T]):
    value: T | None
    source: str


SCOPE = Spec(
    "scope",
    parse_scope,
    "worker",
    "worker: each xdist worker leases a slice for its life; "
    "test: each test leases the cores its marker asks for, for its own run",
    env="PYTEST_NEURON_SCOPE",
)
CORES_PER_WORKER = Spec(
    "cores_per_worker",
    parse_positive_int,
    None,
    "cores in each worker's slice",
    env="PYTEST_NEURON_CORES_PER_WORKER",
)
LOCK_DIR = Spec(
    "lock_dir",
    parse_lock_dir,
    DEFAULT_LOCK_DIR,
    "host-wide lock directory shared by every run on this host",
    env=LOCK_DIR_ENV,
)
WAIT_TIMEOUT = Spec(
    "wait_timeout",
    parse_seconds,
    DEFAULT_WAIT_TIMEOUT,
    "seconds to wait for cores before failing, 0 = fail at once",
    env="PYTEST_NEURON_WAIT_TIMEOUT",
)
REQUIRE = Spec(
    "require",
    parse_bool,
    False,
    "fail (not skip) neuron tests when no Neuron cores are found",
    env="PYTEST_NEURON_REQUIRE",
)
PORT_BASE = Spec(
    "port_base",
    parse_port,
    DEFAULT_PORT_BASE,
    "first port of NEURON_RT_ROOT_COMM_ID (base + first core) and MASTER_PORT (base + 512 + first core)",
    env="PYTEST_NEURON_PORT_BASE",
)
ORDER = Spec(
    "order",
    parse_order,
    None,
    "test scope: the order tests start in: biggest-first (most cores first), durations (by the "
    "last run's durations, from pytest's cache) or collection",
    env="PYTEST_NEURON_ORDER",
)
TRACE = Spec(
    "trace",
    parse_trace_path,
    None,
    "write a Chrome trace of every lease, wait and test to this path (and an HTML timeline next to it)",
    env="PYTEST_NEURON_TRACE",
)
LOG_LEVEL = Spec(
    "log_level",
    parse_log_level,
    None,
    "NEURON_RT_LOG_LEVEL for each test: " + ", ".join(LOG_LEVELS),
    env="NEURON_RT_LOG_LEVEL",
)
LOG_LOCATION = Spec(
    "log_location",
    parse_log_location,
    None,
    "NEURON_RT_LOG_LOCATION for each test: console or syslog",
    env="NEURON_RT_LOG_LOCATION",
)
EXEC_TIMEOUT = Spec(
    "exec_timeout",
    parse_exec_timeout,
    None,
    "NEURON_RT_EXEC_TIMEOUT for each test, whole seconds >= 0",
    env="NEURON_RT_EXEC_TIMEOUT",
)
VALIDATE_HASH = Spec(
    "validate_hash",
    parse_bool,
    None,
    "NEURON_RT_VALIDATE_HASH for each test",
    env="NEURON_RT_VALIDATE_HASH",
)
LNC = Spec(
    "lnc",
    parse_lnc,
    None,
    "NEURON_LOGICAL_NC_CONFIG for each test, 1 or 2; its window is numbered at that LNC and locked by "
    "physical core",
    env=LNC_VARIABLE,
)

RUN_SETTINGS: tuple[Spec[Any], ...] = (
    SCOPE,
    CORES_PER_WORKER,
    LOCK_DIR,
    WAIT_TIMEOUT,
    REQUIRE,
    PORT_BASE,
    ORDER,
    TRACE,
)
TEST_SETTINGS: tuple[Spec[Any], ...] = (LOG_LEVEL, LOG_LOCATION, EXEC_TIMEOUT, VALIDATE_HASH, LNC)
RUNTIME_VARS = {spec.name: spec.env for spec in TEST_SETTINGS}


def resolve(
    spec: Spec[T],
    *,
    cmdline: object = None,
    env: Mapping[str, str],
    ini: str | None = None,
    marker: object = None,
    marker_source: str = "the neuron marker",
) -> Resolved[T]:
    """Resolve ``spec``: marker > command line > environment > ini > default.

    ``None`` (and an empty ini value) means "not given here".
    """
    if marker is not None:
        return Resolved(spec.parse(marker, marker_source), marker_source)
    if cmdline is not None:
        return Resolved(spec.parse(cmdline, spec.option), spec.option)
    if spec.env is not None and env.get(spec.env, "").strip():
        source = f"environment variable {spec.env}"
        return Resolved(spec.parse(env[spec.env], source), source)
    if spec.env is not None and spec.env.startswith("NEURON_RT_") and spec.env in env:
        # the runtime reads the blank value itself: it must not pass unchecked
        blank = env[spec.env]
        raise SettingError(
            f"environment variable {spec.env} is set but blank ({blank!r}): give it a value or unset it"
        )
    if ini is not None and ini.strip():
        source = f"ini {spec.ini}"
        return Resolved(spec.parse(ini, source), source)
    return Resolved(spec.default, "default")
