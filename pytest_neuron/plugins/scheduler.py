"""Test scope under xdist: a scheduler that knows each test's cores, and the durations of the last run.

(Longer than the package's other modules on purpose: xdist's ``Scheduling`` protocol is one state
machine, and the ordering it applies, the pool model it keeps and the durations it learns from are
read together with it; the pure ranking rule is in core/ordering.py.)

**How an xdist worker takes tests.**  A worker runs a test only once it knows
the one after it (pytest needs ``nextitem`` to tear fixtures down), so the
test a worker was sent last stays *parked*, not started, until another test
or the shutdown arrives.  xdist's load scheduler keeps two tests on every
worker: the one running and one parked behind it, whose start waits for the
first, even when that one waits for cores.

:class:`NeuronScheduling` keeps a model of the pool (which cores the
running tests hold) and hands a worker its next test only when the worker
has finished its last one: the worker is then idle, its parked test not
started.  At each event it starts, best ranked first, the parked tests that
fit the cores the model has free, by sending each one's worker a successor
(the best-ranked test not handed out yet) or, when none is left, the
shutdown.  A parked test that does not fit stays parked, its worker idle,
and no test ever queues behind a test that cannot start.  If the model has
nothing running, the best parked test starts whatever it asks for, so a
model that disagrees with the host (other runs hold cores) cannot stall the
run: the lease layer makes such a test wait for its cores.  One exception
to "only when the worker asks": with durations recorded, a test no wider
than the one its worker runs is *chained* (sent together with the test after
it), so it starts in the running test's cores the moment that one ends,
without a round trip to the controller; never into cores reserved for a
waiting test.

**Where the core counts come from.**  The controller collects nothing (xdist
forbids it), and node ids do not carry markers, so each worker writes the
core count of every collected item to a file in a directory the controller
made (handed to the workers through ``workerinput``) before it reports its
collection; the controller reads it next to the collection.  Without the
file (a remote worker, a broken directory) every test counts as one core,
and the run says so.

**Durations.**  :class:`Durations` records, on the controller (or the only
process), how long each test held its cores and how long it waited, and
stores them in pytest's cache (``neuron/durations``) at the end of the run;
the next run orders by them (see ordering.py).  ``-p no:cacheprovider``
means no history; ``--cache-clear`` starts from none.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..core.ordering import Record, estimates, ranking, records_from, records_to
from ..core.placement import choose_window, reservation_window
from ..core.workers import count_workers
from .keys import NEED_KEY

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

    from ..core.need import Need
    from ..core.plan import RunPlan
    from .context import NeuronContext

COUNTS_INPUT = "neuron_core_counts"  # the key of the counts directory in xdist's workerinput
CACHE_KEY = "neuron/durations"
PLUGIN_NAME = "neuron-durations"
SCHEDULER_PLUGIN = "neuron-scheduler"
COUNTS_PLUGIN = "neuron-core-counts"
Node = Any  # xdist's WorkerController: gateway.id, send_runtest_some, shutdown, shutting_down


def collection_diff(first: Sequence[str], other: Sequence[str], first_id: str, other_id: str) -> str:
    """xdist's message for workers that collected different tests, with a unified diff."""
    diff = difflib.unified_diff(list(first), list(other), fromfile=first_id, tofile=other_id, lineterm="")
    return (
        f"Different tests were collected between {first_id} and {other_id}. The difference is:\n"
        + "\n".join(diff)
        + "\nTo see why this happens see 'Known limitations' in the pytest-xdist documentation."
    )


def horizon(cores: Sequence[int], seconds: Sequence[float], pool: int, workers: int) -> float:
    """A lower bound of the run's makespan: core-seconds / pool, seconds / workers, the longest test.

    Tests asking for more than half the pool cannot run next to each other: they count one after another.
    """
    alone = sum(d for k, d in zip(cores, seconds, strict=True) if 2 * k > pool)
    rest = [(k, d) for k, d in zip(cores, seconds, strict=True) if 2 * k <= pool]
    if not rest:
        return alone
    core_seconds = sum(k * d for k, d in rest) / max(1, pool)
    worker_seconds = sum(d for _, d in rest) / max(1, workers)
    return alone + max(core_seconds, worker_seconds, *(d for _, d in rest))


