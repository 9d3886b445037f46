from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from topology_fixtures import (
    INF2_XLARGE,
    TRN1_32XLARGE,
    TRN2_48XLARGE_LNC2,
    fake_command,
    fake_root,
    neuron_ls_json,
    printing_command,
)

from pytest_neuron.core import detection
from pytest_neuron.core.detection import host_from_neuron_ls
from pytest_neuron.core.planning import resolve_topology
from pytest_neuron.core.topology import Host, Topology, TopologyError
from pytest_neuron.host import detect
from pytest_neuron.host.detect import detect_host, detect_with_dev, detect_with_neuron_ls, read_lnc

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

LNC_PATH = "opt/aws/neuron/logical_nc_config"


# --- read_lnc -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "file", "expected"),
    [
        ({}, None, None),
        ({"NEURON_LOGICAL_NC_CONFIG": ""}, None, None),
        ({"NEURON_LOGICAL_NC_CONFIG": "1"}, None, 1),
        ({"NEURON_LOGICAL_NC_CONFIG": " 2\n"}, None, 2),
        ({}, "1", 1),
        ({}, "2\n", 2),
        ({}, "NEURON_LOGICAL_NC_CONFIG=1\n", 1),
        ({}, 'NEURON_LOGICAL_NC_CONFIG="2"', 2),
        ({"NEURON_LOGICAL_NC_CONFIG": "2"}, "NEURON_LOGICAL_NC_CONFIG=1", 2),
        ({"NEURON_LOGICAL_NC_CONFIG": " "}, "1", 1),
    ],
)
def test_read_lnc(tmp_path: Path, env: dict[str, str], file: str | None, expected: int | None) -> None:
    root = fake_root(tmp_path, lnc_file=file)
    assert read_lnc(env, root) == expected


@pytest.mark.parametrize(
    ("env", "file", "quoted", "source"),
    [
        ({"NEURON_LOGICAL_NC_CONFIG": "3"}, None, "'3'", "environment variable NEURON_LOGICAL_NC_CONFIG"),
        ({"NEURON_LOGICAL_NC_CONFIG": "0"}, "1", "'0'", "environment variable NEURON_LOGICAL_NC_CONFIG"),
        ({"NEURON_LOGICAL_NC_CONFIG": "two"}, None, "'two'", "environment variable NEURON_LOGICAL_NC_CONFIG"),
        ({}, "4", "'4'", LNC_PATH),
        ({}, "NEURON_LOGICAL_NC_CONFIG=8\n", "'NEURON_LOGICAL_NC_CONFIG=8'", LNC_PATH),
        ({}, "OTHER=1", "'OTHER=1'", LNC_PATH),
        ({}, "", "''", LNC_PATH),
    ],
)
def test_read_lnc_rejects(
    tmp_path: Path, env: dict[str, str], file: str | None, quoted: str, source: str
) -> None:
    root = fake_root(tmp_path, lnc_file=file)
    with pytest.raises(TopologyError) as info:
        read_lnc(env, root)
    message = str(info.value)
    assert "\n" not in message
    assert quoted in message
    assert source in message
    assert "expected 1" in message


