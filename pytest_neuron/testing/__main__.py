"""Command line of the fake Neuron runtime.

``python -m pytest_neuron.testing run --seconds S [--cores-env-only]``
    initialise the fake runtime from the environment, print which cores this
    process holds, hold them for ``S`` seconds (SIGTERM ends the wait cleanly),
    exit 0.  When the runtime refuses, print its error on stderr and exit 1.
``python -m pytest_neuron.testing check [FAKE_DIR]``
    check the reservation log for two holders of one core; exit 1 if found.

Exit status 2 means the command itself could not run (bad arguments, fake host
misconfigured, unreadable log).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from pytest_neuron.core.coreset import format_coreset
from pytest_neuron.core.topology import NUM_CORES, VISIBLE_CORES
from pytest_neuron.testing.log import LogFormatError, check_log, summarize_log
from pytest_neuron.testing.runtime import (
    ENV_DIR,
    FakeHostError,
    FakeRuntimeError,
    init_runtime,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

PROG = "python -m pytest_neuron.testing"


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _run(seconds: float, cores_env_only: bool) -> int:
    if (
        cores_env_only
        and VISIBLE_CORES not in os.environ
        and os.environ.get(NUM_CORES, "0").strip() in ("", "0")
    ):
        print(
            f"fake-neuron: --cores-env-only: neither {VISIBLE_CORES} nor {NUM_CORES} names the cores "
            "(the runtime would take every core of the host)",
            file=sys.stderr,
        )
        return 1
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        handle = init_runtime()
    except FakeHostError as exc:
        print(f"fake-neuron: {exc}", file=sys.stderr)
        return 2
    except FakeRuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    except _Terminated:
        return 0
    try:
        print(
            f"fake-neuron: pid {handle.pid} holds cores {handle.visible_cores} "
            f"(local {format_coreset(handle.local_ids)})",
            flush=True,
        )
        time.sleep(seconds)
    except _Terminated:
        pass
    finally:
        handle.close()
    return 0


def _check(fake_dir: str | None) -> int:
    directory = fake_dir if fake_dir is not None else os.environ.get(ENV_DIR)
    if not directory:
        print(f"fake-neuron: give FAKE_DIR or set {ENV_DIR}", file=sys.stderr)
        return 2
    if not os.path.exists(directory):
        print(f"fake-neuron: {directory}: no such file or directory", file=sys.stderr)
        return 2
    try:
        overlaps = check_log(directory)
        count = summarize_log(directory).reservations
    except (LogFormatError, OSError) as exc:
        print(f"fake-neuron: {exc}", file=sys.stderr)
        return 2
    for overlap in overlaps:
        print(overlap)
    if overlaps:
        return 1
    print(f"no overlap in {count} reservations")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="A fake Neuron runtime for dry runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="reserve cores like nrt_init and hold them for a while")
    run.add_argument("--seconds", type=_non_negative, required=True, help="how long to hold the cores")
    run.add_argument(
        "--cores-env-only",
        action="store_true",
        help=f"refuse to start unless {VISIBLE_CORES} or a non-zero {NUM_CORES} names the cores",
    )
    check = commands.add_parser("check", help="report any core held by two reservations at once")
    check.add_argument("fake_dir", nargs="?", metavar="FAKE_DIR", help=f"default: ${ENV_DIR}")
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args.seconds, args.cores_env_only)
    return _check(args.fake_dir)


if __name__ == "__main__":
    sys.exit(main())
