"""The pure half of host detection: what neuron-ls, device names and instance families say.

host/detect.py runs the commands and reads the files; this module only parses what they
return, so it is tested without a host.  Imported only when detection runs (an explicit
``--neuron-cores`` pool and an xdist worker, which receives its controller's host, never do).
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, TypeGuard

from .topology import LNC_VARIABLE, Host, TopologyError

if TYPE_CHECKING:
    from collections.abc import Mapping

_log = logging.getLogger("pytest_neuron")

LNC_FILE = "opt/aws/neuron/logical_nc_config"
PRODUCT_NAME_FILE = "sys/devices/virtual/dmi/id/product_name"
NEURON_BIN_DIR = "opt/aws/neuron/bin"
DEFAULT_NEURON_LS: tuple[str, ...] = ("neuron-ls", "--json-output")
NEURON_LS_TIMEOUT = 10.0

#: Physical NeuronCores per Neuron device, by instance family.
PHYSICAL_CORES_PER_DEVICE = {"inf1": 4, "inf2": 2, "trn1": 2, "trn1n": 2, "trn2": 8, "trn2u": 8, "trn3": 8}
#: ``/dev`` names of Neuron devices
DEVICE_NAME = re.compile(r"neuron(0|[1-9][0-9]*)")


def make_host(device_of: dict[int, int], lnc: int, source: str, instance_type: str | None) -> Host:
    cores = tuple(sorted(device_of))
    physical = {core: tuple(range(core * lnc, core * lnc + lnc)) for core in cores}
    return Host(cores, physical, device_of, lnc, source, instance_type)


def _is_index(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def host_from_neuron_ls(output: str, env: Mapping[str, str]) -> Host:
    """Parse ``neuron-ls --json-output``: a JSON list with one object per device.

    ``nc_count`` and ``neuroncore_ids`` are logical; the LNC is the devices'
    ``logical_neuroncore_config``, and 1 where neuron-ls omits it (not trn2/trn3).
    """
    shown = output.strip() if len(output.strip()) <= 60 else output.strip()[:57] + "..."

    def bad(why: str) -> TopologyError:
        return TopologyError(
            f"unusable neuron-ls output {shown!r}: {why}; expected a JSON list of device objects "
            "with neuron_device, nc_count and neuroncore_ids"
        )

    try:
        data = json.loads(output)
    except ValueError as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(data, list):
        raise bad("the top level is not a list")
    device_of: dict[int, int] = {}
    lncs: set[int] = set()
    instance_type: str | None = None
    for entry in data:
        if not isinstance(entry, dict):
            raise bad(f"device entry {entry!r} is not an object")
        device, ids = entry.get("neuron_device"), entry.get("neuroncore_ids")
        if not _is_index(device):
            raise bad(f"neuron_device {device!r} is not an index")
        if not isinstance(ids, list) or not all(_is_index(core) for core in ids):
            raise bad(f"device {device} has neuroncore_ids {ids!r}")
        if "nc_count" in entry and entry["nc_count"] != len(ids):
            raise bad(f"device {device} has nc_count {entry['nc_count']!r} but {len(ids)} neuroncore_ids")
        config = entry.get("logical_neuroncore_config")
        if config is not None:
            if str(config) not in ("1", "2") or isinstance(config, bool):
                raise bad(f"device {device} has logical_neuroncore_config {config!r} (expected 1 or 2)")
            lncs.add(int(str(config)))
        for core in ids:
            if core in device_of:
                raise bad(f"core {core} is listed by devices {device_of[core]} and {device}")
            device_of[core] = device
        if isinstance(entry.get("instance_type"), str) and entry["instance_type"]:
            instance_type = entry["instance_type"]
    if len(lncs) > 1:
        raise bad(f"devices disagree on logical_neuroncore_config ({sorted(lncs)})")
    if not device_of:
        raise bad("it lists no NeuronCore")
    lnc = lncs.pop() if lncs else 1
    if lnc == 1 and env.get(LNC_VARIABLE, "").strip() not in ("", "1"):
        _log.info("ignoring %s=%s: neuron-ls reports LNC 1", LNC_VARIABLE, env[LNC_VARIABLE].strip())
    return make_host(device_of, lnc, "neuron-ls", instance_type)