def test_read_lnc_rejects_an_unreadable_file(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (root / LNC_PATH).mkdir(parents=True)
    with pytest.raises(TopologyError, match=r"cannot read the logical NeuronCore config .*logical_nc_config"):
        read_lnc({}, root)


# --- host_from_neuron_ls --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "cores", "lnc", "instance_type", "samples"),
    [
        # samples: logical core -> (device, physical cores)
        (TRN1_32XLARGE, range(32), 1, None, {0: (0, (0,)), 5: (2, (5,)), 31: (15, (31,))}),
        (
            TRN2_48XLARGE_LNC2,
            range(64),
            2,
            "trn2.48xlarge",
            {0: (0, (0, 1)), 5: (1, (10, 11)), 63: (15, (126, 127))},
        ),
        (INF2_XLARGE, range(2), 1, None, {1: (0, (1,))}),
        (
            neuron_ls_json(2, 8, lnc=1, instance_type="trn2.3xlarge"),
            range(16),
            1,
            "trn2.3xlarge",
            {9: (1, (9,))},
        ),
    ],
    ids=["trn1.32xlarge", "trn2.48xlarge-lnc2", "inf2.xlarge", "trn2-lnc1"],
)
def test_host_from_neuron_ls(
    output: str,
    cores: range,
    lnc: int,
    instance_type: str | None,
    samples: dict[int, tuple[int, tuple[int, ...]]],
) -> None:
    host = host_from_neuron_ls(output, {})
    assert host.cores == tuple(cores)
    assert host.lnc == lnc
    assert host.source == "neuron-ls"
    assert host.instance_type == instance_type
    assert set(host.physical) == set(host.device_of) == set(cores)
    for core, (device, physical) in samples.items():
        assert host.device_of[core] == device
        assert host.physical[core] == physical


def test_host_from_neuron_ls_ignores_an_lnc_variable_it_does_not_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="pytest_neuron"):
        host = host_from_neuron_ls(TRN1_32XLARGE, {"NEURON_LOGICAL_NC_CONFIG": "2"})
    assert host.lnc == 1
    assert host.physical[5] == (5,)
    assert "ignoring NEURON_LOGICAL_NC_CONFIG=2" in caplog.text


