"""pytest-neuron: disjoint NeuronCores for parallel pytest runs on AWS Neuron hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["NeuronCores", "NeuronWarning", "__version__"]

if TYPE_CHECKING:
    from .plugins.state import NeuronCores, NeuronWarning


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m pytest_neuron status` does not import pytest.
    if name in ("NeuronCores", "NeuronWarning"):
        from .plugins import state

        return getattr(state, name)
    raise AttributeError(f"module 'pytest_neuron' has no attribute {name!r}")
