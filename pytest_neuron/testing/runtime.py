"""A fake Neuron runtime: libnrt's ``nrt_init`` plus the driver's core reservation.

:func:`init_runtime` reads ``NEURON_RT_VISIBLE_CORES`` / ``NEURON_RT_NUM_CORES``
once, rejects what the runtime rejects, and reserves the cores against every
other process with one ``flock`` per *physical* core on
``<fake_dir>/driver/nc<p>.lock``, held until the process exits, as the driver's
per-core PID table is.  Allocation (probe, lock, log) runs under a host-wide
mutex, ``driver/alloc.lock``, as the driver's does, so the probes that count
free cores for an error message never disturb another process's allocation.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import threading
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_neuron.core.coreset import CoreSetError, format_coreset, parse_coreset, runs
from pytest_neuron.core.topology import LNC_VARIABLE as LNC_CONFIG
from pytest_neuron.core.topology import NUM_CORES, VISIBLE_CORES
from pytest_neuron.testing.log import LOG_NAME, append_event, end_event, start_event, take_over

if TYPE_CHECKING:
    from collections.abc import Mapping

ENV_DIR = "PYTEST_NEURON_FAKE_DIR"
ENV_CORES = "PYTEST_NEURON_FAKE_CORES"
ENV_CORES_PER_DEVICE = "PYTEST_NEURON_FAKE_CORES_PER_DEVICE"
ENV_LNC = "PYTEST_NEURON_FAKE_LNC"

_ALLOC = "NRT:nrt_allocate_neuron_cores"
_INIT = "NRT:nrt_init"
_DIGITS = re.compile(r"\s*[0-9]+\s*")


class FakeHostError(ValueError):
    """The simulated host is misconfigured; ``str()`` is a one-line message."""


class FakeRuntimeError(RuntimeError):
    """Base of the errors the fake runtime raises where libnrt's ``nrt_init`` fails."""


class RuntimeConfigError(FakeRuntimeError):
    """The core request itself is invalid (bad value, not contiguous, not on this host)."""


class RuntimeBusyError(FakeRuntimeError):
    """Some requested NeuronCore is reserved by another process."""