def _device(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = json.loads(INF2_XLARGE)[0]
    entry.update(changes)
    return {key: value for key, value in entry.items() if value != "<absent>"}


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("", "not JSON"),
        ("neuron-ls: command output", "not JSON"),
        ('{"neuron_device": 0}', "the top level is not a list"),
        ("[]", "it lists no NeuronCore"),
        ("[1]", "device entry 1 is not an object"),
        (json.dumps([_device(neuron_device="<absent>")]), "neuron_device None is not an index"),
        (json.dumps([_device(neuron_device=-1)]), "neuron_device -1 is not an index"),
        (json.dumps([_device(neuron_device=True)]), "neuron_device True is not an index"),
        (json.dumps([_device(neuroncore_ids="0-1")]), "device 0 has neuroncore_ids '0-1'"),
        (json.dumps([_device(neuroncore_ids="<absent>")]), "device 0 has neuroncore_ids None"),
        (json.dumps([_device(neuroncore_ids=[0, -1], nc_count=2)]), "neuroncore_ids [0, -1]"),
        (json.dumps([_device(nc_count=4)]), "device 0 has nc_count 4 but 2 neuroncore_ids"),
        (json.dumps([_device(logical_neuroncore_config=4)]), "logical_neuroncore_config 4"),
        (
            json.dumps(
                [
                    _device(logical_neuroncore_config=1),
                    _device(neuron_device=1, neuroncore_ids=[2, 3], logical_neuroncore_config=2),
                ]
            ),
            "devices disagree on logical_neuroncore_config ([1, 2])",
        ),
        (json.dumps([_device(), _device(neuron_device=1)]), "core 0 is listed by devices 0 and 1"),
        (json.dumps([_device(neuroncore_ids=[], nc_count=0)]), "it lists no NeuronCore"),
    ],
)
def test_host_from_neuron_ls_rejects(output: str, why: str) -> None:
    with pytest.raises(TopologyError) as info:
        host_from_neuron_ls(output, {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unusable neuron-ls output ")
    assert why in message
    assert "expected a JSON list of device objects" in message


def test_host_from_neuron_ls_accepts_a_string_lnc() -> None:
    output = json.dumps([_device(logical_neuroncore_config="2")])
    assert host_from_neuron_ls(output, {}).physical[1] == (2, 3)


# --- detect_with_neuron_ls ------------------------------------------------------------------------


def test_detect_with_neuron_ls_runs_the_command(tmp_path: Path) -> None:
    command = printing_command(tmp_path / "bin", "neuron-ls", TRN2_48XLARGE_LNC2)
    host = detect_with_neuron_ls((str(command), "--json-output"), {"PATH": ""})
    assert host is not None
    assert host.cores == tuple(range(64))
    assert host.physical[5] == (10, 11)


def test_detect_with_neuron_ls_finds_the_default_command_on_path(tmp_path: Path) -> None:
    printing_command(tmp_path / "bin", "neuron-ls", INF2_XLARGE)
    host = detect_with_neuron_ls(None, {"PATH": str(tmp_path / "bin")}, root=tmp_path / "nowhere")
    assert host is not None
    assert host.cores == (0, 1)


def test_detect_with_neuron_ls_falls_back_to_the_neuron_bin_directory(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    printing_command(root / "opt/aws/neuron/bin", "neuron-ls", TRN1_32XLARGE)
    host = detect_with_neuron_ls(None, {"PATH": str(tmp_path / "empty")}, root=root)
    assert host is not None
    assert len(host.cores) == 32


def test_detect_with_neuron_ls_passes_the_environment(tmp_path: Path) -> None:
    (tmp_path / "lnc1.json").write_text(neuron_ls_json(1, 8, lnc=1))
    (tmp_path / "lnc2.json").write_text(neuron_ls_json(1, 4, lnc=2))
    command = fake_command(
        tmp_path / "bin", "neuron-ls", f"/bin/cat '{tmp_path}'/lnc$NEURON_LOGICAL_NC_CONFIG.json"
    )
    host = detect_with_neuron_ls((str(command),), {"PATH": "", "NEURON_LOGICAL_NC_CONFIG": "1"})
    assert host is not None
    assert (len(host.cores), host.lnc) == (8, 1)


@pytest.mark.parametrize(
    ("body", "level", "logged"),
    [
        (
            "echo 'neuron-ls: driver not loaded' >&2\nexit 1",
            logging.WARNING,
            "exited with status 1: neuron-ls: driver not loaded",
        ),
        ("exit 3", logging.WARNING, "exited with status 3; trying /dev/neuron*"),
        ("echo 'not json'", logging.WARNING, "unusable neuron-ls output 'not json': not JSON"),
        ("echo '[]'", logging.WARNING, "it lists no NeuronCore"),
    ],
    ids=["exit-1", "exit-3-silent", "bad-output", "no-devices"],
)
def test_detect_with_neuron_ls_gives_none_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, body: str, level: int, logged: str
) -> None:
    command = fake_command(tmp_path / "bin", "neuron-ls", body)
    with caplog.at_level(logging.DEBUG, logger="pytest_neuron"):
        assert detect_with_neuron_ls((str(command), "--json-output"), {"PATH": ""}) is None
    assert [(r.levelno, r.name) for r in caplog.records] == [(level, "pytest_neuron")]
    assert logged in caplog.text


@pytest.mark.parametrize("command", [None, ("missing-neuron-ls",), ("/nonexistent/neuron-ls", "-j")])
def test_detect_with_neuron_ls_gives_none_when_the_command_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, command: tuple[str, ...] | None
) -> None:
    with caplog.at_level(logging.DEBUG, logger="pytest_neuron"):
        assert detect_with_neuron_ls(command, {"PATH": str(tmp_path)}, root=tmp_path) is None
    assert "command not found" in caplog.text


def test_detect_with_neuron_ls_gives_up_after_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detect, "NEURON_LS_TIMEOUT", 0.2)
    command = fake_command(tmp_path / "bin", "neuron-ls", "exec /bin/sleep 30")
    assert detect_with_neuron_ls((str(command),), {"PATH": ""}) is None
    assert "timed out after 0.2 seconds" in caplog.text


def test_detect_with_neuron_ls_reports_a_command_that_cannot_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    command = tmp_path / "neuron-ls"
    command.write_text("#!/nonexistent/interpreter\n")
    command.chmod(0o755)
    assert detect_with_neuron_ls((str(command),), {"PATH": ""}) is None
    assert "cannot run" in caplog.text


