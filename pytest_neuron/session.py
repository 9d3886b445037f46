"""The pytest session plugin: leases, environment and per-test settings of one process.

Ordering, which the runtime's habits dictate:

* In **worker scope** a process (an xdist worker, or pytest itself without
  xdist) leases its slice in ``pytest_load_initial_conftests`` and exports
  ``NEURON_RT_VISIBLE_CORES`` before any conftest or test module is imported,
  since the runtime reads it once, when it initialises.
* In **test scope** each test leases its window in a ``tryfirst`` wrapper of
  ``pytest_runtest_protocol``: outside pytest-timeout's timer (the wait has its
  own bound) and around pytest-forked's fork, so a forked child inherits both
  the environment and the locks.
* A lease is released only when no Neuron device is open in this process:
  a runtime initialised in-process pins its cores until the process exits, so
  handing them on earlier would meet "NeuronCore(s) not available".
"""

from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from .coreset import format_coreset
from .envpatch import EnvPatch
from .handoff import handoff_value
from .marker import MarkerError, Request, parse_marker
from .options import read_ini
from .procinfo import open_devices
from .runtime_env import PORT_VARS, lease_env, neuron_environ, settings_env
from .settings import RUNTIME_VARS, TEST_SETTINGS, Resolved, resolve
from .state import NeuronCores, NeuronWarning, ProcessState, TestCores
from .timeout import effective_pytest_timeout

if TYPE_CHECKING:
    from collections.abc import Generator

    from .lease import Lease, LeaseManager
    from .plan import RunPlan

DEVICE_PREFIX_ENV = "PYTEST_NEURON_DEVICE_PREFIX"
NO_CORES = (
    "no Neuron cores: no device was found on this host and no pool was given "
    "(pass --neuron-cores=0-7 to simulate one, or run on a Neuron host)"
)
REQUEST_KEY = pytest.StashKey["Request | str"]()
LEASE_KEY = pytest.StashKey["TestCores"]()


