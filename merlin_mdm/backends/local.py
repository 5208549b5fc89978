"""The embedded default backend: a dependency-driven pool of worker processes on this machine, no server."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from merlin_mdm.backends.base import Backend, RunOptions, RunReport, register_backend
from merlin_mdm.backends.dependencies import DependencyTracker, Release
from merlin_mdm.backends.execution import run_unit, terminate_current
from merlin_mdm.status.model import TaskFailure, TaskState, UnitOutcome
from merlin_mdm.status.sqlite_store import SqliteStatusStore
from merlin_mdm.status.store import StatusStore
from merlin_mdm.study.plan import StudyPlan, UnitKey
from merlin_mdm.study.workspace import Workspace

__all__ = ["LocalBackend"]

_PLAN: StudyPlan | None = None
_STOP: Any = None
_STARTED: Any = None
MAX_LOST = 2  # a unit whose worker process dies is resubmitted this many times, then recorded as failed


def _worker_init(plan: StudyPlan, stop: Any, started: Any) -> None:
    global _PLAN, _STOP, _STARTED
    _PLAN, _STOP, _STARTED = plan, stop, started
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scheduler decides what Ctrl-C does

    def on_term(signum: int, frame: object) -> None:
        terminate_current()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)


def _worker_run(key: UnitKey) -> tuple[UnitKey, UnitOutcome]:
    assert _PLAN is not None
    _STARTED.put((key.instance, key.unit, os.getpid()))  # lets the scheduler notice a worker that dies
    return key, run_unit(_PLAN, key, should_stop=_STOP.is_set)


@register_backend
class LocalBackend(Backend):
    """Runs units in a process pool as soon as their parents finish (no depth-by-depth barrier)."""

    name = "local"

    def __init__(self, **config: Any):
        self.config = config

    def status_store(self, workspace: Workspace) -> StatusStore:
        return SqliteStatusStore(workspace.status_path)

    def launch(self, workspace: Workspace, plan: StudyPlan, options: RunOptions) -> RunReport:
        store = self.status_store(workspace)
        try:
            return _Scheduler(plan, store, options).run()
        finally:
            store.close()


class _Scheduler:
    """One run of a plan: feeds ready units to the pool and records outcomes (the only status writer)."""

    def __init__(self, plan: StudyPlan, store: StatusStore, options: RunOptions):
        self.plan = plan
        self.store = store
        self.options = options
        self.workers = max(1, options.workers or os.cpu_count() or 1)
        self.results: queue.Queue[Any] = queue.Queue()
        self.in_flight: set[UnitKey] = set()
        self.pids: dict[UnitKey, int] = {}
        self.lost: dict[UnitKey, int] = {}
        self.started: Any = None
        self.stop_reason: str | None = None
        self.stop_kind = ""
        self.done_tasks = 0

    def run(self) -> RunReport:
        self.store.register(self.plan)
        done = self.store.finished_units() if self.options.resume else set()
        if self.options.resume:
            self.store.reset_unfinished()
        tracker = DependencyTracker(self.plan, done)
        ready: deque[Release] = deque(Release(k) for k in tracker.initial())
        self.done_tasks = sum(len(self.plan.unit_samples(k)) for k in done)
        self.store.set_state("running")
        ctx = mp.get_context("fork")
        stop = ctx.Event()
        self.started = ctx.SimpleQueue()
        pool = ctx.Pool(self.workers, initializer=_worker_init, initargs=(self.plan, stop, self.started))
        try:
            with self._progress() as bar:
                self._loop(pool, tracker, ready, stop, bar)
        except KeyboardInterrupt:
            stop.set()
            pool.terminate()
            pool.join()
            self.store.set_state("interrupted", "stopped by Ctrl-C; `merlin-mdm restart` resumes")
            return RunReport("interrupted", self.store.snapshot(), "interrupted: resume with merlin-mdm restart")
        # Every result is in, so the workers are idle. terminate(), not close(): a job lost with a dead worker
        # stays in the pool's cache forever and close()+join() would wait for it.
        pool.terminate()
        pool.join()
        return self._finish(tracker)

    def _loop(self, pool: Any, tracker: DependencyTracker, ready: deque[Release], stop: Any, bar: Any) -> None:
        while ready or self.in_flight:
            while ready and len(self.in_flight) < 2 * self.workers:
                release = ready.popleft()
                if release.blocked or self.stop_reason:
                    reason = release.blocked or self.stop_reason or ""
                    self.store.units_not_run([release.key], reason)
                    ready.extend(tracker.complete(release.key, False, self.plan.instances[release.key.instance].name))
                    continue
                self._submit(pool, release.key)
            if not self.in_flight:
                continue
            key, outcome = self._next_result(pool)
            self.in_flight.discard(key)
            self.pids.pop(key, None)
            self.store.unit_finished(key, outcome)
            self._advance(bar, len(self.plan.unit_samples(key)))
            if outcome.stop and not self.stop_reason:
                self._request_stop(key, outcome, stop)
            ready.extend(tracker.complete(key, outcome.ok, self.plan.instances[key.instance].name))

    def _submit(self, pool: Any, key: UnitKey) -> None:
        self.store.unit_started(key, "", time.time())
        self.in_flight.add(key)
        pool.apply_async(_worker_run, (key,), callback=self.results.put, error_callback=self.results.put)

    def _next_result(self, pool: Any) -> tuple[UnitKey, UnitOutcome]:
        while True:
            try:
                item = self.results.get(timeout=1.0)
            except queue.Empty:
                if (lost := self._lost_unit(pool)) is not None:
                    return lost
                continue
            if isinstance(item, BaseException):
                raise item
            key, outcome = item
            return key, outcome

    def _lost_unit(self, pool: Any) -> tuple[UnitKey, UnitOutcome] | None:
        """A unit whose worker process died: resubmit it, or report it failed after MAX_LOST tries."""
        while not self.started.empty():
            instance, unit, pid = self.started.get()
            self.pids[UnitKey(instance, unit)] = pid
        for key, pid in list(self.pids.items()):
            try:
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            del self.pids[key]
            self.lost[key] = self.lost.get(key, 0) + 1
            self._say(f"worker process {pid} died while running {self.plan.instances[key.instance].name}")
            if self.lost[key] <= MAX_LOST:
                self.store.unit_restarted(key, "worker process died")
                self.in_flight.discard(key)
                self._submit(pool, key)
                continue
            failure = TaskFailure(self.plan.unit_samples(key)[0], TaskState.FAILED, None,
                                  f"worker process died {self.lost[key]} times", "")
            n = len(self.plan.unit_samples(key))
            return key, UnitOutcome(0, n, 0, failures=(failure,))
        return None

    def _request_stop(self, key: UnitKey, outcome: UnitOutcome, stop: Any) -> None:
        name = self.plan.instances[key.instance].name
        self.stop_kind = outcome.stop or ""
        if outcome.stop == "hard_fail":
            self.stop_reason = f"study stopped: {name} exited with MERLIN_HARD_FAIL"
        else:
            self.stop_reason = f"study stopped: {name} exited with MERLIN_STOP_WORKERS"
        stop.set()
        self._say(self.stop_reason)

    def _finish(self, tracker: DependencyTracker) -> RunReport:
        leftover = tracker.remaining()
        if leftover:
            self.store.units_not_run(leftover, self.stop_reason or "a parent did not run")
        snap = self.store.snapshot()
        failed = snap.count_failed + snap.count_not_run
        if self.stop_kind == "stop_workers":
            state = "stopped"
        elif self.stop_kind == "hard_fail" or failed:
            state = "failed"
        else:
            state = "finished"
        message = self.stop_reason or (f"{failed} task(s) failed or did not run" if failed else "")
        self.store.set_state(state, message)
        return RunReport(state, self.store.snapshot(), message)

    def _progress(self) -> AbstractContextManager[Any]:
        if not self.options.progress:
            return nullcontext(None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from merlin_mdm.status.render import stderr_console

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=stderr_console(), transient=True)
        self._bar_task = progress.add_task(self.plan.name, total=self.plan.total_tasks(), completed=self.done_tasks)
        return progress

    def _advance(self, bar: Any, n: int) -> None:
        if bar is not None:
            bar.update(self._bar_task, advance=n)

    def _say(self, message: str) -> None:
        if self.options.on_event is not None:
            self.options.on_event(message)