# --- detect_with_dev ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dev:
    """One fake ``/dev`` host and what ``detect_with_dev`` must find on it."""

    devices: Sequence[int]
    product: str | None
    cores: Sequence[int]
    lnc: int
    source: str
    lnc_file: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    core_count: Mapping[int, str] | None = None
    #: logical core -> (device, physical cores)
    samples: Mapping[int, tuple[int, tuple[int, ...]]] = field(default_factory=dict)


LNC1 = {"NEURON_LOGICAL_NC_CONFIG": "1"}
LNC2 = {"NEURON_LOGICAL_NC_CONFIG": "2"}
TRN1_SOURCE = "/dev/neuron* x 2 cores (trn1.32xlarge)"
TRN2_SOURCE = "/dev/neuron* x 8 cores (trn2.48xlarge, LNC=2)"


@pytest.mark.parametrize(
    "case",
    [
        Dev(range(16), "trn1.32xlarge", range(32), 1, TRN1_SOURCE, samples={5: (2, (5,))}),
        Dev(range(16), "trn1n.32xlarge", range(32), 1, "/dev/neuron* x 2 cores (trn1n.32xlarge)"),
        Dev(range(1), "trn1.2xlarge", range(2), 1, "/dev/neuron* x 2 cores (trn1.2xlarge)"),
        Dev(
            range(16),
            "trn2.48xlarge",
            range(64),
            2,
            TRN2_SOURCE,
            samples={5: (1, (10, 11)), 63: (15, (126, 127))},
        ),
        Dev(range(16), "trn2u.48xlarge", range(64), 2, "/dev/neuron* x 8 cores (trn2u.48xlarge, LNC=2)"),
        Dev(
            range(16),
            "trn2.48xlarge",
            range(128),
            1,
            "/dev/neuron* x 8 cores (trn2.48xlarge, LNC=1)",
            lnc_file="NEURON_LOGICAL_NC_CONFIG=1\n",
            samples={5: (0, (5,)), 127: (15, (127,))},
        ),
        Dev(range(16), "trn2.48xlarge", range(64), 2, TRN2_SOURCE, lnc_file="1", env=LNC2),
        Dev(range(1), "trn2.3xlarge", range(8), 1, "/dev/neuron* x 8 cores (trn2.3xlarge, LNC=1)", env=LNC1),
        Dev(range(4), "trn3.48xlarge", range(16), 2, "/dev/neuron* x 8 cores (trn3.48xlarge, LNC=2)"),
        Dev(range(1), "inf1.xlarge", range(4), 1, "/dev/neuron* x 4 cores (inf1.xlarge)"),
        Dev(range(1), "inf2.xlarge", range(2), 1, "/dev/neuron* x 2 cores (inf2.xlarge)"),
        Dev(range(12), "inf2.48xlarge", range(24), 1, "/dev/neuron* x 2 cores (inf2.48xlarge)"),
        # LNC is ignored outside trn2/trn3, even when it is invalid.
        Dev(
            range(16),
            "trn1.32xlarge",
            range(32),
            1,
            TRN1_SOURCE,
            lnc_file="2",
            env={"NEURON_LOGICAL_NC_CONFIG": "7"},
            samples={31: (15, (31,))},
        ),
        # A container sees some devices: logical ids follow the device index in the name.
        Dev((3, 5), "trn1.32xlarge", (6, 7, 10, 11), 1, TRN1_SOURCE, samples={6: (3, (6,)), 11: (5, (11,))}),
        Dev((1,), "trn2.48xlarge", (4, 5, 6, 7), 2, TRN2_SOURCE, samples={5: (1, (10, 11))}),
        # Unknown or missing instance type: physical cores per device from sysfs core_count.
        Dev(
            range(2),
            "m5.large",
            range(4),
            1,
            "/dev/neuron* x 2 cores (sysfs core_count)",
            core_count={0: "2\n", 1: "2\n"},
        ),
        Dev(
            range(2),
            None,
            range(8),
            2,
            "/dev/neuron* x 8 cores (sysfs core_count, LNC=2)",
            core_count={0: "8", 1: "8"},
        ),
        Dev(
            range(2),
            None,
            range(16),
            1,
            "/dev/neuron* x 8 cores (sysfs core_count, LNC=1)",
            env=LNC1,
            core_count={0: "8", 1: "8"},
            samples={9: (1, (9,))},
        ),
        Dev(
            range(2),
            "",
            range(8),
            1,
            "/dev/neuron* x 4 cores (sysfs core_count)",
            env=LNC2,
            core_count={0: "4", 1: "4"},
        ),
    ],
    ids=lambda case: f"{len(case.devices)}x{case.product}-lnc{case.lnc}",
)
def test_detect_with_dev(tmp_path: Path, case: Dev) -> None:
    root = fake_root(
        tmp_path,
        devices=case.devices,
        product_name=case.product,
        lnc_file=case.lnc_file,
        core_count=case.core_count,
    )
    host = detect_with_dev(root, case.env)
    assert host is not None
    assert host.cores == tuple(case.cores)
    assert host.lnc == case.lnc
    assert host.source == case.source
    assert host.instance_type == (case.product or None)
    assert set(host.physical) == set(host.device_of) == set(case.cores)
    assert all(len(physical) == case.lnc for physical in host.physical.values())
    for core, (device, physical) in case.samples.items():
        assert host.device_of[core] == device
        assert host.physical[core] == physical