class CoreModel:
    """The scheduler's picture of the pool: which window each running test holds, and until when."""

    def __init__(self, pool: Sequence[int], device_of: Mapping[int, int], limit: int | None) -> None:
        self.pool = tuple(sorted(pool))
        self.device_of = dict(device_of)
        self.limit = len(self.pool) if limit is None else min(limit, len(self.pool))
        self.held: dict[object, tuple[int, ...]] = {}
        self.ends: dict[object, float | None] = {}  # when each holder is expected to end

    def free(self, without: Collection[int] = ()) -> frozenset[int]:
        taken = {c for window in self.held.values() for c in window}
        return frozenset(c for c in self.pool if c not in taken and c not in without)

    def place(self, k: int, without: Collection[int] = ()) -> tuple[int, ...] | None:
        """The window ``k`` cores would get now (outside ``without``), or None when they do not fit."""
        if k <= 0:
            return ()
        if sum(len(w) for w in self.held.values()) + k > self.limit:
            return None
        return choose_window(self.pool, k, self.free(without), device_of=self.device_of)

    def reserve(self, k: int) -> tuple[tuple[int, ...], float | None]:
        """The window ``k`` cores will get soonest, and when (None: unknown) it is expected to be free."""
        busy = {c for window in self.held.values() for c in window}
        window = reservation_window(self.pool, k, busy, (), device_of=self.device_of) or ()
        ends = [self.ends.get(owner) for owner, held in self.held.items() if set(held) & set(window)]
        known = [end for end in ends if end is not None]
        return window, None if len(known) < len(ends) else max(known, default=0.0)

    def take(self, owner: object, window: tuple[int, ...], end: float | None = None) -> None:
        self.held[owner] = window
        self.ends[owner] = end

    def give_back(self, owner: object) -> None:
        self.held.pop(owner, None)
        self.ends.pop(owner, None)

    @property
    def idle(self) -> bool:
        return not self.held


