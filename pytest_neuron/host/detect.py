"""Detecting the Neuron devices of this host: ``neuron-ls``, ``/dev/neuron*``, DMI and sysfs.

Providers 4 and 5 of core/topology.py's chain, the only ones that read the machine.  Each takes
the root of the filesystem to read (``/`` on a real host, a fake tree in tests) and the
environment, and returns a :class:`~pytest_neuron.core.topology.Host` or ``None``; what went
wrong is logged on the ``pytest_neuron`` logger, never raised, except a bad LNC setting.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.detection import (
    DEFAULT_NEURON_LS,
    DEVICE_NAME,
    LNC_FILE,
    NEURON_BIN_DIR,
    NEURON_LS_TIMEOUT,
    PHYSICAL_CORES_PER_DEVICE,
    PRODUCT_NAME_FILE,
    host_from_neuron_ls,
    make_host,
)
from ..core.plan import HOST_ENV
from ..core.planning import lnc_from_env
from ..core.record import replace
from ..core.topology import LNC_FAMILIES, LNC_VARIABLE, Host, TopologyError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_log = logging.getLogger("pytest_neuron")

HOST_ROOT_ENV = "PYTEST_NEURON_HOST_ROOT"  # tests: the filesystem root host detection reads
NEURON_LS_ENV = "PYTEST_NEURON_NEURON_LS"  # tests: the neuron-ls command host detection runs


def read_lnc(env: Mapping[str, str], root: Path) -> int | None:
    """The configured LNC: ``NEURON_LOGICAL_NC_CONFIG``, else ``root/opt/aws/neuron/logical_nc_config``.

    An empty variable counts as unset; ``None`` when neither is set.
    """
    from_env = lnc_from_env(env)
    if from_env is not None:
        return from_env
    path = root / LNC_FILE
    try:
        content = _read(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TopologyError(f"cannot read the logical NeuronCore config {path}: {exc.strerror}") from exc
    key, sep, rest = content.partition("=")
    value = rest.strip().strip("'\"") if sep and key.strip() == LNC_VARIABLE else content
    if value in ("1", "2"):
        return int(value)
    raise TopologyError(
        f"invalid logical NeuronCore config {content!r} in {path}: expected 1, 2 or {LNC_VARIABLE}=1|2"
    )


def _which(name: str, env: Mapping[str, str], root: Path) -> str | None:
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None and os.sep not in name:
        candidate = root / NEURON_BIN_DIR / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found = str(candidate)
    return found


def neuron_ls_output(
    command: Sequence[str] | None, env: Mapping[str, str], *, root: Path = Path("/")
) -> str | None:
    """What ``neuron-ls --json-output`` (or ``command``) prints, or ``None`` when it does not exist,
    fails or times out (the reason is logged on the ``pytest_neuron`` logger).  A bare command name
    not on ``PATH`` is also looked for in ``root/opt/aws/neuron/bin``.  The status command reads it
    too, for ``neuron_processes``.
    """
    argv = tuple(command) if command is not None else DEFAULT_NEURON_LS
    shown = " ".join(argv)
    executable = _which(argv[0], env, root) if argv else None
    if executable is None:
        _log.debug("%s: command not found", shown)
        return None
    try:
        result = subprocess.run(
            [executable, *argv[1:]],
            capture_output=True,
            text=True,
            errors="replace",
            env=dict(env),
            timeout=NEURON_LS_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _log.warning("cannot run %s: %s; trying /dev/neuron*", shown, exc)
        return None
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        detail = f": {lines[-1].strip()}" if lines else ""
        _log.warning("%s exited with status %d%s; trying /dev/neuron*", shown, result.returncode, detail)
        return None
    return result.stdout


def detect_with_neuron_ls(
    command: Sequence[str] | None, env: Mapping[str, str], *, root: Path = Path("/")
) -> Host | None:
    """Provider 4: run ``neuron-ls --json-output`` (or ``command``) and parse it; ``None`` when it
    cannot be run or prints something unusable (logged)."""
    output = neuron_ls_output(command, env, root=root)
    if output is None:
        return None
    try:
        return host_from_neuron_ls(output, env)
    except TopologyError as exc:
        _log.warning("%s; trying /dev/neuron*", exc)
        return None


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip()


def _read_product_name(root: Path) -> str | None:
    try:
        return _read(root / PRODUCT_NAME_FILE) or None
    except OSError:
        return None


def _sysfs_core_count(root: Path, devices: Sequence[int]) -> int | None:
    """Physical cores per device from sysfs ``core_count`` (readable only by root), if all devices agree."""
    texts: set[str] = set()
    for device in devices:
        try:
            texts.add(_read(root / "sys/class/neuron_device" / f"neuron{device}" / "core_count"))
        except OSError:
            return None
    text = texts.pop() if len(texts) == 1 else ""
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def detect_with_dev(root: Path, env: Mapping[str, str]) -> Host | None:
    """Provider 5: ``root/dev/neuron<N>`` devices times the physical cores per device.

    Devices are counted only in ``/dev`` (sysfs lists every host device even in a
    container).  Cores per device come from the instance family in the DMI
    product name, else from sysfs ``core_count``.
    """
    try:
        names = os.listdir(root / "dev")
    except OSError:
        names = []
    devices = sorted({int(m.group(1)) for name in names if (m := DEVICE_NAME.fullmatch(name))})
    if not devices:
        _log.debug("no %s/neuron<N> devices", root / "dev")
        return None
    product = _read_product_name(root)
    family = product.split(".", 1)[0] if product else None
    per_device = PHYSICAL_CORES_PER_DEVICE.get(family) if family else None
    if per_device is not None:
        lnc_capable, origin = family in LNC_FAMILIES, str(product)
    else:
        per_device = _sysfs_core_count(root, devices)
        if per_device is None:
            _log.warning(
                "found %d /dev/neuron* device(s) but not their core count: instance type %r is not one of "
                "%s and sysfs core_count is not readable (it needs root); name the cores with --neuron-cores",
                len(devices),
                product,
                ", ".join(sorted(PHYSICAL_CORES_PER_DEVICE)),
            )
            return None
        # Only NeuronCore-v3/v4 devices (trn2, trn3) have 8 cores and support LNC.
        lnc_capable, origin = per_device == 8, "sysfs core_count"
    lnc = (read_lnc(env, root) or 2) if lnc_capable else 1
    logical = per_device // lnc
    device_of = {device * logical + j: device for device in devices for j in range(logical)}
    detail = f"{origin}, LNC={lnc}" if lnc_capable else origin
    return make_host(device_of, lnc, f"/dev/neuron* x {per_device} cores ({detail})", product)


def detect_host(
    root: Path = Path("/"),
    neuron_ls: Sequence[str] | None = DEFAULT_NEURON_LS,
    env: Mapping[str, str] | None = None,
) -> Host | None:
    """Providers 4 then 5.  ``neuron_ls=None`` skips neuron-ls; ``env`` defaults to ``os.environ``."""
    environ: Mapping[str, str] = os.environ if env is None else env
    host = detect_with_neuron_ls(neuron_ls, environ, root=root) if neuron_ls is not None else None
    if host is not None:
        if host.instance_type is None:
            host = replace(host, instance_type=_read_product_name(root))
        return host
    return detect_with_dev(root, environ)


def detect_for_run(env: Mapping[str, str]) -> tuple[Host | None, bool]:
    """The host a run plans with, and whether it was detected here (not handed down).

    The host an enclosing run detected, handed down in ``PYTEST_NEURON_HOST`` to its
    descendants, else :func:`detect_host` (``PYTEST_NEURON_HOST_ROOT`` and
    ``PYTEST_NEURON_NEURON_LS`` point it at a simulated host in tests).
    """
    if HOST_ENV in env:
        from .hostcache import inherited_host

        inherited = inherited_host(env)
        if inherited is not None:
            return inherited, False
    root = Path(env.get(HOST_ROOT_ENV, "/"))
    if env.get(NEURON_LS_ENV):
        return detect_host(root=root, neuron_ls=tuple(env[NEURON_LS_ENV].split()), env=env), True
    return detect_host(root=root, env=env), True