def test_detect_with_dev_ignores_other_names(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        devices=[0, 1],
        product_name="inf2.24xlarge",
        other_dev=["neuron_foo", "neuron", "neuronx", "neuron01", "neuron-1", "null", "nvidia0"],
    )
    host = detect_with_dev(root, {})
    assert host is not None
    assert host.cores == (0, 1, 2, 3)


def test_detect_with_dev_counts_devices_in_dev_not_sysfs(tmp_path: Path) -> None:
    everything = dict.fromkeys(range(16), "2")
    root = fake_root(tmp_path, devices=[7], product_name="trn1.32xlarge", core_count=everything)
    host = detect_with_dev(root, {})
    assert host is not None
    assert host.cores == (14, 15)


@pytest.mark.parametrize(
    ("product", "core_count"),
    [
        ("m5.large", None),
        (None, None),
        (None, {0: "2"}),
        (None, {0: "2", 1: "8"}),
        (None, {0: "two", 1: "two"}),
        (None, {0: "0", 1: "0"}),
    ],
    ids=["unknown-family", "no-product", "one-unreadable", "differ", "not-a-number", "zero"],
)
def test_detect_with_dev_gives_none_without_a_core_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, product: str | None, core_count: dict[int, str] | None
) -> None:
    root = fake_root(tmp_path, devices=[0, 1], product_name=product, core_count=core_count)
    assert detect_with_dev(root, {}) is None
    assert "found 2 /dev/neuron* device(s) but not their core count" in caplog.text
    assert "--neuron-cores" in caplog.text


@pytest.mark.parametrize("make_dev", [True, False])
def test_detect_with_dev_gives_none_without_devices(tmp_path: Path, make_dev: bool) -> None:
    root = fake_root(tmp_path, product_name="trn1.32xlarge", other_dev=["null"]) if make_dev else tmp_path
    assert detect_with_dev(root, {}) is None


def test_detect_with_dev_rejects_a_bad_lnc_on_trn2(tmp_path: Path) -> None:
    root = fake_root(tmp_path, devices=[0], product_name="trn2.3xlarge", lnc_file="4")
    with pytest.raises(TopologyError, match=r"invalid logical NeuronCore config '4' in .*logical_nc_config"):
        detect_with_dev(root, {})


# --- detect_host ----------------------------------------------------------------------------------


