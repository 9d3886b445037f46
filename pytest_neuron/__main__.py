"""Command line of pytest-neuron (``python -m pytest_neuron`` or ``pytest-neuron``).

``status [--lock-dir DIR] [--json]``
    which NeuronCores of the host-wide lock directory are held, by whom, and
    who waits for them; reads without taking any lock, safe during a run.

Exit status: 0 on success, 2 for a usage error or an unreadable lock directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pytest_neuron import __version__
from pytest_neuron.locks.lockdir import DEFAULT_LOCK_DIR, LOCK_DIR_ENV
from pytest_neuron.status import StatusError, collect, render_text, resolve_lock_dir, to_json

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
    status.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    return parser


def _status(lock_dir: str | None, as_json: bool) -> int:
    try:
        path, source = resolve_lock_dir(lock_dir, os.environ)
        report = collect(path, source)
    except StatusError as exc:
        print(f"{PROG} status: error: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    if as_json:
        sys.stdout.write(json.dumps(to_json(report, now), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(report, now))
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
        return _status(args.lock_dir, args.json)
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
