"""``@pytest.mark.neuron(cores="tp_degree")``: the count from a parametrize argument, per item."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from conftest import BASE_ARGS, assert_outcomes

from pytest_neuron.core.marker import MarkerError, call_params, parse_marker

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("neuron_env")
NODE = "test_x.py::test_tp[2]"


@pytest.mark.parametrize(
    ("kwargs", "params", "cores"),
    [
        ({"cores": "tp_degree"}, {"tp_degree": 4}, 4),
        ({"cores": "world_size"}, {"world_size": 1, "model": "llama"}, 1),
    ],
)
def test_count_from_a_parameter(kwargs: dict[str, object], params: dict[str, object], cores: int) -> None:
    assert parse_marker((), kwargs, nodeid=NODE, pool_size=8, params=params).cores == cores
    assert parse_marker((kwargs["cores"],), {}, nodeid=NODE, pool_size=8, params=params).cores == cores


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (None, "cores='tp_degree' names a parameter, but this test is not parametrized"),
        (
            {"tp": 2, "batch": 1},
            "cores='tp_degree' is not a parameter of this test; its parameters: batch, tp",
        ),
        ({"tp_degree": 0}, "cores='tp_degree' (the test's parameter tp_degree=0) must be at least 1"),
        ({"tp_degree": "2"}, "cores='tp_degree' (the test's parameter tp_degree='2') is not a whole number"),
        (
            {"tp_degree": None},
            "cores='tp_degree' (the test's parameter tp_degree=None) is not a whole number",
        ),
        (
            {"tp_degree": 16},
            "cores='tp_degree' (the test's parameter tp_degree=16) is more than the pool's 8",
        ),
    ],
)
def test_bad_parameter_is_one_clear_error(params: dict[str, object] | None, message: str) -> None:
    with pytest.raises(MarkerError) as info:
        parse_marker((), {"cores": "tp_degree"}, nodeid=NODE, pool_size=8, params=params)
    text = str(info.value)
    assert text.startswith(f"@pytest.mark.neuron on {NODE}: ")
    assert message in text
    assert "\n" not in text


def test_call_params_reads_pytests_callspec(request: pytest.FixtureRequest) -> None:
    """Fails loudly if pytest stops exposing ``Function.callspec.params``."""
    assert call_params(request.node) is None
    assert call_params(object()) is None


@pytest.mark.parametrize("tp_degree", [3])
def test_call_params_of_a_parametrized_test(request: pytest.FixtureRequest, tp_degree: int) -> None:
    assert call_params(request.node) == {"tp_degree": 3}


SUITE = """
import os
import pytest

@pytest.fixture(params=[1, 2])
def world_size(request):
    return request.param

@pytest.mark.parametrize("tp_degree", [1, 2, 4, 8])
@pytest.mark.neuron(cores="tp_degree")
def test_tp(tp_degree, neuron_cores):
    # test scope: a window of exactly that size; worker scope: the worker's whole slice
    assert len(neuron_cores.cores) == (tp_degree if os.environ["SCOPE"] == "test" else 4)
    assert os.environ["NEURON_RT_VISIBLE_CORES"] == neuron_cores.visible_cores

@pytest.mark.neuron(cores="world_size")
def test_fixture_param(world_size, neuron_cores):
    assert len(neuron_cores.cores) == (world_size if os.environ["SCOPE"] == "test" else 4)

@pytest.mark.parametrize("tp_degree", [0, 16, "two"])
@pytest.mark.neuron(cores="tp_degree")
def test_bad_value(tp_degree):
    pass

@pytest.mark.parametrize("tp", [2])
@pytest.mark.neuron(cores="tp_degree")
def test_wrong_name(tp):
    pass

@pytest.mark.neuron(cores="tp_degree")
def test_not_parametrized():
    pass
"""


@pytest.mark.parametrize("scope", ["test", "worker"])
def test_counts_resolve_per_item_and_errors_fail_only_their_test(
    pytester: pytest.Pytester, lock_dir: Path, scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOPE", scope)
    pytester.makepyfile(test_params=SUITE)
    args = ["--neuron-cores=0-7", f"--neuron-scope={scope}", f"--neuron-lock-dir={lock_dir}"]
    result = pytester.runpytest_subprocess(*BASE_ARGS, "-n", "2", *args, timeout=60)
    # worker scope: each of the 2 workers has 4 cores, so test_tp[8] needs more than its worker has
    passed, failed_tp = (6, 0) if scope == "test" else (5, 1)
    assert_outcomes(result, passed=passed, errors=5 + failed_tp)
    text = result.stdout.str()
    for line in (
        "test_bad_value[0]: cores='tp_degree' (the test's parameter tp_degree=0) must be at least 1",
        "test_bad_value[16]: cores='tp_degree' (the test's parameter tp_degree=16) is more than the pool's 8",
        "test_bad_value[two]: cores='tp_degree' (the test's parameter tp_degree='two') is not a whole number",
        "test_wrong_name[2]: cores='tp_degree' is not a parameter of this test; its parameters: tp",
        "test_not_parametrized: cores='tp_degree' names a parameter, but this test is not parametrized",
    ):
        assert line in text, text
    if scope == "worker":
        assert "test_params.py::test_tp[8] needs 8 cores but its worker has 4" in text


def test_biggest_first_uses_the_resolved_counts(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("tp_degree", [1, 4, 2])
        @pytest.mark.neuron(cores="tp_degree")
        def test_tp(tp_degree, neuron_cores):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        *BASE_ARGS,
        "-v",
        "--neuron-cores=0-7",
        "--neuron-scope=test",
        f"--neuron-lock-dir={lock_dir}",
        timeout=60,
    )
    assert_outcomes(result, passed=3)
    order = [line.split()[0] for line in result.outlines if line.startswith("test_") and "PASSED" in line]
    assert order == [
        "test_biggest_first_uses_the_resolved_counts.py::test_tp[4]",
        "test_biggest_first_uses_the_resolved_counts.py::test_tp[2]",
        "test_biggest_first_uses_the_resolved_counts.py::test_tp[1]",
    ]
