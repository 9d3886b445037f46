"""Every stash key of pytest-neuron, in one place, and the names users write (marker, fixture)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..core.need import Need
    from ..core.plan import RunPlan
    from .context import NeuronContext
    from .test_scope import TestCores

PLAN_KEY: pytest.StashKey[RunPlan] = pytest.StashKey()  # config: the run's plan, built once
INHERITED_KEY: pytest.StashKey[bool] = pytest.StashKey()  # config: the plan came from an xdist controller
CONTEXT_KEY: pytest.StashKey[NeuronContext] = pytest.StashKey()  # config: this process's context
NO_POOL_KEY: pytest.StashKey[bool] = pytest.StashKey()  # config: no pool, so no context
NEED_KEY: pytest.StashKey[Need] = pytest.StashKey()  # item: what it asks for, decided at collection
#: config: collection classified this process's items (an item without NEED_KEY is then unmarked)
CLASSIFIED_KEY: pytest.StashKey[bool] = pytest.StashKey()
TEST_LEASE_KEY: pytest.StashKey[TestCores] = pytest.StashKey()  # item: its lease in test scope

#: the names users write: the marker and the fixture
MARKER = "neuron"
FIXTURE = "neuron_cores"
