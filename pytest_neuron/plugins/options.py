"""Command-line options and ini keys, generated from the settings table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.settings import REQUIRE, RUN_SETTINGS, TEST_SETTINGS, VALIDATE_HASH

if TYPE_CHECKING:
    import pytest

CORES_HELP = (
    "the pool of NeuronCores this run may use, e.g. 0-31 or 0-3,8-11 "
    "(default: NEURON_RT_VISIBLE_CORES, else every core found on this host)"
)


def add_options(parser: pytest.Parser) -> None:
    """Register every option in the ``neuron`` group, each with an ini key of the same name."""
    group = parser.getgroup("neuron", "NeuronCores for parallel runs (pytest-neuron)")
    group.addoption("--neuron-cores", dest="neuron_cores", metavar="CORESET", default=None, help=CORES_HELP)
    parser.addini("neuron_cores", CORES_HELP, type="string", default="")
    for spec in (*RUN_SETTINGS, *TEST_SETTINGS):
        env = f" [env {spec.env}]" if spec.env else ""
        if spec in (VALIDATE_HASH, REQUIRE):  # flags: given means True
            group.addoption(
                spec.option,
                dest=spec.dest,
                action="store_const",
                const=True,
                default=None,
                help=spec.help + env,
            )
        else:
            group.addoption(
                spec.option, dest=spec.dest, metavar=spec.name.upper(), default=None, help=spec.help + env
            )
        if spec is VALIDATE_HASH:
            group.addoption(
                "--no-neuron-validate-hash",
                dest=spec.dest,
                action="store_const",
                const=False,
                help="turn NEURON_RT_VALIDATE_HASH off for each test",
            )
        parser.addini(spec.ini, spec.help, type="string", default="")
