"""Command-line options and ini keys, generated from the settings table.

Every option's help ends the same way: ``[env VAR]`` and ``(default: X)``;
choices are the placeholder (``{worker,test}``), as argparse shows them; the
ini keys of flags are typed ``bool``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.settings import (
    DEFAULT_PORT_BASE,
    DEFAULT_WAIT_TIMEOUT,
    LOG_LOCATIONS,
    ORDERS,
    REQUIRE,
    RUN_SETTINGS,
    SCOPES,
    TEST_SETTINGS,
    VALIDATE_HASH,
    Spec,
)

if TYPE_CHECKING:
    import pytest

CORES_HELP = (
    "the pool of NeuronCores this run may use, e.g. 0-31 or 0-3,8-11 "
    "(default: NEURON_RT_VISIBLE_CORES, else every core found on this host)"
)

#: the placeholder of each option's value, as docs/configuration.md writes it
METAVARS = {
    "scope": "{" + ",".join(SCOPES) + "}",
    "cores_per_worker": "N",
    "lock_dir": "DIR",
    "wait_timeout": "SECONDS",
    "port_base": "PORT",
    "order": "{" + ",".join(ORDERS) + "}",
    "trace": "PATH",
    "log_level": "LEVEL",
    "log_location": "{" + ",".join(LOG_LOCATIONS) + "}",
    "exec_timeout": "SECONDS",
    "lnc": "{1,2}",
}
#: the default of each setting in words, where the value alone would not say it
DEFAULT_TEXT = {
    "cores_per_worker": "pool size // workers, at least 1",
    "wait_timeout": f"{DEFAULT_WAIT_TIMEOUT:g}",
    "port_base": str(DEFAULT_PORT_BASE),
    "require": "off",
    "trace": "off",
    "order": "durations once a run recorded durations, else biggest-first",
    "lnc": "the pool's LNC",
}
FLAGS = (VALIDATE_HASH, REQUIRE)  # given means True


def default_text(spec: Spec[Any]) -> str:
    """``X`` of ``(default: X)``: the value, or what happens without one (``unset``: the runtime's own)."""
    if spec.name in DEFAULT_TEXT:
        return DEFAULT_TEXT[spec.name]
    return "unset" if spec.default is None else str(spec.default)


def option_help(spec: Spec[Any]) -> str:
    env = f" [env {spec.env}]" if spec.env else ""
    return f"{spec.help}{env} (default: {default_text(spec)})"


def add_options(parser: pytest.Parser) -> None:
    """Register every option in the ``neuron`` group, each with an ini key of the same name."""
    group = parser.getgroup("neuron", "NeuronCores for parallel runs (pytest-neuron)")
    group.addoption("--neuron-cores", dest="neuron_cores", metavar="CORESET", default=None, help=CORES_HELP)
    parser.addini("neuron_cores", CORES_HELP, type="string", default="")
    for spec in (*RUN_SETTINGS, *TEST_SETTINGS):
        if spec in FLAGS:
            group.addoption(
                spec.option,
                dest=spec.dest,
                action="store_const",
                const=True,
                default=None,
                help=option_help(spec),
            )
        else:
            group.addoption(
                spec.option, dest=spec.dest, metavar=METAVARS[spec.name], default=None, help=option_help(spec)
            )
        if spec is VALIDATE_HASH:
            group.addoption(
                "--no-neuron-validate-hash",
                dest=spec.dest,
                action="store_const",
                const=False,
                help="turn NEURON_RT_VALIDATE_HASH off for each test (default: unset)",
            )
        if spec in FLAGS:
            # typed bool in --help; read back as given (None when absent, so the default applies)
            parser.addini(spec.ini, spec.help, type="bool", default=None)
        else:
            parser.addini(spec.ini, spec.help, type="string", default="")


def read_ini(config: pytest.Config, key: str) -> str | None:
    """The ini value of ``key`` as text, or ``None`` when it is not set.

    Flags are typed ``bool``: pytest parses them (``true``/``false``, ``1``/``0``, ...) and its
    error is re-raised naming the key; an unset bool key reads ``[]`` on older pytest.
    """
    from ..core.settings import SettingError

    try:
        value = config.getini(key)
    except ValueError as exc:
        raise SettingError(f"invalid value from ini {key} ({exc}): expected true or false") from None
    if value is None or isinstance(value, list) or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


#: The ``neuron`` marker's line in ``pytest --markers`` (core/marker.py parses it).
MARKER_DOC = (
    "neuron(cores=1, *, log_level=None, log_location=None, exec_timeout=None, validate_hash=None, lnc=None): "
    "run this test with `cores` NeuronCores of its own (a contiguous window; @pytest.mark.neuron(4) "
    'means 4 cores; cores="tp_degree" takes the count from that parametrize argument) and, when '
    "given, these NEURON_RT_* runtime settings; lnc=2 numbers the window at that logical NeuronCore "
    "config. See pytest-neuron's docs."
)
