"""pytest-neuron: disjoint NeuronCores for parallel pytest runs on AWS Neuron hosts."""

from __future__ import annotations

from .session import NeuronCores, NeuronWarning

__version__ = "0.1.0"
__all__ = ["NeuronCores", "NeuronWarning", "__version__"]
