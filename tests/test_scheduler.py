"""The xdist scheduler's state machine (pytest_neuron/scheduler.py), driven with fake workers.

A fake worker records what the scheduler sends it, and starts a test the way xdist's workers do:
once the test after it (or the shutdown) has arrived.  No process, no xdist session.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_neuron.core.ordering import ranking
from pytest_neuron.plugins.scheduler import (
    CoreModel,
    NeuronScheduling,
    horizon,
    read_core_counts,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


class FakeNode:
    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.done: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: Sequence[int]) -> None:
        assert not self.shutting_down, "a test sent after the shutdown"
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True

    @property
    def outstanding(self) -> list[int]:
        return self.sent[len(self.done) :]

    @property
    def running(self) -> int | None:
        """The test it runs: its first outstanding one, once another (or the shutdown) is behind it."""
        out = self.outstanding
        if len(out) >= 2 or (len(out) == 1 and self.shutting_down):
            return out[0]
        return None


class FakeConfig:
    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.hook = SimpleNamespace(pytest_collectreport=self.collectreport)

    def collectreport(self, *, report: Any) -> None:
        self.reports.append(report)


def ids_of(n: int) -> list[str]:
    return [f"test_x.py::test_{i}" for i in range(n)]


def make(
    cores: Sequence[int],
    workers: int,
    *,
    pool: int = 8,
    order: str = "biggest-first",
    seconds: Sequence[float] | None = None,
    now: list[float] | None = None,
    counts: bool = True,
    config: Any = None,
) -> tuple[NeuronScheduling, list[FakeNode]]:
    clock = now if now is not None else [0.0]
    sched = NeuronScheduling(
        config,
        numnodes=workers,
        model=CoreModel(range(pool), {}, None),
        counts=(lambda node, ids: list(cores)) if counts else (lambda node, ids: None),
        rank=lambda ids, ks: (
            ranking(order, ks, seconds, pool=pool),
            None if seconds is None else list(seconds),
        ),
        clock=lambda: clock[0],
    )
    nodes = [FakeNode(f"gw{i}") for i in range(workers)]
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        sched.add_node_collection(node, ids_of(len(cores)))
    assert sched.collection_is_completed
    sched.schedule()
    return sched, nodes


def complete(sched: NeuronScheduling, node: FakeNode) -> int:
    index = node.running
    assert index is not None, f"{node.gateway.id} runs nothing"
    node.done.append(index)
    sched.mark_test_complete(node, index, 0.1)
    return index


def run_out(sched: NeuronScheduling, nodes: Sequence[FakeNode], rng: random.Random | None = None) -> None:
    """Complete tests (the first busy worker's, or a random one's) until the run is over."""
    while True:
        busy = [n for n in nodes if n.running is not None]
        if not busy:
            assert sched.tests_finished, "deadlock: tests are left but none runs"
            return
        complete(sched, rng.choice(busy) if rng else busy[0])


def assert_holds_what_it_may(node: FakeNode, cores: Sequence[int]) -> None:
    """The test it runs, then at most one chained test no wider than it, then one parked test."""
    out = node.outstanding
    assert len(out) <= 3, out
    if len(out) == 3:
        assert cores[out[1]] <= cores[out[0]], out


def running_cores(nodes: Sequence[FakeNode], cores: Sequence[int]) -> int:
    return sum(cores[n.running] for n in nodes if n.running is not None)


# -- hand-out -------------------------------------------------------------------------------------
def test_a_test_that_does_not_fit_is_neither_started_nor_queued_behind_one() -> None:
    cores = [8, 8, 1, 1]
    sched, (a, b) = make(cores, 2)
    # the first 8-core test runs on gw0, the second 8-core test waits behind it on the same worker;
    # gw1 gets nothing: a 1-core test would not fit while the pool is full
    assert a.sent == [0, 1]
    assert a.running == 0
    assert b.sent == []
    assert complete(sched, a) == 0
    assert a.sent == [0, 1, 2]
    assert a.running == 1
    assert b.sent == []
    complete(sched, a)
    # now both 1-core tests run: gw0's parked one, and the other on gw1 (not parked behind gw0's);
    # nothing is left to follow them: both workers are told to finish
    assert a.running == 2
    assert b.running == 3
    assert a.shutting_down
    assert b.shutting_down
    assert sched.tests_finished
    complete(sched, a)
    complete(sched, b)
    assert not sched.has_pending


def test_no_worker_ever_holds_more_than_the_test_it_runs_and_the_one_after() -> None:
    cores = [1] * 30
    sched, nodes = make(cores, 3)
    rng = random.Random(1)
    while any(n.running is not None for n in nodes):
        for node in nodes:
            assert len(node.outstanding) <= 2  # without durations nothing is chained
        complete(sched, rng.choice([n for n in nodes if n.running is not None]))
    assert sched.tests_finished
    assert sorted(i for n in nodes for i in n.done) == list(range(30))


def test_an_empty_collection_finishes_at_once() -> None:
    sched, nodes = make([], 2)
    assert sched.tests_finished
    assert all(n.sent == [] for n in nodes)


def test_without_core_counts_every_test_counts_one_core_and_the_run_says_so() -> None:
    sched, (a, b) = make([8, 8], 2, counts=False)
    assert sched.cores == [1, 1]
    assert a.running is not None
    assert b.running is not None
    assert sched.problems == [
        "the workers' core counts did not reach the scheduler; it counted every test as 1 core"
    ]


def test_when_nothing_runs_the_best_test_starts_even_if_the_model_says_it_does_not_fit() -> None:
    # a limit (NEURON_RT_NUM_CORES) below the request: the lease layer, not the scheduler, decides
    sched = NeuronScheduling(
        None,
        numnodes=1,
        model=CoreModel(range(8), {}, 2),
        counts=lambda node, ids: [4],
        rank=lambda ids, ks: ([0], None),
    )
    node = FakeNode("gw0")
    sched.add_node(node)
    sched.add_node_collection(node, ids_of(1))
    sched.schedule()
    assert node.running == 0


# -- durations ------------------------------------------------------------------------------------
def test_small_tests_use_the_reserved_cores_only_when_they_end_before_the_big_test_can_start() -> None:
    now = [0.0]
    # ranked: a 4-core 10 s test, then an 8-core test (must wait for it), then a 2-core 20 s test,
    # then a 2-core 1 s test
    cores = [4, 8, 2, 2]
    seconds = [10.0, 1.0, 20.0, 1.0]
    sched = NeuronScheduling(
        None,
        numnodes=3,
        model=CoreModel(range(8), {}, None),
        counts=lambda node, ids: cores,
        rank=lambda ids, ks: ([0, 1, 2, 3], seconds),
        clock=lambda: now[0],
    )
    nodes = [FakeNode(f"gw{i}") for i in range(3)]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, ids_of(4))
    sched.schedule()
    running = {n.running for n in nodes} - {None}
    # test 0 runs; test 1 (8 cores) waits behind it on its worker; the whole pool is reserved for it,
    # so the 20 s test may not start, and the 1 s one may (it ends before test 0 does)
    assert 0 in running
    assert 2 not in running
    assert 3 in running


def test_the_successor_of_a_long_test_is_one_that_can_end_by_the_horizon() -> None:
    # one 10 s test, one 9 s test, and short ones, on 4 workers: parking the 9 s test behind the 10 s
    # test would end the run at 19 s; the horizon (10 s) asks for a short successor
    cores = [1] * 6
    seconds = [10.0, 9.0, 1.0, 1.0, 1.0, 1.0]
    _sched, nodes = make(cores, 4, order="durations", seconds=seconds)
    first = next(n for n in nodes if n.running == 0)
    assert first.outstanding[1] != 1
    assert any(n.running == 1 for n in nodes)


def test_with_durations_a_narrow_successor_starts_without_a_round_trip() -> None:
    now = [0.0]
    cores = [2, 1, 1, 1, 1]
    seconds = [1.0, 0.5, 0.5, 0.5, 0.5]
    sched, (a,) = make(cores, 1, order="durations", seconds=seconds, now=now)
    # the 2-core test runs, a 1-core test is chained behind it (sent with the test after it)
    assert a.running == 0
    assert len(a.outstanding) == 3
    assert cores[a.outstanding[1]] == 1
    now[0] = 1.0
    complete(sched, a)
    assert a.running is not None  # it started at once: nothing had to be sent for it
    assert len(sched.model.held[a]) == 1  # the model counts it in one of the 2-core test's cores
    assert set(sched.model.held[a]) < {0, 1}
    run_out(sched, [a])
    assert sorted(a.done) == [0, 1, 2, 3, 4]


def test_nothing_is_chained_into_cores_a_waiting_test_reserved() -> None:
    # an 8-core test waits for the 4-core test's cores: the successor parked behind the 4-core test
    # must not start by itself in them
    cores = [4, 8, 2, 2, 2]
    seconds = [10.0, 1.0, 20.0, 20.0, 20.0]
    sched = NeuronScheduling(
        None,
        numnodes=2,
        model=CoreModel(range(8), {}, None),
        counts=lambda node, ids: cores,
        rank=lambda ids, ks: ([0, 1, 2, 3, 4], seconds),
        clock=lambda: 0.0,
    )
    nodes = [FakeNode("gw0"), FakeNode("gw1")]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, ids_of(5))
    sched.schedule()
    for node in nodes:
        assert len(node.outstanding) <= 2, node.outstanding


def test_horizon_is_the_lower_bound() -> None:
    assert horizon([1, 1, 1, 1], [1.0, 1.0, 1.0, 1.0], 2, 4) == 2.0  # core-seconds / pool
    assert horizon([1, 1, 1, 1], [1.0, 1.0, 1.0, 1.0], 8, 2) == 2.0  # seconds / workers
    assert horizon([1, 1], [5.0, 1.0], 8, 4) == 5.0  # the longest
    assert horizon([8, 1], [3.0, 1.0], 8, 4) == 4.0  # more than half the pool runs alone
    assert horizon([8], [3.0], 8, 4) == 3.0


# -- failures -------------------------------------------------------------------------------------
def test_a_crashed_worker_returns_the_test_it_ran_and_its_parked_test_runs_elsewhere() -> None:
    cores = [1, 1, 1, 1]
    sched, (a, b) = make(cores, 2, pool=2)
    crashed = a.running
    parked = a.outstanding[1]
    assert sched.remove_node(a) == sched.collection[crashed]  # type: ignore[index]
    assert parked not in a.done
    run_out(sched, [b])
    assert sorted(b.done) == sorted(set(range(4)) - {crashed})


def test_a_worker_lost_while_idle_blames_no_test() -> None:
    cores = [2, 2]
    sched, (a, b) = make(cores, 2, pool=2)
    idle = a if a.running is None else b
    other = b if idle is a else a
    if idle.outstanding:  # its parked test did not run: it goes back to the queue
        parked = idle.outstanding[0]
        assert sched.remove_node(idle) is None
        run_out(sched, [other])
        assert parked in other.done
    else:
        assert sched.remove_node(idle) is None


def test_a_replacement_worker_takes_over_the_tests_of_a_crashed_one() -> None:
    cores = [1] * 6
    sched, (a,) = make(cores, 1)
    complete(sched, a)
    crashed = a.running
    assert crashed is not None
    sched.remove_node(a)
    assert not sched.tests_finished  # its parked test and the rest are still to run
    replacement = FakeNode("gw1")
    sched.add_node(replacement)
    sched.add_node_collection(replacement, ids_of(6))
    sched.schedule()
    run_out(sched, [replacement])
    assert sorted(a.done + replacement.done + [crashed]) == list(range(6))


def test_a_test_marked_pending_after_a_crash_runs_again_on_the_replacement() -> None:
    cores = [1, 1, 1]
    sched, (a,) = make(cores, 1)
    crashed = a.running
    assert crashed is not None
    item = sched.remove_node(a)
    assert item == ids_of(3)[crashed]
    sched.mark_test_pending(item)  # what pytest_handlecrashitem does to retry it (pytest-rerunfailures)
    replacement = FakeNode("gw1")
    sched.add_node(replacement)
    sched.add_node_collection(replacement, ids_of(3))
    sched.schedule()
    run_out(sched, [replacement])
    assert sorted(replacement.done) == [0, 1, 2]


def test_steals_are_never_answered() -> None:
    sched, (a,) = make([1, 1], 1)
    with pytest.raises(NotImplementedError, match="never sends a steal"):
        sched.remove_pending_tests_from_node(a, [1])


def test_after_an_external_shutdown_nothing_more_is_sent() -> None:
    # --maxfail / -x: xdist shuts every worker down; their parked tests run, nothing else is handed out
    cores = [1] * 10
    sched, nodes = make(cores, 2, pool=2)
    for node in nodes:
        node.shutdown()
    sent = [list(n.sent) for n in nodes]
    while any(n.running is not None for n in nodes):
        complete(sched, next(n for n in nodes if n.running is not None))
    assert [n.sent for n in nodes] == sent
    assert sched.tests_finished is False  # the rest stays unrun: xdist ends the session on shouldstop


def test_different_collections_abort_with_one_collection_error_each() -> None:
    config = FakeConfig()
    sched = NeuronScheduling(
        config,  # type: ignore[arg-type]
        numnodes=2,
        model=CoreModel(range(8), {}, None),
        counts=lambda node, ids: [1] * len(ids),
        rank=lambda ids, ks: (list(range(len(ids))), None),
    )
    a, b = FakeNode("gw0"), FakeNode("gw1")
    for node in (a, b):
        sched.add_node(node)
    sched.add_node_collection(a, ["t::a", "t::b"])
    sched.add_node_collection(b, ["t::a", "t::c"])
    sched.schedule()
    assert a.sent == []
    assert b.sent == []
    assert sched.tests_finished
    (report,) = config.reports
    assert report.failed
    assert "Different tests were collected between gw0 and gw1" in str(report.longrepr)
    assert "-t::b" in str(report.longrepr)
    assert "+t::c" in str(report.longrepr)


def test_a_replacement_that_collected_other_tests_is_shut_down_and_reported() -> None:
    config = FakeConfig()
    sched, (a,) = make([1, 1], 1, config=config)
    sched.remove_node(a)
    late = FakeNode("gw1")
    sched.add_node(late)
    sched.add_node_collection(late, ["something::else"])
    sched.schedule()
    assert late.sent == []
    assert late.shutting_down
    assert len(config.reports) == 1


# -- the whole state machine ----------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    cores=st.lists(st.sampled_from([1, 1, 1, 2, 4, 8]), max_size=40),
    workers=st.integers(1, 6),
    order=st.sampled_from(["biggest-first", "durations", "collection"]),
    durations=st.booleans(),
    seed=st.integers(0, 2**16),
    crash_every=st.sampled_from([0, 3, 7]),
)
def test_every_test_runs_once_within_the_pool_and_the_run_ends(  # noqa: PLR0917 (hypothesis)
    cores: list[int], workers: int, order: str, durations: bool, seed: int, crash_every: int
) -> None:
    rng = random.Random(seed)
    seconds = [round(rng.uniform(0.1, 5.0), 2) for _ in cores] if durations else None
    now = [0.0]
    sched, nodes = make(cores, workers, order=order, seconds=seconds, now=now)
    ran: list[int] = []
    crashed: list[int] = []
    live = list(nodes)
    step = 0
    names = workers
    while True:
        assert running_cores(live, cores) <= 8, "the scheduler started more than the pool holds"
        busy = [n for n in live if n.running is not None]
        if not busy:
            assert sched.tests_finished, "deadlock: tests are left but none runs"
            break
        for node in live:
            assert_holds_what_it_may(node, cores)
        step += 1
        now[0] += rng.uniform(0.0, 1.0)
        node = rng.choice(busy)
        if crash_every and step % crash_every == 0:
            index = node.running
            assert index is not None
            assert sched.remove_node(node) == ids_of(len(cores))[index]
            crashed.append(index)
            live.remove(node)
            replacement = FakeNode(f"gw{names}")
            names += 1
            live.append(replacement)
            sched.add_node(replacement)
            sched.add_node_collection(replacement, ids_of(len(cores)))
            sched.schedule()
        else:
            ran.append(complete(sched, node))
    assert sorted(ran + crashed) == list(range(len(cores)))
    assert not sched.has_pending


def test_the_scheduler_counts_workers_as_xdist_does() -> None:
    from pytest_neuron.plugins.xdist import count_workers

    assert count_workers(["popen"] * 4) == 4
    assert count_workers(["3*popen", "popen//python=python3"]) == 4
    assert count_workers([]) == 0


def test_core_counts_are_read_only_for_the_same_collection(tmp_path: Path) -> None:
    (tmp_path / "gw0.json").write_text('{"ids": ["a", "b"], "cores": [1, 4]}')
    assert read_core_counts(tmp_path, "gw0", ["a", "b"]) == [1, 4]
    assert read_core_counts(tmp_path, "gw0", ["a", "c"]) is None
    assert read_core_counts(tmp_path, "gw1", ["a", "b"]) is None
    (tmp_path / "gw2.json").write_text('{"ids": ["a"], "cores": ["x"]}')
    assert read_core_counts(tmp_path, "gw2", ["a"]) is None
    (tmp_path / "gw3.json").write_text("{not json")
    assert read_core_counts(tmp_path, "gw3", ["a"]) is None


@pytest.mark.parametrize("workers", [1, 4, 16])
def test_a_full_pool_test_runs_alone(workers: int) -> None:
    cores = [1, 1, 8, 1, 8, 2]
    sched, nodes = make(cores, workers)
    seen_full = False
    while running := [n.running for n in nodes if n.running is not None]:
        if any(cores[i] == 8 for i in running):
            assert len(running) == 1
            seen_full = True
        complete(sched, next(n for n in nodes if n.running is not None))
    assert seen_full
    assert sched.tests_finished
