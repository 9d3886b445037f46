"""Command line of pytest-neuron (``python -m pytest_neuron`` or ``pytest-neuron``).

``status [--lock-dir DIR] [--cores CORESET] [--json]``
    which NeuronCores of the host-wide lock directory are held, by which run,
    who waits for them, and which other processes have a Neuron device open;
    reads without taking any lock, safe during a run.

Exit status: 0 on success, 2 for a usage error or an unreadable lock directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from pytest_neuron import __version__
from pytest_neuron.core.coreset import CoreSetError, parse_coreset
from pytest_neuron.core.settings import DEFAULT_LOCK_DIR, LOCK_DIR_ENV
from pytest_neuron.core.status_view import render_text, to_json
from pytest_neuron.locks.status import StatusError, collect, resolve_lock_dir

PROG = "pytest-neuron"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tools of pytest-neuron, which gives parallel test processes their own NeuronCores.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    status = commands.add_parser(
        "status",
        help="show which NeuronCores are held and by whom (safe while a run is in progress)",
        description="Show which physical NeuronCores are held, by whom, and who waits for them. "
        "Takes no lock, so it never disturbs a run in progress. Run it when the Neuron runtime "
        "reports 'NeuronCore(s) not available'.",
    )
    status.add_argument(
        "--lock-dir",
        metavar="DIR",
        help=f"lock directory to inspect (default: ${LOCK_DIR_ENV}, else {DEFAULT_LOCK_DIR}); "
        "pass the same directory as the run's --neuron-lock-dir or ini neuron_lock_dir",
    )
    status.add_argument(
        "--cores",
        metavar="CORESET",
        help="the pool to count free cores in, as physical cores, e.g. 0-31 (default: every core "
        "neuron-ls or /dev/neuron* shows, else the cores the lock directory has seen); "
        "pass a simulated run's --neuron-cores",
    )
    status.add_argument(
        "--json", action="store_true", help="print one JSON document (schema_version 2) instead of a table"
    )
    return parser


def _status(lock_dir: str | None, cores: str | None, as_json: bool) -> int:
    pool = None
    if cores is not None:
        try:
            pool = tuple(sorted(parse_coreset(cores, "--cores")))
        except CoreSetError as exc:
            print(f"{PROG} status: error: {exc}", file=sys.stderr)
            return 2
    try:
        path, source = resolve_lock_dir(lock_dir, os.environ)
        view = collect(path, source, pool=pool, pool_source=f"--cores={cores}")
    except StatusError as exc:
        print(f"{PROG} status: error: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    if as_json:
        sys.stdout.write(json.dumps(to_json(view, now), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(view, now, width=shutil.get_terminal_size((80, 24)).columns))
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _status(args.lock_dir, args.cores, args.json)
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
