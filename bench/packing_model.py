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

from pytest_neuron.core.placement import choose_window

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
