"""The packing workload and its two references, computed from the workload alone.

* :func:`make_workload`: tests with core requests drawn from weights (1/2/4/8/32
  cores at 60/20/10/8/2 percent by default) and long-tailed (log-normal)
  durations, from a fixed seed, scaled to a given mean duration.
* :func:`lower_bound`: no schedule can beat it.
* :func:`ideal_makespan`: a zero-overhead central scheduler that knows each
  test's core count (not its duration) and, whenever cores or a worker free up,
  starts on a free worker the biggest waiting request that fits (a contiguous
  aligned window, placed as pytest-neuron places it).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_neuron.core.placement import choose_window

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

DEFAULT_MIX = {1: 60, 2: 20, 4: 10, 8: 8, 32: 2}


@dataclass(frozen=True)
class Job:
    index: int
    cores: int
    duration: float


def make_workload(
    n: int = 300,
    *,
    seed: int = 20261126,
    mean: float = 0.5,
    mix: dict[int, int] | None = None,
    sigma: float = 1.0,
) -> list[Job]:
    rng = random.Random(seed)
    weights = mix or DEFAULT_MIX
    sizes = rng.choices(list(weights), weights=list(weights.values()), k=n)
    raw = [rng.lognormvariate(0.0, sigma) for _ in range(n)]
    scale = mean / (sum(raw) / n)
    return [Job(i, c, round(d * scale, 4)) for i, (c, d) in enumerate(zip(sizes, raw, strict=False))]


def lower_bound(jobs: list[Job], pool: int, workers: int) -> float:
    """max(core-seconds / pool, seconds / workers, longest), full-pool tests counted as running alone."""
    alone = sum(j.duration for j in jobs if j.cores >= pool)
    rest = [j for j in jobs if j.cores < pool]
    if not rest:
        return alone
    core_seconds = sum(j.cores * j.duration for j in rest) / pool
    worker_seconds = sum(j.duration for j in rest) / workers
    return alone + max(core_seconds, worker_seconds, *(j.duration for j in rest))


def ideal_makespan(jobs: list[Job], pool: int, workers: int) -> float:
    """Event simulation of the ideal biggest-first central scheduler."""
    cores = tuple(range(pool))
    free = set(cores)
    idle = workers
    waiting = sorted(jobs, key=lambda j: (-j.cores, j.index))
    running: list[tuple[float, int, tuple[int, ...]]] = []
    now = 0.0
    while waiting or running:
        started = True
        while idle and waiting and started:
            started = False
            for job in waiting:
                window = choose_window(cores, job.cores, free)
                if window is not None:
                    free.difference_update(window)
                    idle -= 1
                    heapq.heappush(running, (now + job.duration, job.index, window))
                    waiting.remove(job)
                    started = True
                    break
        if not running:
            raise RuntimeError("a job can never fit the pool")
        now, _, window = heapq.heappop(running)
        free.update(window)
        idle += 1
        while running and running[0][0] <= now:
            _, _, other = heapq.heappop(running)
            free.update(other)
            idle += 1
    return now


def static_slices_makespan(jobs: list[Job], pool: int, slice_size: int) -> float:
    """Worker scope / the gwN recipe: pool // slice_size workers, each test on one worker's slice.

    Tests larger than a slice run afterwards in a separate run with one worker
    holding the whole pool, as users of that recipe do.  Greedy list scheduling
    in collection order (xdist's load scheduling, without its overhead).
    """
    workers = pool // slice_size
    fits = [j for j in jobs if j.cores <= slice_size]
    big = [j for j in jobs if j.cores > slice_size]
    ends = [0.0] * workers
    for job in fits:
        i = ends.index(min(ends))
        ends[i] += job.duration
    return max(ends) + sum(j.duration for j in big)


class _FakeGateway:
    def __init__(self, name: str) -> None:
        self.id = name


class _FakeNode:
    """An xdist worker as the scheduler sees it: tests arrive, the shutdown arrives."""

    def __init__(self, name: str, on_change: Callable[[_FakeNode], None]) -> None:
        self.gateway = _FakeGateway(name)
        self.queue: list[int] = []
        self.shutting_down = False
        self.busy = False
        self.on_change = on_change

    def send_runtest_some(self, indices: Sequence[int]) -> None:
        self.queue.extend(indices)
        self.on_change(self)

    def shutdown(self) -> None:
        self.shutting_down = True
        self.on_change(self)


def scheduler_makespan(
    jobs: list[Job],
    pool: int,
    workers: int,
    order: str,
    known: Sequence[float | None] | None = None,
    *,
    overhead: float = 0.0,
) -> float:
    """Event simulation of pytest-neuron's xdist scheduler (the real class) with zero overhead.

    Each fake worker starts its first queued test once a second one (or the
    shutdown) arrives, as xdist's workers do; a started test takes its cores
    when they are free (biggest waiting request first, as the lease layer
    does), holds them for its duration (plus ``overhead``, a fixed cost per
    test), and reports completion.
    """
    from pytest_neuron.core.ordering import estimates, ranking
    from pytest_neuron.plugins.scheduler import CoreModel, NeuronScheduling

    cores_of = [j.cores for j in jobs]
    all_cores = tuple(range(pool))
    free = set(all_cores)
    waiting: list[tuple[int, int, _FakeNode]] = []  # (-cores, seq, node): started, waiting for cores
    events: list[tuple[float, int, _FakeNode, tuple[int, ...]]] = []
    now = 0.0
    seq = 0

    def grant() -> None:
        nonlocal seq
        waiting.sort()
        for entry in list(waiting):
            _, _, node = entry
            window = choose_window(all_cores, jobs[node.queue[0]].cores, free)
            if window is not None:
                free.difference_update(window)
                waiting.remove(entry)
                seq += 1
                heapq.heappush(events, (now + jobs[node.queue[0]].duration + overhead, seq, node, window))

    def maybe_start(node: _FakeNode) -> None:
        nonlocal seq
        if node.busy or not node.queue or (len(node.queue) < 2 and not node.shutting_down):
            return
        node.busy = True
        seq += 1
        waiting.append((-jobs[node.queue[0]].cores, seq, node))
        grant()

    sched = NeuronScheduling(
        None,
        numnodes=workers,
        model=CoreModel(all_cores, {}, None),
        counts=lambda node, ids: list(cores_of),
        rank=lambda ids, cores: (
            ranking(order, cores, known, pool=pool),
            estimates(cores, known) if known and order == "durations" else None,
        ),
        clock=lambda: now,
    )
    nodes = [_FakeNode(f"gw{i}", maybe_start) for i in range(workers)]
    ids = [str(j.index) for j in jobs]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, ids)
    sched.schedule()
    while events:
        now, _, node, window = heapq.heappop(events)
        free.update(window)
        index = node.queue.pop(0)
        node.busy = False
        sched.mark_test_complete(node, index, jobs[index].duration)
        maybe_start(node)
        grant()
    if not sched.tests_finished or any(node.queue for node in nodes):
        raise RuntimeError("the simulated run did not finish every test")
    return now
