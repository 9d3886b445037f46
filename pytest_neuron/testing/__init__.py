"""A fake Neuron runtime for machines without Neuron hardware.

It stands in for libnrt and the Neuron driver where a pytest run can tell the
difference: ``NEURON_RT_VISIBLE_CORES`` / ``NEURON_RT_NUM_CORES`` are read and
validated once per process, the cores are reserved exclusively (one ``flock``
per physical core) until the process exits, and a busy core fails with the
runtime's "NeuronCore(s) not available" text.  Every reservation is logged, and
:func:`check_log` proves afterwards that no two processes ever held one core at
once.  ``python -m pytest_neuron.testing --help`` shows the command line.
"""

from __future__ import annotations

from pytest_neuron.testing.log import (
    LogFormatError,
    LogSummary,
    Overlap,
    Reservation,
    check_log,
    read_log,
    reservations,
    summarize_log,
)
from pytest_neuron.testing.runtime import (
    ENV_CORES,
    ENV_CORES_PER_DEVICE,
    ENV_DIR,
    ENV_LNC,
    FakeHost,
    FakeHostError,
    FakeRuntimeError,
    RuntimeBusyError,
    RuntimeConfigError,
    RuntimeHandle,
    free_cores,
    init_runtime,
    open_devices,
)

__all__ = [
    "ENV_CORES",
    "ENV_CORES_PER_DEVICE",
    "ENV_DIR",
    "ENV_LNC",
    "FakeHost",
    "FakeHostError",
    "FakeRuntimeError",
    "LogFormatError",
    "LogSummary",
    "Overlap",
    "Reservation",
    "RuntimeBusyError",
    "RuntimeConfigError",
    "RuntimeHandle",
    "check_log",
    "free_cores",
    "init_runtime",
    "open_devices",
    "read_log",
    "reservations",
    "summarize_log",
]