class NeuronScheduling:
    """xdist's ``Scheduling`` protocol (xdist/scheduler/protocol.py), one test per worker at a time.

    Per worker, ``pending`` holds at most two collection indices: ``[parked]``
    (the worker is idle, waiting for the test after it), ``[running, parked]``,
    or ``[running]`` once the worker was told to shut down.
    """

    def __init__(
        self,
        config: pytest.Config | None,
        *,
        numnodes: int,
        model: CoreModel,
        counts: Callable[[Node, Sequence[str]], list[int] | None],
        rank: Callable[[Sequence[str], Sequence[int]], tuple[list[int], list[float] | None]],
        log: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.numnodes = numnodes
        self.model = model
        self._counts = counts
        self._rank = rank
        self.clock = clock
        self.seconds: list[float] | None = None  # each test's expected duration, when durations are known
        self.horizon = 0.0  # when the run is expected to end at the earliest (with durations)
        self.reserved: frozenset[int] = frozenset()  # the window the best-ranked waiting test reserved
        self.log = log or (lambda *args: None)
        self.node2collection: dict[Node, list[str]] = {}
        self.node2pending: dict[Node, list[int]] = {}
        self.collection: list[str] | None = None
        self.cores: list[int] = []
        self.priority: list[int] = []  # collection index -> position in the order
        self.by_priority: list[int] = []  # position -> collection index
        self.queues: dict[int, list[int]] = {}  # per core count: positions not handed out yet, ascending
        self.counted: list[int] | None = None  # the first worker's core counts
        self.problems: list[str] = []

    # -- the protocol's properties -----------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        """Nothing left to hand out, and no worker holds a test it has not been told to start."""
        if not self.collection_is_completed or any(self.queues.values()):
            return False
        return all(not pending or node.shutting_down for node, pending in self.node2pending.items())

    @property
    def has_pending(self) -> bool:
        return any(self.queues.values()) or any(self.node2pending.values())

    # -- nodes and collections ----------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        assert node not in self.node2pending
        self.node2pending[node] = []

    def add_node_collection(self, node: Node, collection: Sequence[str]) -> None:
        assert node in self.node2pending
        late = self.collection_is_completed and self.collection is not None
        if late and list(collection) != self.collection:
            # a replacement for a crashed worker must have collected the same tests
            assert self.collection is not None
            other = next(iter(self.node2collection))
            message = collection_diff(self.collection, collection, other.gateway.id, node.gateway.id)
            self.log(message)
            self._report_collection_error(node, message)
            node.shutdown()
            return
        self.node2collection[node] = list(collection)
        if self.counted is None:
            self.counted = self._counts(node, collection)

    def _report_collection_error(self, node: Node, message: str) -> None:
        if self.config is not None:
            report = pytest.CollectReport(
                nodeid=node.gateway.id, outcome="failed", longrepr=message, result=[]
            )
            self.config.hook.pytest_collectreport(report=report)

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            self._dispatch()  # a node was added later
            return
        items = list(self.node2collection.items())
        first, collection = items[0]
        same = True
        for node, other in items[1:]:
            if other != collection:
                same = False
                message = collection_diff(collection, other, first.gateway.id, node.gateway.id)
                self.log(message)
                self._report_collection_error(node, message)
        if not same:
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(collection)
        if self.counted is None or len(self.counted) != len(collection):
            self.problems.append(
                "the workers' core counts did not reach the scheduler; it counted every test as 1 core"
            )
            self.counted = [1] * len(collection)
        self.cores = self.counted
        self.by_priority, self.seconds = self._rank(self.collection, self.cores)
        if self.seconds is not None:
            self.horizon = self.clock() + horizon(self.cores, self.seconds, self.model.limit, self.numnodes)
        self.priority = [0] * len(self.collection)
        for position, index in enumerate(self.by_priority):
            self.priority[index] = position
        for index in range(len(self.collection)):
            self._requeue(index)
        self._dispatch()

    def remove_node(self, node: Node) -> str | None:
        """Forget ``node``; hand its tests to others.  Returns the test it crashed in, if it ran one."""
        pending = self.node2pending.pop(node)  # its collection stays: it counts towards numnodes
        running = self._running(node, pending)
        self.model.give_back(node)
        if not pending:
            return None
        assert self.collection is not None
        crashitem = self.collection[pending.pop(0)] if running else None
        for index in pending:
            self._requeue(index)
        self._dispatch()
        return crashitem

    # -- tests --------------------------------------------------------------------------------
    def mark_test_complete(self, node: Node, item_index: int, duration: float = 0) -> None:
        pending = self.node2pending[node]
        if pending and pending[0] == item_index:
            held = self.model.held.get(node, ())
            self.model.give_back(node)
            pending.remove(item_index)
            if self._running(node, pending):
                # the test after it started at once (it was chained, or the worker was told to
                # finish): it runs in the cores this one held
                nxt = pending[0]
                k = self.cores[nxt]
                window = held[:k] if len(held) >= k else (self.model.place(k) or ())
                end = None if self.seconds is None else self.clock() + self.seconds[nxt]
                self.model.take(node, window, end)
        else:
            pending.remove(item_index)
        self._dispatch()

    def mark_test_pending(self, item: str) -> None:
        """Run ``item`` again (pytest_handlecrashitem's way to retry a test a worker crashed in)."""
        assert self.collection is not None
        self._requeue(self.collection.index(item))
        self._dispatch()

    def remove_pending_tests_from_node(self, node: Node, indices: Sequence[int]) -> None:
        """xdist's answer to a steal, which this scheduler never sends (no worker holds a spare test)."""
        raise NotImplementedError("NeuronScheduling never sends a steal")

    # -- the decisions --------------------------------------------------------------------------
    @staticmethod
    def _running(node: Node, pending: Sequence[int]) -> bool:
        """Whether ``pending[0]`` has started: a test is behind it, or the worker was told to finish."""
        return len(pending) >= 2 or (len(pending) == 1 and bool(node.shutting_down))

    def _requeue(self, index: int) -> None:
        bisect.insort(self.queues.setdefault(self.cores[index], []), self.priority[index])

    def _pop(self, sizes: Iterable[int]) -> int | None:
        """The best-ranked test not handed out yet among those of ``sizes`` cores (taken off its queue)."""
        heads = [(queue[0], k) for k in sizes if (queue := self.queues.get(k))]
        if not heads:
            return None
        position, k = min(heads)
        self.queues[k].pop(0)
        return self.by_priority[position]

    def _successor(self, node: Node) -> None:
        """Start ``node``'s first pending test by sending the test after it, or the shutdown.

        The successor starts when this test ends, in the cores it frees, so it
        asks for no more cores than this one if it can.  Without durations it
        is the best-ranked such test.  With durations it is the best-ranked
        one expected to end by the run's horizon (its lower bound, see
        :meth:`schedule`), else the shortest: a long test parked behind a long
        test would start late and end the run late.

        With durations, a successor no wider than the running test is
        *chained*: the test after it is sent at once, so it starts the moment
        the running test ends, in its cores, without waiting for a round trip
        to the controller.  Not while a test waits for cores the running test
        holds (they are reserved for it), and not without durations: in the
        simulations that cost biggest-first a few percent of packing.
        """
        pending = self.node2pending[node]
        k = self.cores[pending[0]]
        end = self.model.ends.get(node)
        index = self._pick(k, end)
        if index is None:
            node.shutdown()
            return
        pending.append(index)
        node.send_runtest_some([index])
        held = self.model.held.get(node, ())
        if self.seconds is not None and self.cores[index] <= k and not self.reserved.intersection(held):
            after = None if end is None or self.seconds is None else end + self.seconds[index]
            chained = self._pick(self.cores[index], after)
            if chained is None:
                node.shutdown()
            else:
                pending.append(chained)
                node.send_runtest_some([chained])

    def _pick(self, k: int, starts: float | None) -> int | None:
        """The test to park behind one of ``k`` cores expected to end at ``starts`` (taken off its queue)."""
        sizes = [size for size in self.queues if size <= k and self.queues[size]] or [
            size for size in self.queues if self.queues[size]
        ]
        if not sizes:
            return None
        if self.seconds is not None:
            return self._pop_within(sizes, self.horizon - (starts if starts is not None else self.clock()))
        return self._pop(sizes)

    def _pop_within(self, sizes: Sequence[int], budget: float) -> int:
        """The best-ranked test of ``sizes`` expected to take at most ``budget`` seconds, else the shortest.

        Positions are ascending in each queue: a queue's scan stops at the first that fits the budget.
        """
        assert self.seconds is not None
        seconds, by_priority = self.seconds, self.by_priority
        best: tuple[int, int, int] | None = None  # (position, size, place in its queue)
        shortest: tuple[float, int, int] | None = None
        for size in sizes:
            for place, position in enumerate(self.queues[size]):
                if best is not None and position > best[0]:
                    break
                d = seconds[by_priority[position]]
                if d <= budget:
                    best = (position, size, place)
                    break
                if shortest is None or d < shortest[0]:
                    shortest = (d, size, place)
        if best is not None:
            _, size, place = best
        else:
            assert shortest is not None
            _, size, place = shortest
        return by_priority[self.queues[size].pop(place)]

    def _dispatch(self) -> None:
        """Start, best ranked first, every test that fits the free cores on a worker that can start it.

        A worker that is idle can start the test parked on it; a worker that
        has never had a test can start any test not handed out yet.  When the
        best-ranked of these does not fit, it reserves the window that frees
        soonest (as a waiting lease does): lower-ranked tests may take cores
        in that window only when their recorded durations say they will be
        done before it frees (backfilling), so a big test is not starved by a
        stream of small ones and the cores it waits for are not left idle.
        The successors are handed out once every start is decided, so a test
        that can start now on an empty worker is not parked behind another.
        """
        if self.collection is None:
            return
        now = self.clock()
        starting: list[Node] = []
        while True:
            ready = [
                n
                for n in self.node2pending
                if n in self.node2collection and not n.shutting_down and n not in starting
            ]
            empty = next((node for node in ready if not self.node2pending[node]), None)
            parked = {self.priority[p[0]]: node for node in ready if len(p := self.node2pending[node]) == 1}
            chosen = self._choose(parked, empty is not None, now)
            if chosen is None:
                break
            position, window = chosen
            index = self.by_priority[position]
            node = parked.get(position)
            if node is None:
                assert empty is not None
                node = empty
                self.queues[self.cores[index]].remove(position)
                self.node2pending[node].append(index)
                node.send_runtest_some([index])
            self.model.take(node, window, None if self.seconds is None else now + self.seconds[index])
            starting.append(node)
        for node in starting:
            self._successor(node)

    def _done_by(self, position: int, now: float, deadline: float | None) -> bool:
        """Whether the test at ``position``, started now, is expected to end by ``deadline``."""
        if self.seconds is None or deadline is None:
            return False
        return now + self.seconds[self.by_priority[position]] <= deadline

    def _choose(
        self, parked: Mapping[int, Node], queued: bool, now: float
    ) -> tuple[int, tuple[int, ...]] | None:
        """The position to start now (parked, or queued when ``queued``) and its window; None to wait."""
        heads = [queue[0] for queue in self.queues.values() if queue] if queued else []
        if not parked and not heads:
            return None
        first = min([*parked, *heads])
        k = self.cores[self.by_priority[first]]
        window = self.model.place(k)
        self.reserved = frozenset()
        if window is not None:
            return first, window
        if self.model.idle:
            return first, ()  # nothing runs, yet it does not fit: the lease layer makes it wait
        reserved, frees_at = self.model.reserve(k)
        self.reserved = frozenset(reserved)
        found: list[tuple[int, tuple[int, ...]]] = []

        def consider(position: int) -> bool:
            size = self.cores[self.by_priority[position]]
            window = self.model.place(size, reserved)
            if window is None and self._done_by(position, now, frees_at):
                window = self.model.place(size)  # done before the reservation frees: backfill
            if window is not None:
                found.append((position, window))
            return window is not None

        for position in parked:
            if position != first:
                consider(position)
        if queued:
            for size, queue in self.queues.items():
                if not queue or self.model.place(size) is None:
                    continue  # nothing of this size fits anywhere now
                if self.model.place(size, reserved) is not None:
                    consider(queue[0])  # fits outside the reservation: the best of its size
                elif self.seconds is not None:
                    for position in queue:  # the best of its size that ends before the reservation frees
                        if position != first and consider(position):
                            break
        return min(found, default=None)


# -- worker side: the core count of every collected test -------------------------------------------
def write_core_counts(config: pytest.Config, ids: Sequence[str], cores: Sequence[int]) -> None:
    """In an xdist worker: leave this worker's core counts where the controller will look."""
    workerinput = getattr(config, "workerinput", None)
    if not isinstance(workerinput, dict) or not workerinput.get(COUNTS_INPUT):
        return
    path = Path(str(workerinput[COUNTS_INPUT])) / f"{workerinput.get('workerid', 'gw')}.json"
    from ..locks.lockdir import atomic_write

    # the controller never reads half a file; on an error nothing is left behind, and the
    # controller reports the missing counts once
    with contextlib.suppress(OSError):
        atomic_write(path, json.dumps({"ids": list(ids), "cores": list(cores)}).encode())


def read_core_counts(directory: Path, worker: str, collection: Sequence[str]) -> list[int] | None:
    try:
        data = json.loads((directory / f"{worker}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("ids") != list(collection):
        return None
    cores = data.get("cores")
    if not isinstance(cores, list) or not all(isinstance(k, int) and k >= 0 for k in cores):
        return None
    return cores


# -- durations --------------------------------------------------------------------------------------
class Durations:
    """The durations of the last run (read from pytest's cache) and of this one (written back)."""

    def __init__(self, config: pytest.Config) -> None:
        self.cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
        self.history: dict[str, Record] = {}
        if self.cache is not None:
            self.history = records_from(self.cache.get(CACHE_KEY, None))
        self.phases: dict[str, dict[str, float]] = {}
        self.leases: dict[str, tuple[int, float]] = {}

    def seconds(self, nodeid: str) -> float | None:
        record = self.history.get(nodeid)
        return None if record is None else record.seconds

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.phases.setdefault(report.nodeid, {})[report.when] = float(report.duration)
        if report.when == "setup":
            props = dict(report.user_properties)
            if "neuron_cores" in props:
                from ..core.coreset import parse_coreset

                try:
                    k = len(parse_coreset(str(props["neuron_cores"]), "the test report"))
                except ValueError:
                    return
                self.leases[report.nodeid] = (k, float(str(props.get("neuron_wait_seconds", 0.0))))

    def measured(self) -> dict[str, Record]:
        """This run's record of every test that held cores."""
        records = {}
        for nodeid, (k, wait) in self.leases.items():
            phases = self.phases.get(nodeid, {})
            records[nodeid] = Record(k, sum(phases.values()), phases.get("call", 0.0), wait)
        return records

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        measured = self.measured()
        if self.cache is None or not measured:
            return
        merged = {**self.history, **measured}  # tests this run did not run keep their record
        self.cache.set(CACHE_KEY, records_to(merged))


def effective_order(plan: RunPlan, durations: Durations | None) -> tuple[str, str]:
    """The order in effect and why: the setting, else ``durations`` once some are recorded."""
    resolved = plan.settings["order"]
    if resolved.value is not None:
        return str(resolved.value), resolved.source
    if durations is not None and durations.history:
        return "durations", "default once durations are recorded"
    if durations is None or durations.cache is None:
        return "biggest-first", "default; no cache (-p no:cacheprovider), so no durations"
    return "biggest-first", "default until a run records durations"


def order_indices(
    plan: RunPlan, durations: Durations | None, ids: Sequence[str], cores: Sequence[int]
) -> list[int]:
    order, _ = effective_order(plan, durations)
    known = [durations.seconds(i) for i in ids] if durations is not None else None
    pool = 0 if plan.topology is None else plan.topology.size
    return ranking(order, cores, known, pool=pool)


def expected_seconds(
    durations: Durations | None, ids: Sequence[str], cores: Sequence[int]
) -> list[float] | None:
    """Each test's expected duration from the recorded ones, or None when nothing is recorded."""
    known = [durations.seconds(i) for i in ids] if durations is not None else []
    if not any(s is not None for s in known):
        return None
    return estimates(cores, known)


def order_items(
    config: pytest.Config, plan: RunPlan, items: list[pytest.Item], cores_of: Callable[[pytest.Item], int]
) -> None:
    """Sort ``items`` in the order in effect (pytest_collection_modifyitems, test scope).

    In an xdist worker the scheduler decides what runs when; the workers sort
    biggest-first (without history, so all of them alike) for xdist's other
    schedulers.
    """
    ids, cores = [i.nodeid for i in items], [cores_of(i) for i in items]
    ranked = order_indices(plan, durations_of(config), ids, cores)
    items[:] = [items[i] for i in ranked]


def order_header(config: pytest.Config, plan: RunPlan, role: str) -> list[str]:
    """The report header's line on the order (test scope, in the process that reports)."""
    if plan.scope != "test" or plan.topology is None or role == "worker":
        return []
    from ..core.report import order_line

    durations = durations_of(config)
    order, source = effective_order(plan, durations)
    return [order_line(order, source, None if durations is None else len(durations.history))]


# -- wiring ----------------------------------------------------------------------------------------
class SchedulerHooks:
    """Registered on the controller in test scope: makes the scheduler, hands workers the counts directory."""

    def __init__(self, config: pytest.Config, plan: RunPlan, durations: Durations | None) -> None:
        self.config = config
        self.plan = plan
        self.durations = durations
        self.directory = Path(tempfile.mkdtemp(prefix="pytest-neuron-sched-"))
        self.scheduler: NeuronScheduling | None = None

    def pytest_configure_node(self, node: Node) -> None:
        node.workerinput[COUNTS_INPUT] = str(self.directory)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> NeuronScheduling | None:
        if config.getoption("dist", None) != "load" or self.plan.topology is None:
            return None  # --dist loadscope, worksteal, ...: xdist's own scheduler, as asked
        topo = self.plan.topology
        directory = self.directory

        def counts(node: Node, collection: Sequence[str]) -> list[int] | None:
            return read_core_counts(directory, str(node.gateway.id), collection)

        def rank(ids: Sequence[str], cores: Sequence[int]) -> tuple[list[int], list[float] | None]:
            return order_indices(self.plan, self.durations, ids, cores), expected_seconds(
                self.durations, ids, cores
            )

        self.scheduler = NeuronScheduling(
            config,
            numnodes=count_workers(config.getoption("tx", None)),
            model=CoreModel(topo.cores, topo.device_of, topo.limit),
            counts=counts,
            rank=rank,
            log=getattr(log, "neuronsched", None),
        )
        return self.scheduler

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.scheduler is not None:
            for problem in self.scheduler.problems:
                terminalreporter.write_line(f"neuron: {problem}")

    def pytest_unconfigure(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class CountsExport:
    """Registered on xdist workers in test scope: writes the core counts before the collection is reported."""

    def __init__(self, cores_of: Callable[[pytest.Item], int]) -> None:
        self.cores_of = cores_of

    @pytest.hookimpl(tryfirst=True)  # before xdist's own hook sends the collection to the controller
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        items = session.items
        write_core_counts(session.config, [i.nodeid for i in items], [self.cores_of(i) for i in items])


def physical_size(ctx: NeuronContext, need: Need) -> int:
    return need.cores * ctx.lnc_of(need)


def pool_units(ctx: NeuronContext) -> Callable[[pytest.Item], int]:
    """How many of the pool's cores an item's window takes (its cores at its own LNC, in the pool's
    numbering: a 2-core LNC=2 test takes 4 cores of an LNC=1 pool)."""
    from ..core.need import UNMARKED

    topo = ctx.plan.topology
    per = 1 if topo is None else max(1, topo.lnc)

    def cores_of(item: pytest.Item) -> int:
        return -(-physical_size(ctx, item.stash.get(NEED_KEY, UNMARKED)) // per)

    return cores_of


def start_test_scope(
    config: pytest.Config, plan: RunPlan, role: str, cores_of: Callable[[pytest.Item], int]
) -> None:
    """Called once the role is known, in test scope with a pool: register what this role needs."""
    manager = config.pluginmanager
    if role == "worker" and not manager.has_plugin(COUNTS_PLUGIN):
        manager.register(CountsExport(cores_of), COUNTS_PLUGIN)
    if role in ("controller", "single") and not manager.has_plugin(PLUGIN_NAME):
        durations = Durations(config)
        manager.register(durations, PLUGIN_NAME)
        if role == "controller" and manager.hasplugin("xdist"):
            manager.register(SchedulerHooks(config, plan, durations), SCHEDULER_PLUGIN)


def durations_of(config: pytest.Config) -> Durations | None:
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    return plugin if isinstance(plugin, Durations) else None