class NeuronSession:
    """Holds one process's leases and environment; registered as a plugin."""

    def __init__(self, config: pytest.Config, plan: RunPlan, role: str) -> None:
        self.config = config
        self.plan = plan
        self.role = role  # "single", "controller" or "worker"
        self.worker = os.environ.get("PYTEST_XDIST_WORKER") if role == "worker" else None
        self.state = ProcessState()
        self.manager: LeaseManager | None = None
        if plan.topology is not None:
            from .lease import LeaseManager

            self.manager = LeaseManager(
                plan.lock_root, plan.topology, source=plan.lock_source, command=plan.command
            )
        self.test_defaults: dict[str, Resolved[Any]] = {}
        self.device_prefix = os.environ.get(DEVICE_PREFIX_ENV, "/dev/neuron")
        self.pin_warned = False
        self.pinned_message: str | None = None
        self.records: list[tuple[str, str, float, str | None]] = []  # nodeid, cores, wait, worker
        self.trace: Any = None
        if role == "worker" and plan.topology is not None:
            from .watchdog import watch_parent

            watch_parent()

    # -- process-wide slice (worker scope) -------------------------------------------------
    def lease_process_slice(self) -> None:
        """Lease this process's slice and export it; never raises for a busy pool."""
        plan, topo = self.plan, self.plan.topology
        if self.manager is None or topo is None or self.state.lease is not None:
            return
        if self.state.error is not None:
            return  # one attempt per process: pytest_configure must not wait the whole bound again
        from .lease import LeaseError, LeaseTimeout, LockDirError

        size = plan.slice_size or plan.value("cores_per_worker") or topo.size
        started = time.time()
        try:
            lease = self.manager.acquire(
                size, timeout=float(plan.value("wait_timeout")), worker=self.worker or "pytest"
            )
        except (LeaseTimeout, LeaseError, LockDirError) as exc:
            self.state.error = f"{self.worker or 'this process'} got no cores: {exc}"
            self.state.failed_wait = (started, time.time(), size)
            return
        self.state.lease = lease
        self.state.patch = EnvPatch(self._lease_env(lease)).apply()

    def _lease_env(self, lease: Lease) -> dict[str, str | None]:
        return lease_env(
            lease.cores,
            lease.physical[0],
            port_base=int(self.plan.value("port_base")),
            user_env=self.plan.user_env,
            # the ports this plugin derived (not the user's): a nested run derives its own
            handoff=handoff_value(
                lease.domain,
                lease.cores,
                plugin_vars=tuple(v for v in PORT_VARS if v not in self.plan.user_env),
            ),
        )

    def release_process_slice(self) -> None:
        lease = self.state.lease
        if self.state.patch is not None:
            self.state.patch.restore()
            self.state.patch = None
        if lease is not None and self.manager is not None:
            self.state.lease = None
            pinned = bool(open_devices(self.device_prefix))
            if self.trace is not None:
                self.trace.release(lease, pinned=pinned)
            if pinned:
                self.state.pinned.append(lease)  # the process exit releases it
            else:
                self.manager.release(lease)

    # -- configuration -----------------------------------------------------------------------
    def resolve_test_defaults(self) -> None:
        """Resolve the per-test settings once (command line > environment > ini > default).

        Without a pool the plugin has nothing to do, and environment or ini
        values meant for Neuron hosts must not break the run: only what was
        typed on this command line is checked.
        """
        active = self.plan.topology is not None
        for spec in TEST_SETTINGS:
            cmdline = self.config.getoption(spec.dest)
            ini = read_ini(self.config, spec.ini) if active else None
            env = self.plan.user_env if active else {}
            self.test_defaults[spec.name] = resolve(spec, cmdline=cmdline, env=env, ini=ini)

    def request_for(self, item: pytest.Item) -> Request | str | None:
        """The parsed neuron marker of ``item``, an error message, or None when unmarked."""
        if REQUEST_KEY in item.stash:
            return item.stash[REQUEST_KEY]
        marker = item.get_closest_marker("neuron")
        if marker is None:
            return None
        topo = self.plan.topology
        try:
            request: Request | str = parse_marker(
                marker.args, marker.kwargs, nodeid=item.nodeid, pool_size=None if topo is None else topo.size
            )
        except MarkerError as exc:
            request = str(exc)
        item.stash[REQUEST_KEY] = request
        return request

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.request_for(item)
        if (
            self.plan.scope == "test"
            and self.plan.topology is not None
            and self.plan.value("order") == "biggest-first"
        ):
            # Big requests first, while the pool is empty: a 32-core test started late waits for
            # every core to drain.  A stable sort, identical in every xdist worker.
            items.sort(key=self._cores_wanted, reverse=True)

    def _cores_wanted(self, item: pytest.Item) -> int:
        request = self.request_for(item)
        return request.cores if isinstance(request, Request) else 1

    # -- per test ---------------------------------------------------------------------------
    def _in_effect(self, request: Request | None, name: str) -> object:
        """A per-test setting: the marker's value (even 0 or False), else the resolved default."""
        given = None if request is None else request.settings.get(name)
        return given if given is not None else self.test_defaults[name].value

    def _test_env(self, request: Request | None) -> dict[str, str | None]:
        return settings_env(
            {spec.name: self._in_effect(request, spec.name) for spec in TEST_SETTINGS}, RUNTIME_VARS
        )

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        if self.role == "controller":
            return (yield)
        request = self.request_for(item)
        parsed = request if isinstance(request, Request) else None
        test_cores = TestCores(lease=None, patch=None)
        item.stash[LEASE_KEY] = test_cores
        env = self._test_env(parsed)
        if self.plan.scope == "test" and self.manager is not None and not isinstance(request, str):
            from .lease import LeaseError, LeaseTimeout, LockDirError

            k = parsed.cores if parsed is not None else 1
            started = time.time()
            try:
                lease = self.manager.acquire(
                    k, timeout=float(self.plan.value("wait_timeout")), worker=self.worker, test=item.nodeid
                )
            except (LeaseTimeout, LeaseError, LockDirError) as exc:
                test_cores.error = str(exc)
                item.user_properties.append(("neuron_wait_seconds", round(time.time() - started, 4)))
                if self.trace is not None:
                    self.trace.wait(item.nodeid, started, time.time(), k, str(exc))
            else:
                test_cores.lease = lease
                env.update(self._lease_env(lease))
                if self.trace is not None:
                    self.trace.lease(lease, item.nodeid)
        test_cores.patch = EnvPatch(env).apply() if env else None
        try:
            return (yield)
        finally:
            if test_cores.patch is not None:
                test_cores.patch.restore()
            if test_cores.lease is not None:
                self._end_test_lease(item, test_cores.lease)

    def _end_test_lease(self, item: pytest.Item, lease: Lease) -> None:
        assert self.manager is not None
        # A device open now pins this lease's cores, unless an earlier test already
        # initialised the runtime here: it read NEURON_RT_VISIBLE_CORES then, once, and
        # holds that earlier lease's cores, not these.
        devices = [] if self.state.pinned else open_devices(self.device_prefix)
        if self.trace is not None:
            self.trace.release(lease, pinned=bool(devices))
        if not devices:
            self.manager.release(lease)
            return
        self.state.pinned.append(lease)
        if not self.pin_warned:
            self.pin_warned = True
            message = (
                f"{item.nodeid} initialised the Neuron runtime in this process ({devices[0]} is open), "
                f"which pins cores {lease.visible_cores} until the process exits; they stay locked until "
                "then. Start Neuron work in a subprocess or run with --forked in test scope."
            )
            self.pinned_message = message
            self._record_warning(item, NeuronWarning(message))

    @staticmethod
    def _record_warning(item: pytest.Item, warning: NeuronWarning) -> None:
        """Report ``warning`` for ``item`` after its run, outside pytest's per-test warning capture.

        ``item.warn`` here would bypass the capture: the warning would only reach stderr (lost
        from the report, and from the controller's under xdist) or raise under ``-W error``.
        Recording it through the hook, as pytest's own capture does, puts it in the warnings
        summary, forwarded by xdist from a worker to the controller.
        """
        path, lineno, _ = item.reportinfo()
        message = warnings.WarningMessage(warning, type(warning), str(path), (lineno or 0) + 1)
        item.ihook.pytest_warning_recorded.call_historic(
            kwargs={"warning_message": message, "when": "runtest", "nodeid": item.nodeid, "location": None}
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.role == "controller":
            return
        request = self.request_for(item)
        if isinstance(request, str):
            pytest.fail(request, pytrace=False)
        wants = wants_cores(item)
        topo = self.plan.topology
        if topo is None:
            return  # NoCores handles this process
        test_cores = item.stash.get(LEASE_KEY, None)
        if test_cores is not None and test_cores.error:
            pytest.fail(test_cores.error, pytrace=False)
        if self.plan.scope == "worker" and self.state.error:
            # Every test of a process without a slice fails, marked or not: a runtime started
            # there would otherwise see no NEURON_RT_VISIBLE_CORES and reach for every core.
            pytest.fail(self.state.error, pytrace=False)
        if self.plan.scope == "worker" and wants:
            have = self.state.lease
            need = request.cores if request is not None else 1
            if have is not None and need > len(have.cores):
                pytest.fail(
                    f"{item.nodeid} needs {need} cores but its worker has {len(have.cores)} "
                    f"({have.visible_cores}); give workers more with --neuron-cores-per-worker={need}, "
                    "or let each test lease its own with --neuron-scope=test",
                    pytrace=False,
                )
        self._check_timeouts(item, request if isinstance(request, Request) else None)
        lease, wait = self._lease_of(item)
        if lease is not None:
            item.user_properties.append(("neuron_cores", lease.visible_cores))
            item.user_properties.append(("neuron_wait_seconds", round(wait, 4)))
            if self.worker:
                item.user_properties.append(("neuron_worker", self.worker))

    def _check_timeouts(self, item: pytest.Item, request: Request | None) -> None:
        exec_timeout = self._in_effect(request, "exec_timeout")
        if not exec_timeout:
            return  # no runtime timeout in effect: nothing to compare (and nothing to read per test)
        pytest_timeout = effective_pytest_timeout(item)
        if pytest_timeout and pytest_timeout <= float(str(exec_timeout)):
            path, lineno, _ = item.reportinfo()
            warnings.warn_explicit(  # at the test, not at this line
                NeuronWarning(
                    f"{item.nodeid}: pytest-timeout ({pytest_timeout:g}s) fires at or before "
                    f"NEURON_RT_EXEC_TIMEOUT ({exec_timeout}s); raise the pytest timeout so the runtime's "
                    "own, clearer timeout error comes first"
                ),
                NeuronWarning,
                str(path),
                (lineno or 0) + 1,
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.trace is not None:
            self.trace.phase(report.nodeid, report.when, report.start, report.stop, report.outcome)
        if report.when != "setup":
            return
        props = dict(report.user_properties)
        if "neuron_cores" in props or "neuron_wait_seconds" in props:  # without cores: a failed wait
            self.records.append(
                (
                    report.nodeid,
                    str(props.get("neuron_cores", "")),
                    float(str(props.get("neuron_wait_seconds", 0.0))),
                    str(props["neuron_worker"]) if props.get("neuron_worker") else None,
                )
            )

    # -- the fixture ------------------------------------------------------------------------
    def _lease_of(self, item: pytest.Item) -> tuple[Lease | None, float]:
        """The lease ``item`` runs with (its own in test scope, else the process's) and its wait."""
        test_cores = item.stash.get(LEASE_KEY, None)
        if test_cores is not None and test_cores.lease is not None:
            return test_cores.lease, test_cores.lease.wait_seconds
        lease = self.state.lease
        return lease, 0.0 if lease is None else lease.wait_seconds

    def cores_for(self, item: pytest.Item) -> NeuronCores | None:
        lease, wait = self._lease_of(item)
        if lease is None:
            return None
        return NeuronCores(lease.cores, lease.visible_cores, neuron_environ(), wait)

    def pytest_unconfigure(self) -> None:
        self.release_process_slice()
        if self.trace is not None:
            self.trace.close()

    def process_summary(self) -> dict[str, Any]:
        lease = self.state.lease or (self.state.pinned[0] if self.state.pinned else None)
        return {
            "worker": self.worker,
            "cores": None if lease is None else lease.visible_cores,
            "wait": round(lease.wait_seconds, 3) if lease is not None else self._failed_wait(),
            "error": self.state.error,
            "pinned": self.pinned_message,
        }

    def _failed_wait(self) -> float | None:
        failed = self.state.failed_wait
        return None if failed is None else round(failed[1] - failed[0], 3)

    # -- wiring called from plugin.py --------------------------------------------------------
    def configure(self) -> None:
        """Once the role is known: per-test defaults, worker counts, the trace."""
        try:
            self.resolve_test_defaults()
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        if self.role == "controller":
            self._check_workers()
            if self.plan.scope == "test" and self.plan.topology is not None:
                from .xdist_hooks import hand_out_one_at_a_time

                hand_out_one_at_a_time(self.config)
        if self.plan.value("trace") and self.plan.topology is not None:
            from .trace import Trace

            self.trace = Trace(
                str(self.plan.value("trace")),
                self.role,
                self.worker,
                self.plan.run_id,
                pool=self.plan.topology.cores,
                lock_dir=self.plan.lock_root,
                physical=self.plan.topology.physical,
            )
            # the slice was leased in pytest_load_initial_conftests, before the trace existed
            if self.state.lease is not None:
                self.trace.lease(self.state.lease, self.worker or "pytest")
            elif self.state.failed_wait is not None:
                start, end, k = self.state.failed_wait
                self.trace.wait(self.worker or "pytest", start, end, k, self.state.error)

    def _check_workers(self) -> None:
        workers = len(self.config.getoption("tx", None) or [])
        topo = self.plan.topology
        if not workers or topo is None:
            return
        self.plan = self.plan.with_workers(workers)
        if self.plan.scope != "worker" or self.plan.slice_size is None:
            return
        size = self.plan.slice_size
        fit = self.plan.slices_that_fit(size)
        if workers > fit:
            raise pytest.UsageError(
                f"{workers} workers need {workers} slices of {size} core{'s' if size != 1 else ''}, but pool "
                f"{format_coreset(topo.cores)} ({topo.source}) holds only {fit}; use -n {fit} (or -n auto)"
                + (", or a smaller --neuron-cores-per-worker" if size > 1 else "")
            )

    def header(self) -> list[str]:
        from .report import header_lines

        return header_lines(self.plan, self.role, self.config.get_verbosity() > 0, self.test_defaults)

    def finish(self) -> None:
        from .xdist_hooks import worker_output

        output = worker_output(self.config)
        if output is not None:
            output["neuron"] = self.process_summary()
        if self.trace is not None and self.role != "worker":
            from .trace import finish_run

            finish_run(self.trace, self.state.lease, open_devices(self.device_prefix))

    def summary(self) -> list[str]:
        from .report import summary_lines

        if self.role == "worker" or self.plan.topology is None or self.config.get_verbosity() < -1:
            return []  # -qq: no neuron section
        hooks = self.config.pluginmanager.get_plugin("neuron-xdist")
        workers = getattr(hooks, "worker_summaries", {}) if hooks is not None else {}
        process = self.process_summary() if self.role == "single" else None
        trace = None if self.trace is None else self.trace.written
        return summary_lines(
            self.plan.scope, self.records, workers, process, self.pinned_message, trace=trace
        )


def wants_cores(item: pytest.Item) -> bool:
    return item.get_closest_marker("neuron") is not None or "neuron_cores" in getattr(
        item, "fixturenames", ()
    )


class NoCores:
    """Registered instead of :class:`NeuronSession` when there is no pool at all.

    It has no per-test hook, so a suite that never asks for cores pays
    nothing per test: tests that ask for cores get a skip marker at
    collection (so the report points at the test, not at this plugin).
    """

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        skip = pytest.mark.skip(reason=NO_CORES)
        for item in items:
            if wants_cores(item):
                item.add_marker(skip)


class NoCoresRequired:
    """:class:`NoCores` under ``--neuron-require``: tests that ask for cores fail at setup."""

    def __init__(self, session: NeuronSession) -> None:
        self.session = session

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if wants_cores(item):
            source = self.session.plan.settings["require"].source
            pytest.fail(f"{NO_CORES}; failing because of --neuron-require ({source})", pytrace=False)
