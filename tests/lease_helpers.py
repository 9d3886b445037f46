"""Real processes for the lease tests, and an independent overlap checker.

Run as a script, this module is the child side: ``python lease_helpers.py
<command> ...`` leases cores through :class:`~pytest_neuron.locks.lease.LeaseManager`
and reports on stdout (one JSON object) or through a shared log.  Every
lease a ``loop`` child holds is logged as one JSON line ``{pid, lease_id,
cores, physical, start, end}`` with a single ``write`` on an ``O_APPEND``
descriptor, so lines from concurrent children never interleave.  ``start``
is taken after ``acquire`` returned and ``end`` before ``release`` is
called, both on the system-wide monotonic clock, so a logged interval lies
inside the real hold: if two logged intervals of one physical core
overlap, two processes really held that core at once.

The parent side (:class:`Children`, :func:`find_overlaps`) is imported by
the tests and by nothing in ``pytest_neuron``: the checker shares no code
with the lease implementation it checks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

HELPER = Path(__file__).resolve()
REPO = HELPER.parent.parent

# Exit codes of the child commands.
EXIT_OK = 0
EXIT_TIMEOUT = 3
EXIT_LOCKDIR = 4
EXIT_NO_HANDOFF = 5
EXIT_LEASE = 6


# -- the shared log and the checker ------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """One logged lease: ``physical`` was held by ``pid`` from ``start`` to ``end``."""

    pid: int
    lease_id: str
    cores: tuple[int, ...]
    physical: tuple[int, ...]
    start: float
    end: float


def append_line(log: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single ``write`` (``O_APPEND`` keeps concurrent lines whole)."""
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"short append to {log}: {written} of {len(data)} bytes")