def test_detect_host_prefers_neuron_ls(tmp_path: Path) -> None:
    root = fake_root(tmp_path, devices=range(16), product_name="trn1.32xlarge")
    command = printing_command(tmp_path / "bin", "neuron-ls", TRN1_32XLARGE)
    host = detect_host(root, (str(command), "--json-output"), {"PATH": ""})
    assert host is not None
    assert host.source == "neuron-ls"
    assert host.instance_type == "trn1.32xlarge"  # from DMI: this neuron-ls does not print it


def test_detect_host_keeps_the_instance_type_neuron_ls_prints(tmp_path: Path) -> None:
    root = fake_root(tmp_path, devices=range(16), product_name="something-else")
    command = printing_command(tmp_path / "bin", "neuron-ls", TRN2_48XLARGE_LNC2)
    host = detect_host(root, (str(command),), {"PATH": ""})
    assert host is not None
    assert host.instance_type == "trn2.48xlarge"


@pytest.mark.parametrize("how", ["fails", "missing", "skipped", "default-not-on-path"])
def test_detect_host_falls_back_to_dev(tmp_path: Path, how: str) -> None:
    root = fake_root(tmp_path, devices=[0], product_name="inf2.xlarge")
    failing = fake_command(tmp_path / "bin", "neuron-ls", "exit 1")
    neuron_ls: tuple[str, ...] | None = {
        "fails": (str(failing),),
        "missing": (str(tmp_path / "missing"),),
        "skipped": None,
        "default-not-on-path": detection.DEFAULT_NEURON_LS,
    }[how]
    host = detect_host(root, neuron_ls, {"PATH": str(tmp_path / "empty")})
    assert host is not None
    assert host.source == "/dev/neuron* x 2 cores (inf2.xlarge)"


def test_detect_host_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", "1")
    root = fake_root(tmp_path, devices=[0], product_name="trn2.3xlarge")
    host = detect_host(root)
    assert host is not None
    assert (len(host.cores), host.lnc) == (8, 1)


def test_detect_host_finds_nothing_on_an_empty_root(tmp_path: Path) -> None:
    assert detect_host(tmp_path, None, {}) is None


# --- resolve_topology -----------------------------------------------------------------------------


TRN2_HOST = host_from_neuron_ls(TRN2_48XLARGE_LNC2, {})
TRN1_HOST = host_from_neuron_ls(TRN1_32XLARGE, {})


class Detect:
    """A fake ``detect`` that counts its calls."""

    def __init__(self, host: Host | None) -> None:
        self.host = host
        self.calls = 0

    def __call__(self) -> Host | None:
        self.calls += 1
        return self.host


def must_not_detect() -> Host | None:
    raise AssertionError("an explicit pool must not run detection")


def resolve(
    env: Mapping[str, str],
    detect: Callable[[], Host | None],
    explicit: tuple[str, str] | None = None,
) -> Topology | None:
    return resolve_topology(explicit=explicit, env=env, detect=detect)


@pytest.mark.parametrize(
    ("explicit", "env", "cores", "lnc", "source"),
    [
        (("0-3", "--neuron-cores"), {}, range(4), 1, "--neuron-cores=0-3"),
        ((" 4-7 ", "ini neuron_cores"), {}, range(4, 8), 1, "ini neuron_cores=4-7"),
        (("0-3", "--neuron-cores"), {"NEURON_LOGICAL_NC_CONFIG": "2"}, range(4), 2, "--neuron-cores=0-3"),
        (("0-3", "--neuron-cores"), {"NEURON_RT_VISIBLE_CORES": "0-7"}, range(4), 1, "--neuron-cores=0-3"),
        (("2,3", "--neuron-cores"), {"NEURON_RT_VISIBLE_CORES": "2-3"}, (2, 3), 1, "--neuron-cores=2,3"),
        (("0-1", "--neuron-cores"), {"NEURON_RT_NUM_CORES": "nonsense"}, range(2), 1, "--neuron-cores=0-1"),
        (("100-101", "--neuron-cores"), {}, (100, 101), 1, "--neuron-cores=100-101"),
    ],
)
def test_resolve_trusts_an_explicit_pool(
    explicit: tuple[str, str], env: dict[str, str], cores: range | tuple[int, ...], lnc: int, source: str
) -> None:
    result = resolve(env, must_not_detect, explicit)
    assert result is not None
    assert result.cores == tuple(cores)
    assert result.lnc == lnc
    assert result.source == source
    assert result.physical == {c: tuple(range(c * lnc, c * lnc + lnc)) for c in cores}
    assert result.device_of == {}
    assert result.limit is None