@dataclass(frozen=True)
class FakeHost:
    """A simulated Neuron host, usually read from the environment by :meth:`from_env`.

    ``fake_dir`` (``PYTEST_NEURON_FAKE_DIR``, required, made absolute): the fake
    driver's state; ``cores`` (``PYTEST_NEURON_FAKE_CORES``, 32): logical cores;
    ``cores_per_device`` (``PYTEST_NEURON_FAKE_CORES_PER_DEVICE``, 2): logical
    cores per device; ``lnc`` (``PYTEST_NEURON_FAKE_LNC``, 1 or 2, default 1):
    logical core ``L`` covers physical cores ``L*lnc .. L*lnc+lnc-1``.
    """

    fake_dir: Path
    cores: int = 32
    cores_per_device: int = 2
    lnc: int = 1
    driver_dir: Path = field(init=False, repr=False, compare=False)
    dev_dir: Path = field(init=False, repr=False, compare=False)
    log_file: Path = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        root = Path(os.path.abspath(self.fake_dir))
        for name, value in (("fake_dir", root), ("driver_dir", root / "driver"), ("dev_dir", root / "dev")):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "log_file", root / LOG_NAME)
        for name in ("cores", "cores_per_device"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FakeHostError(f"FakeHost.{name} must be a positive integer, got {value!r}")
        if self.lnc not in (1, 2) or isinstance(self.lnc, bool):
            raise FakeHostError(f"FakeHost.lnc must be 1 or 2, got {self.lnc!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FakeHost:
        """The host the ``PYTEST_NEURON_FAKE_*`` variables of ``env`` (default ``os.environ``) describe."""
        env = os.environ if env is None else env
        directory = env.get(ENV_DIR, "").strip()
        if not directory:
            raise FakeHostError(f"{ENV_DIR} is not set: point it at the fake Neuron driver's state directory")

        def positive(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None:
                return default
            if not _DIGITS.fullmatch(raw) or int(raw) < 1:
                raise FakeHostError(f"{name}={raw!r} is not a positive integer")
            return int(raw)

        lnc = positive(ENV_LNC, 1)
        if lnc not in (1, 2):
            raise FakeHostError(f"{ENV_LNC}={env[ENV_LNC]!r} must be 1 or 2")
        cores, per_device = positive(ENV_CORES, 32), positive(ENV_CORES_PER_DEVICE, 2)
        # A process started with NEURON_LOGICAL_NC_CONFIG sees the same physical cores at its own LNC.
        process_lnc = env.get(LNC_CONFIG, "").strip()
        if process_lnc and process_lnc != str(lnc):
            if process_lnc not in ("1", "2"):
                raise RuntimeConfigError(
                    f"{LNC_CONFIG}={process_lnc!r} is not a logical NeuronCore config (1 or 2)"
                )
            want = int(process_lnc)
            if (cores * lnc) % want or (per_device * lnc) % want:
                raise RuntimeConfigError(f"{LNC_CONFIG}={want}: {cores * lnc} physical cores do not pair up")
            cores, per_device, lnc = cores * lnc // want, per_device * lnc // want, want
        return cls(Path(directory), cores, per_device, lnc)

    def to_env(self) -> dict[str, str]:
        """The environment variables that describe this host to a subprocess."""
        return {
            ENV_DIR: str(self.fake_dir),
            ENV_CORES: str(self.cores),
            ENV_CORES_PER_DEVICE: str(self.cores_per_device),
            ENV_LNC: str(self.lnc),
        }

    @property
    def devices(self) -> int:
        return -(-self.cores // self.cores_per_device)

    def physical_of(self, logical: int) -> tuple[int, ...]:
        return tuple(range(logical * self.lnc, logical * self.lnc + self.lnc))

    def device_of(self, logical: int) -> int:
        return logical // self.cores_per_device

    def prepare(self) -> None:
        """Create the state directories and every device file (idempotent)."""
        self.driver_dir.mkdir(parents=True, exist_ok=True)
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        for device in range(self.devices):
            os.close(_open(self.dev_dir / f"neuron{device}"))


@dataclass(eq=False)
class RuntimeHandle:
    """The cores this process reserved; they stay reserved until :meth:`close` or exit."""

    host: FakeHost
    cores: tuple[int, ...]
    physical: tuple[int, ...]
    devices: tuple[int, ...]
    reservation_id: str
    pid: int
    _fds: list[int] = field(default_factory=list, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def local_ids(self) -> tuple[int, ...]:
        """The renumbered ids the process uses: ``0 .. len(cores)-1``."""
        return tuple(range(len(self.cores)))

    @property
    def visible_cores(self) -> str:
        return format_coreset(self.cores)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Log the end of the reservation and release the cores (idempotent; no-op in a forked child)."""
        with _REGISTRY.lock:
            if self._closed or self.pid != os.getpid():
                return
            self._closed = True
            try:
                append_event(self.host.log_file, end_event(self.reservation_id))
            finally:
                _close_all(self._fds)
                if _REGISTRY.handle is self:
                    _REGISTRY.handle = None


class _Registry:
    """The one runtime of this process; keeps the reservation's descriptors alive."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.handle: RuntimeHandle | None = None


_REGISTRY = _Registry()


def init_runtime(
    host: FakeHost | None = None, env: Mapping[str, str] | None = None, *, open_device: bool = True
) -> RuntimeHandle:
    """Initialise the fake runtime of this process, like ``nrt_init``.

    ``env`` (default ``os.environ``) supplies ``NEURON_RT_VISIBLE_CORES`` /
    ``NEURON_RT_NUM_CORES`` and, when ``host`` is None, the host.  Once
    initialised, later calls return the same handle and ignore ``env``.
    """
    with _REGISTRY.lock:
        current = _REGISTRY.handle
        if current is not None and not current.closed and current.pid == os.getpid():
            return current
        source = os.environ if env is None else env
        host = FakeHost.from_env(source) if host is None else host
        request = _requested(host, source)
        host.prepare()
        _REGISTRY.handle = _reserve(host, request, open_device)
        return _REGISTRY.handle


def free_cores(host: FakeHost | None = None) -> tuple[int, ...]:
    """The logical cores of ``host`` no process holds right now."""
    host = FakeHost.from_env() if host is None else host
    host.prepare()
    mutex = _open(host.driver_dir / "alloc.lock")
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        return _free_locked(host)
    finally:
        os.close(mutex)


def open_devices(host: FakeHost | None = None, pid: int | None = None) -> tuple[int, ...]:
    """The fake devices process ``pid`` (default: this one) has open, read from ``/proc/<pid>/fd``."""
    host = FakeHost.from_env() if host is None else host
    prefix = str(host.dev_dir / "neuron")
    fd_dir = Path("/proc") / ("self" if pid is None else str(pid)) / "fd"
    found: set[int] = set()
    for entry in fd_dir.iterdir():
        with suppress(OSError):
            target = os.readlink(entry)
            if target.startswith(prefix) and target[len(prefix) :].isdigit():
                found.add(int(target[len(prefix) :]))
    return tuple(sorted(found))


def _requested(host: FakeHost, env: Mapping[str, str]) -> tuple[int, ...] | int:
    """The logical cores named by the environment, or how many to pick."""
    visible = env.get(VISIBLE_CORES)
    if visible is not None:
        try:
            cores = parse_coreset(visible, VISIBLE_CORES)
        except CoreSetError as exc:
            raise RuntimeConfigError(f"{_INIT} {exc}") from None
        starts = [int(part.split("-")[0]) for part in visible.split(",")]
        if len(runs(cores)) != 1 or starts != sorted(starts):
            raise RuntimeConfigError(f"{_ALLOC} Neuron cores are not contiguous ({VISIBLE_CORES}={visible})")
        if max(cores) >= host.cores:
            present = f"Present:nc0-nc{host.cores - 1}"
            raise RuntimeConfigError(
                f"{_ALLOC} NeuronCore(s) not present - Requested:{_span(cores)} {present}"
            )
        return tuple(sorted(cores))
    raw = env.get(NUM_CORES, "0")
    if not _DIGITS.fullmatch(raw):
        raise RuntimeConfigError(f"{_INIT} invalid {NUM_CORES}={raw!r}: expected a non-negative integer")
    count = int(raw)
    if count > host.cores:
        raise RuntimeConfigError(
            f"{_ALLOC} more NeuronCores requested than present - Requested:{count} Present:{host.cores}"
        )
    return tuple(range(host.cores)) if count == 0 else count


def _reserve(host: FakeHost, request: tuple[int, ...] | int, open_device: bool) -> RuntimeHandle:
    fds: list[int] = []
    ident, pid, started = str(uuid.uuid4()), os.getpid(), False
    mutex = _open(host.driver_dir / "alloc.lock")
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        if isinstance(request, int):
            free = _free_locked(host)
            fits = [(a, b) for a, b in runs(free) if b - a + 1 >= request]
            if not fits:
                raise RuntimeBusyError(
                    f"{_ALLOC} NeuronCore(s) not available - Requested:{request} Available:{len(free)}"
                )
            request = tuple(range(fits[0][0], fits[0][0] + request))
        physical = tuple(p for core in request for p in host.physical_of(core))
        for core in physical:
            fd = _try_lock(host.driver_dir / f"nc{core}.lock")
            if fd is None:
                _close_all(fds)
                available = len(_free_locked(host))
                raise RuntimeBusyError(
                    f"{_ALLOC} NeuronCore(s) not available - Requested:{_span(request)} Available:{available}"
                )
            fds.append(fd)
        take_over([host.driver_dir / f"nc{core}.holder" for core in physical], host.log_file, ident)
        append_event(host.log_file, start_event(ident, pid, physical))
        started = True
        devices = tuple(sorted({host.device_of(core) for core in request}))
        if open_device:
            fds.extend(_open(host.dev_dir / f"neuron{device}") for device in devices)
        return RuntimeHandle(host, request, physical, devices, ident, pid, fds)
    except BaseException:
        if started:
            append_event(host.log_file, end_event(ident))
        _close_all(fds)
        raise
    finally:
        os.close(mutex)


def _free_locked(host: FakeHost) -> tuple[int, ...]:
    """Probe every physical core; call only with the allocation mutex held."""
    busy = set()
    for core in range(host.cores * host.lnc):
        fd = _try_lock(host.driver_dir / f"nc{core}.lock")
        if fd is None:
            busy.add(core)
        else:
            os.close(fd)
    return tuple(c for c in range(host.cores) if busy.isdisjoint(host.physical_of(c)))


def _try_lock(path: Path) -> int | None:
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            return None
        raise
    return fd


def _open(path: Path) -> int:
    # Never unlink these files: a waiter could lock an unlinked inode.
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with suppress(OSError):
            os.close(fd)
    fds.clear()


def _span(cores: tuple[int, ...] | frozenset[int]) -> str:
    return f"nc{min(cores)}-nc{max(cores)}"


def _close_at_exit() -> None:
    handle = _REGISTRY.handle
    if handle is not None:
        handle.close()


def _forget_after_fork() -> None:
    """A forked child does not own its parent's reservation: drop its copies of the descriptors."""
    _REGISTRY.lock = threading.RLock()
    if _REGISTRY.handle is not None:
        _close_all(_REGISTRY.handle._fds)
        _REGISTRY.handle = None


atexit.register(_close_at_exit)
os.register_at_fork(after_in_child=_forget_after_fork)