def read_intervals(log: Path) -> list[Interval]:
    if not log.exists():
        return []
    intervals: list[Interval] = []
    for number, line in enumerate(log.read_text().splitlines(), 1):
        raw = json.loads(line)  # a torn line fails the test here, which is what we want
        if raw.get("kind", "lease") != "lease":
            continue
        try:
            intervals.append(
                Interval(
                    pid=int(raw["pid"]),
                    lease_id=str(raw["lease_id"]),
                    cores=tuple(raw["cores"]),
                    physical=tuple(raw["physical"]),
                    start=float(raw["start"]),
                    end=float(raw["end"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{log}:{number}: malformed lease line {line!r}") from exc
    return intervals


@dataclass(frozen=True)
class Overlap:
    core: int
    first: Interval
    second: Interval

    def __str__(self) -> str:
        return (
            f"physical core {self.core}: pid {self.first.pid} held it {self.first.start:.6f}-"
            f"{self.first.end:.6f} and pid {self.second.pid} {self.second.start:.6f}-{self.second.end:.6f}"
        )


def find_overlaps(intervals: Iterable[Interval]) -> list[Overlap]:
    """Every pair of intervals in which two leases held one physical core at one time."""
    by_core: dict[int, list[Interval]] = {}
    for interval in intervals:
        for core in interval.physical:
            by_core.setdefault(core, []).append(interval)
    overlaps: list[Overlap] = []
    for core, held in sorted(by_core.items()):
        held.sort(key=lambda i: (i.start, i.end))
        open_: list[Interval] = []
        for interval in held:
            open_ = [o for o in open_ if o.end > interval.start]
            overlaps.extend(Overlap(core, o, interval) for o in open_)
            open_.append(interval)
    return overlaps


# -- the parent side: starting and cleaning up children ----------------------------


def helper_command(*args: str, python: str | None = None) -> list[str]:
    return [python or sys.executable, str(HELPER), *args]


def child_args(command: str, **options: object) -> tuple[str, ...]:
    """``command`` and its options as a child's argv: ``hold_min=0.005`` is ``--hold-min 0.005``."""
    argv = [command]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return tuple(argv)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NEURON_RT_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


class Children:
    """Processes started by one test; :meth:`cleanup` kills and reaps whatever is left."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def popen(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, stdin: int | None = None
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            list(argv),
            env=child_env(env),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def start(
        self, *args: str, env: dict[str, str] | None = None, stdin: int | None = None
    ) -> subprocess.Popen[str]:
        """Run this module as a child: ``python lease_helpers.py *args``."""
        return self.popen(helper_command(*args), env=env, stdin=stdin)

    def finish(self, proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
        """Wait for ``proc``; its exit status, stdout and stderr."""
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                proc.communicate(timeout=10)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def result_of(out: str) -> dict[str, Any]:
    """The last JSON line a child printed."""
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"the child printed no result; stdout was {out!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line of ``proc``'s stdout, failing after ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"child {proc.pid} printed nothing within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"child {proc.pid} exited ({proc.wait()}) before it was ready: {err}")
    return line


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def shared_tmpdir(prefix: str = "pytest-neuron-test-") -> Iterator[Path]:
    """A directory that every user can reach (tmp_path may sit under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class OtherUser:
    """How to run this helper as another uid: the interpreter and environment that work for it."""

    name: str
    uid: int
    gid: int
    python: str
    env: dict[str, str]


def other_user(name: str = "nobody") -> tuple[OtherUser | None, str]:
    """Whether this process can run the helper as ``name``; ``(None, why not)`` otherwise.

    The child needs an interpreter it may execute: ours when it lives outside a
    private directory, else the system interpreter of the same version with our
    site-packages and this checkout on ``PYTHONPATH``.
    """
    if os.geteuid() != 0:
        return None, f"needs root to switch to user {name!r} (running as uid {os.geteuid()})"
    try:
        import pwd

        entry = pwd.getpwnam(name)
    except (ImportError, KeyError):
        return None, f"there is no user {name!r} on this host"
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join([str(REPO), site]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/",
    }
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"]
    tried: list[str] = []
    with shared_tmpdir() as cwd:
        for python in dict.fromkeys(candidates):
            if not os.path.exists(python):
                continue
            probe = [python, "-c", "import pytest_neuron.locks.lease; print('ok')"]
            try:
                done = subprocess.run(
                    probe,
                    user=entry.pw_uid,
                    group=entry.pw_gid,
                    extra_groups=[],
                    env=env,
                    cwd=cwd,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            except PermissionError as exc:  # cannot switch uid (no CAP_SETUID) or cannot exec
                tried.append(f"{python}: {exc}")
                continue
            if done.returncode == 0 and done.stdout.strip() == "ok":
                return OtherUser(name, entry.pw_uid, entry.pw_gid, python, env), ""
            tried.append(f"{python}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    why = "; ".join(tried) or "no interpreter found"
    return None, f"cannot run Python with pytest_neuron as user {name!r} ({why})"


def run_as(user: OtherUser, *args: str, cwd: Path, timeout: float = 60.0) -> tuple[int, str, str]:
    done = subprocess.run(
        helper_command(*args, python=user.python),
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=user.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


# -- the child side ---------------------------------------------------------------


def _manager(args: argparse.Namespace) -> Any:
    from pytest_neuron.core.coreset import parse_coreset
    from pytest_neuron.core.topology import identity_topology
    from pytest_neuron.locks.lease import LeaseManager

    pool = identity_topology(parse_coreset(args.pool, "--pool"), f"--neuron-cores={args.pool}", lnc=args.lnc)
    return LeaseManager(Path(args.root), pool, poll_interval=args.poll_interval)


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def cmd_loop(args: argparse.Namespace) -> int:
    """Lease random sizes ``count`` times (or until ``--stop`` exists), logging every hold."""
    from pytest_neuron.locks.lease import LeaseTimeout

    manager = _manager(args)
    rng = random.Random(args.seed if args.seed is not None else os.getpid())
    sizes = [int(s) for s in args.sizes.split(",")]
    log = Path(args.log)
    stop = Path(args.stop) if args.stop else None
    done = 0
    waits: list[float] = []
    give_up = time.monotonic() + args.max_seconds  # never outlive a parent that forgot us
    while (stop is None and done < args.count) or (stop is not None and not stop.exists()):
        if time.monotonic() > give_up:
            _emit({"pid": os.getpid(), "done": done, "error": f"still looping after {args.max_seconds} s"})
            return EXIT_TIMEOUT
        k = rng.choice(sizes)
        try:
            lease = manager.acquire(k, timeout=args.timeout, worker=args.worker, test=f"loop-{done}")
        except LeaseTimeout as exc:
            _emit({"pid": os.getpid(), "done": done, "error": str(exc)})
            return EXIT_TIMEOUT
        start = time.monotonic()
        waits.append(lease.wait_seconds)
        if done == 0 and args.ready:
            Path(args.ready).touch()
        time.sleep(rng.uniform(args.hold_min, args.hold_max))
        end = time.monotonic()
        append_line(
            log,
            {
                "kind": "lease",
                "pid": os.getpid(),
                "lease_id": lease.lease_id,
                "k": k,
                "cores": list(lease.cores),
                "physical": list(lease.physical),
                "start": start,
                "end": end,
                "wait": lease.wait_seconds,
            },
        )
        manager.release(lease)
        done += 1
    _emit({"pid": os.getpid(), "done": done, "max_wait": max(waits, default=0.0)})
    return EXIT_OK


def cmd_hold(args: argparse.Namespace) -> int:
    """Lease ``k`` cores, print them, hold them for ``--hold`` seconds (default: until killed)."""
    from pytest_neuron.host.procinfo import my_starttime

    manager = _manager(args)
    lease = manager.acquire(args.k, timeout=args.timeout, worker=args.worker, test=args.test)
    _emit(
        {
            "pid": os.getpid(),
            "starttime": my_starttime(),
            "lease_id": lease.lease_id,
            "cores": list(lease.cores),
            "physical": list(lease.physical),
        }
    )
    time.sleep(args.hold)
    manager.release(lease)
    return EXIT_OK


SLEEPER = "import sys, time; print('started', flush=True); time.sleep(float(sys.argv[1]))"


def cmd_spawn(args: argparse.Namespace) -> int:
    """Lease ``k`` cores and start a subprocess under the lease, as a test does; then hold or release.

    The subprocess gets the lease's environment the way the plugin exports it
    (``PYTEST_NEURON_LEASE`` with the lease id).  ``--orphan``: it is started
    through a shell that exits at once, so it is re-parented.  ``--then``:
    ``hold`` (until killed), ``release`` (release, report, stay alive) or ``exit``
    (release and exit, leaving the subprocess behind).
    """
    from pytest_neuron.core.plan import HANDOFF_ENV
    from pytest_neuron.locks.holders import handoff_value

    manager = _manager(args)
    lease = manager.acquire(args.k, timeout=args.timeout, test="spawner")
    env = {**os.environ, HANDOFF_ENV: handoff_value(manager.root, lease.cores, lease_id=lease.lease_id)}
    env["NEURON_RT_VISIBLE_CORES"] = lease.visible_cores
    sleeper = [sys.executable, "-c", SLEEPER, str(args.seconds)]
    if args.orphan:
        import shlex

        quoted = " ".join(shlex.quote(a) for a in sleeper)
        shell = subprocess.run(
            ["sh", "-c", f"{quoted} > /dev/null 2>&1 & echo $!"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        child = int(shell.stdout.strip())
    else:
        popen = subprocess.Popen(sleeper, env=env, stdout=subprocess.PIPE, text=True)
        assert popen.stdout is not None
        popen.stdout.readline()  # it runs (and will write nothing more to the pipe)
        child = popen.pid
    started = {
        "pid": os.getpid(),
        "child": child,
        "lease_id": lease.lease_id,
        "physical": list(lease.physical),
    }
    if args.then == "hold":
        _emit(started)
        time.sleep(args.hold)
        return EXIT_OK
    manager.release(lease)
    # one line: a second one written at once could sit unread in the reader's buffer
    _emit({**started, "released": True, "lingering": list(lease.lingering)})
    if args.then == "exit":
        return EXIT_OK
    for line in sys.stdin:  # each line: try to settle, report what still lingers
        del line
        _emit({"lingering": [list(x.lingering) for x in manager.lingering()]})
    return EXIT_OK


def cmd_mutex(args: argparse.Namespace) -> int:
    """Take the domain's ``alloc.lock`` as a placement does, say so, and hold it ``--hold`` seconds."""
    from pytest_neuron.locks.lockdir import DomainMutex, prepare_domain

    root = Path(args.root)
    prepare_domain(root, "--root")
    mutex = DomainMutex(root / "alloc.lock")
    mutex.acquire(args.timeout)
    _emit({"pid": os.getpid()})
    time.sleep(args.hold)
    mutex.release()
    return EXIT_OK


def cmd_cycle(args: argparse.Namespace) -> int:
    """``--rounds`` times: wait for a line on stdin, lease, say so, hold ``--hold`` s, release, say when."""
    manager = _manager(args)
    for _ in range(args.rounds):
        if not sys.stdin.readline():
            return EXIT_OK
        lease = manager.acquire(args.k, timeout=args.timeout)
        _emit({"held": list(lease.physical)})
        time.sleep(args.hold)
        manager.release(lease)
        _emit({"released": time.monotonic()})
    return EXIT_OK


def cmd_try(args: argparse.Namespace) -> int:
    """One request; print what happened (and release at once)."""
    from pytest_neuron.locks.lease import LeaseError, LeaseTimeout
    from pytest_neuron.locks.lockdir import LockDirError

    try:
        manager = _manager(args)
        lease = manager.acquire(args.k, timeout=args.timeout, test=args.test)
    except LeaseTimeout as exc:
        _emit({"uid": os.getuid(), "ok": False, "error": "LeaseTimeout", "message": str(exc)})
        return EXIT_TIMEOUT
    except LockDirError as exc:
        _emit({"uid": os.getuid(), "ok": False, "error": "LockDirError", "message": str(exc)})
        return EXIT_LOCKDIR
    except LeaseError as exc:
        _emit({"uid": os.getuid(), "ok": False, "error": "LeaseError", "message": str(exc)})
        return EXIT_LEASE
    holders = manager.holders(lease.physical)
    _emit(
        {
            "uid": os.getuid(),
            "ok": True,
            "cores": list(lease.cores),
            "physical": list(lease.physical),
            "wait": lease.wait_seconds,
            "holder_pids": sorted({h.pid for h in holders.values()}),
        }
    )
    manager.release(lease)
    return EXIT_OK


def cmd_nested(args: argparse.Namespace) -> int:
    """Use the lease handed down in ``PYTEST_NEURON_LEASE``: lease ``k`` of its cores, nested."""
    from pytest_neuron.core.topology import identity_topology
    from pytest_neuron.locks.lease import LeaseManager, LeaseTimeout
    from pytest_neuron.locks.untrusted import inherited_handoff

    handoff = inherited_handoff(os.environ)
    if handoff is None:
        _emit({"handoff": None})
        return EXIT_NO_HANDOFF
    manager = LeaseManager(handoff.nested_root, identity_topology(handoff.cores, "handoff"))
    result: dict[str, Any] = {
        "handoff": {"root": str(handoff.root), "pid": handoff.pid, "cores": sorted(handoff.cores)},
        "nested_root": str(handoff.nested_root),
    }
    try:
        lease = manager.acquire(args.k, timeout=args.timeout, test="nested")
    except LeaseTimeout as exc:
        result.update(ok=False, message=str(exc))
        _emit(result)
        return EXIT_TIMEOUT
    result.update(ok=True, cores=list(lease.cores), wait=lease.wait_seconds)
    manager.release(lease)
    _emit(result)
    return EXIT_OK


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lease_helpers.py")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("loop", "hold", "cycle", "try", "nested", "spawn", "mutex"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--root", default="")
        cmd.add_argument("--pool", default="0")
        cmd.add_argument("--lnc", type=int, default=1)
        cmd.add_argument("--poll-interval", type=float, default=0.005)
        cmd.add_argument("--timeout", type=float, default=30.0)
        cmd.add_argument("--k", type=int, default=1)
        cmd.add_argument("--worker", default=None)
        cmd.add_argument("--test", default=None)
    loop = sub.choices["loop"]
    loop.add_argument("--sizes", default="1")
    loop.add_argument("--count", type=int, default=10)
    loop.add_argument("--stop", default=None, help="loop until this file exists instead of --count times")
    loop.add_argument("--ready", default=None, help="touch this file once the first lease is held")
    loop.add_argument("--hold-min", type=float, default=0.005)
    loop.add_argument("--hold-max", type=float, default=0.030)
    loop.add_argument("--log", required=True)
    loop.add_argument("--seed", type=int, default=None)
    loop.add_argument("--max-seconds", type=float, default=120.0)
    sub.choices["hold"].add_argument("--hold", type=float, default=120.0)
    sub.choices["mutex"].add_argument("--hold", type=float, default=120.0)
    spawn = sub.choices["spawn"]
    spawn.add_argument("--hold", type=float, default=120.0)
    spawn.add_argument("--seconds", type=float, default=120.0, help="how long the subprocess lives")
    spawn.add_argument("--orphan", action="store_true")
    spawn.add_argument("--then", choices=["hold", "release", "exit"], default="hold")
    sub.choices["cycle"].add_argument("--hold", type=float, default=0.3)
    sub.choices["cycle"].add_argument("--rounds", type=int, default=4)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    # A SIGTERM from the parent's cleanup ends the child quietly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(sys.argv[1:] if argv is None else argv)
    commands = {
        "loop": cmd_loop,
        "hold": cmd_hold,
        "cycle": cmd_cycle,
        "try": cmd_try,
        "nested": cmd_nested,
        "spawn": cmd_spawn,
        "mutex": cmd_mutex,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