def test_resolve_explicit_pool_maps_physical_cores_at_lnc_2() -> None:
    result = resolve({"NEURON_LOGICAL_NC_CONFIG": "2"}, must_not_detect, ("5", "--neuron-cores"))
    assert result is not None
    assert result.physical[5] == (10, 11)


def test_resolve_uses_an_inherited_visible_cores_with_the_host_mapping() -> None:
    detect = Detect(TRN2_HOST)
    result = resolve({"NEURON_RT_VISIBLE_CORES": " 4-7 ", "NEURON_RT_NUM_CORES": "1"}, detect)
    assert detect.calls == 1
    assert result is not None
    assert result.cores == (4, 5, 6, 7)
    assert result.physical[5] == (10, 11)
    assert result.device_of == {4: 1, 5: 1, 6: 1, 7: 1}
    assert (result.lnc, result.instance_type, result.limit) == (2, "trn2.48xlarge", None)
    assert result.source == "NEURON_RT_VISIBLE_CORES=4-7 of neuron-ls"


@pytest.mark.parametrize(
    ("env", "cores", "lnc"),
    [
        ({"NEURON_RT_VISIBLE_CORES": "2,3"}, (2, 3), 1),
        ({"NEURON_RT_VISIBLE_CORES": "51-52", "NEURON_LOGICAL_NC_CONFIG": "2"}, (51, 52), 2),
    ],
)
def test_resolve_uses_visible_cores_as_given_without_a_host(
    env: dict[str, str], cores: tuple[int, ...], lnc: int
) -> None:
    result = resolve(env, Detect(None))
    assert result is not None
    assert result.cores == cores
    assert result.lnc == lnc
    assert result.source == f"NEURON_RT_VISIBLE_CORES={env['NEURON_RT_VISIBLE_CORES']}"
    assert result.physical[cores[0]] == tuple(range(cores[0] * lnc, cores[0] * lnc + lnc))


def test_resolve_with_num_cores_limits_the_detected_pool() -> None:
    detect = Detect(TRN1_HOST)
    result = resolve({"NEURON_RT_NUM_CORES": " 4 "}, detect)
    assert detect.calls == 1
    assert result is not None
    assert result.cores == tuple(range(32))
    assert (result.limit, result.size) == (4, 4)
    assert result.source == "NEURON_RT_NUM_CORES=4 of neuron-ls"


@pytest.mark.parametrize(
    "env", [{}, {"NEURON_RT_NUM_CORES": "0"}, {"NEURON_RT_NUM_CORES": ""}, {"NEURON_RT_VISIBLE_CORES": "  "}]
)
def test_resolve_takes_every_detected_core(env: dict[str, str]) -> None:
    detect = Detect(TRN2_HOST)
    result = resolve(env, detect)
    assert detect.calls == 1
    assert result is not None
    assert result.cores == tuple(range(64))
    assert result.physical[5] == (10, 11)
    assert result.device_of[63] == 15
    assert (result.source, result.lnc, result.limit, result.size) == ("neuron-ls", 2, None, 64)


@pytest.mark.parametrize("env", [{}, {"NEURON_RT_NUM_CORES": "0"}, {"NEURON_LOGICAL_NC_CONFIG": "2"}])
def test_resolve_finds_nothing(env: dict[str, str]) -> None:
    detect = Detect(None)
    assert resolve(env, detect) is None
    assert detect.calls == 1


