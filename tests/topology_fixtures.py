"""Builders for fake Neuron hosts: ``neuron-ls --json-output`` text, fake roots, fake commands."""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path


def neuron_ls_json(
    devices: int,
    cores_per_device: int,
    *,
    lnc: int | None = None,
    instance_type: str | None = None,
    memory_size: int = 34359738368,
) -> str:
    """``neuron-ls --json-output`` for ``devices`` devices of ``cores_per_device`` logical cores.

    ``lnc`` becomes ``logical_neuroncore_config`` (only trn2/trn3 print it);
    ``instance_type``, when given, is printed per device as newer neuron-ls does.
    """
    entries: list[dict[str, object]] = []
    for device in range(devices):
        entry: dict[str, object] = {}
        if instance_type is not None:
            entry["instance_type"] = instance_type
            entry["instance_id"] = "i-0123456789abcdef0"
        entry.update(
            {
                "neuron_device": device,
                "bdf": f"0000:{0x10 + device:02x}:1e.0",
                "cpu_affinity": "0-7",
                "numa_node": "-1" if devices == 1 else str(device // 8),
                "connected_to": None if devices == 1 else [(device + 1) % devices, (device - 1) % devices],
                "nc_count": cores_per_device,
            }
        )
        if lnc is not None:
            entry["logical_neuroncore_config"] = lnc
        first = device * cores_per_device
        entry["memory_size"] = memory_size
        entry["neuroncore_ids"] = list(range(first, first + cores_per_device))
        entry["neuron_processes"] = (
            [{"pid": 4242, "command": "python", "neuron_runtime_version": "2.27.23"}] if device == 0 else []
        )
        entries.append(entry)
    return json.dumps(entries, indent=4)


#: trn1.32xlarge: 16 devices x 2 NeuronCore-v2, LNC is always 1 and not printed.
TRN1_32XLARGE = neuron_ls_json(16, 2)
#: trn2.48xlarge at LNC=2: 16 devices x 4 logical cores, ids 0..63.
TRN2_48XLARGE_LNC2 = neuron_ls_json(16, 4, lnc=2, instance_type="trn2.48xlarge", memory_size=103079215104)
#: inf2.xlarge: one device with 2 NeuronCore-v2.
INF2_XLARGE = neuron_ls_json(1, 2)


def fake_root(
    base: Path,
    *,
    devices: Iterable[int] = (),
    product_name: str | None = None,
    lnc_file: str | None = None,
    core_count: Mapping[int, str] | None = None,
    other_dev: Iterable[str] = (),
) -> Path:
    """A directory laid out like ``/``: ``dev/neuron<N>``, DMI product_name, LNC file, sysfs core_count."""
    root = base / "root"
    (root / "dev").mkdir(parents=True, exist_ok=True)
    for name in [f"neuron{device}" for device in devices] + list(other_dev):
        (root / "dev" / name).touch()
    if product_name is not None:
        dmi = root / "sys/devices/virtual/dmi/id"
        dmi.mkdir(parents=True, exist_ok=True)
        (dmi / "product_name").write_text(product_name + "\n")
    if lnc_file is not None:
        (root / "opt/aws/neuron").mkdir(parents=True, exist_ok=True)
        (root / "opt/aws/neuron/logical_nc_config").write_text(lnc_file)
    for device, text in (core_count or {}).items():
        directory = root / "sys/class/neuron_device" / f"neuron{device}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "core_count").write_text(text)
    return root


def fake_command(directory: Path, name: str, body: str) -> Path:
    """An executable ``/bin/sh`` script ``directory/name`` running ``body``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def printing_command(directory: Path, name: str, output: str, *, exit_code: int = 0) -> Path:
    """A fake command that prints ``output`` (kept in a side file) and exits with ``exit_code``."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{name}.out"
    data.write_text(output)
    return fake_command(directory, name, f"/bin/cat '{data}'\nexit {exit_code}")