@pytest.mark.parametrize(
    ("explicit", "env", "host", "parts"),
    [
        (("0-3,", "--neuron-cores"), {}, None, ["'0-3,'", "from --neuron-cores", "expected an index"]),
        (("", "ini neuron_cores"), {}, None, ["''", "from ini neuron_cores", "it is empty"]),
        (
            ("0-7", "--neuron-cores"),
            {"NEURON_RT_VISIBLE_CORES": "0-3"},
            None,
            ["--neuron-cores '0-7'", "names core 4", "NEURON_RT_VISIBLE_CORES='0-3'", "within 0-3"],
        ),
        (
            ("0", "--neuron-cores"),
            {"NEURON_RT_VISIBLE_CORES": "x"},
            None,
            ["'x'", "environment variable NEURON_RT_VISIBLE_CORES", "not an index or a range"],
        ),
        (
            ("0", "--neuron-cores"),
            {"NEURON_LOGICAL_NC_CONFIG": "3"},
            None,
            ["'3'", "environment variable NEURON_LOGICAL_NC_CONFIG", "expected 1 or 2"],
        ),
        (
            None,
            {"NEURON_RT_VISIBLE_CORES": "3-1"},
            TRN1_HOST,
            ["'3-1'", "NEURON_RT_VISIBLE_CORES", "reversed"],
        ),
        (
            None,
            {"NEURON_RT_VISIBLE_CORES": "60-64"},
            TRN2_HOST,
            ["'60-64'", "core 64 is outside the cores of neuron-ls (0-63)", "pass --neuron-cores=60-64"],
        ),
        (
            None,
            {"NEURON_RT_VISIBLE_CORES": "0", "NEURON_LOGICAL_NC_CONFIG": "x"},
            None,
            ["'x'", "NEURON_LOGICAL_NC_CONFIG"],
        ),
        (None, {"NEURON_RT_NUM_CORES": "-1"}, TRN1_HOST, ["NEURON_RT_NUM_CORES '-1'", "whole number"]),
        (None, {"NEURON_RT_NUM_CORES": "two"}, TRN1_HOST, ["'two'", "from the environment"]),
        (None, {"NEURON_RT_NUM_CORES": "1.5"}, TRN1_HOST, ["'1.5'", "0 means all"]),
        (None, {"NEURON_RT_NUM_CORES": "+2"}, TRN1_HOST, ["'+2'"]),
        (
            None,
            {"NEURON_RT_NUM_CORES": "2"},
            None,
            ["NEURON_RT_NUM_CORES=2 is set", "no Neuron device was found", "--neuron-cores"],
        ),
        (
            None,
            {"NEURON_RT_NUM_CORES": "33"},
            TRN1_HOST,
            ["NEURON_RT_NUM_CORES=33", "more cores than neuron-ls has (32: 0-31)", "at most 32"],
        ),
    ],
)
def test_resolve_errors(
    explicit: tuple[str, str] | None, env: dict[str, str], host: Host | None, parts: list[str]
) -> None:
    detect = must_not_detect if explicit is not None else Detect(host)
    with pytest.raises(TopologyError) as info:
        resolve(env, detect, explicit)
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_resolve_errors_are_value_errors() -> None:
    assert issubclass(TopologyError, ValueError)


def test_resolve_chain_with_real_providers(tmp_path: Path) -> None:
    root = fake_root(tmp_path, devices=[2, 3], product_name="trn2.48xlarge")
    env = {"PATH": str(tmp_path / "empty"), "NEURON_RT_VISIBLE_CORES": "9-10"}
    result = resolve_topology(explicit=None, env=env, detect=lambda: detect_host(root, None, env))
    assert result is not None
    assert result.cores == (9, 10)
    assert result.physical == {9: (18, 19), 10: (20, 21)}
    assert result.device_of == {9: 2, 10: 2}
    assert result.source == "NEURON_RT_VISIBLE_CORES=9-10 of /dev/neuron* x 8 cores (trn2.48xlarge, LNC=2)"
