"""The embedded default backend: a dependency-driven pool of worker processes on this machine, no server."""

from __future__ import annotations

import os
import time
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from merlin_mdm.backends.base import Backend, RunOptions, RunReport, register_backend
from merlin_mdm.backends.dependencies import DependencyTracker, Release
from merlin_mdm.backends.worker_pool import Finished, Lost, WorkerPool
from merlin_mdm.status.model import TaskFailure, TaskState, UnitOutcome
from merlin_mdm.status.sqlite_store import SqliteStatusStore
from merlin_mdm.status.store import StatusStore
from merlin_mdm.study.plan import StudyPlan, UnitKey
from merlin_mdm.study.workspace import Workspace

__all__ = ["LocalBackend"]

MAX_LOST = 2  # a unit whose worker process dies is resubmitted this many times, then recorded as failed


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
    """One run of a plan: feeds ready units to idle workers and records outcomes (the only status writer)."""

    def __init__(self, plan: StudyPlan, store: StatusStore, options: RunOptions):
        self.plan = plan
        self.store = store
        self.options = options
        self.workers = max(1, options.workers or os.cpu_count() or 1)
        self.lost: dict[UnitKey, int] = {}
        self.stop_reason: str | None = None
        self.stop_kind = ""
        self.done_tasks = 0
        self._bar_task: Any = None

    def run(self) -> RunReport:
        self.store.register(self.plan)
        done = self.store.finished_units() if self.options.resume else set()
        if self.options.resume:
            self.store.reset_unfinished()
        tracker = DependencyTracker(self.plan, done)
        ready: deque[Release] = deque(Release(k) for k in tracker.initial())
        self.done_tasks = sum(len(self.plan.unit_samples(k)) for k in done)
        self.store.set_state("running")
        pool = WorkerPool(self.plan, self.workers)
        try:
            with self._progress() as bar:
                self._loop(pool, tracker, ready, bar)
        except KeyboardInterrupt:
            pool.shutdown(interrupt=True)
            self.store.set_state("interrupted", "stopped by Ctrl-C; `merlin-mdm restart` resumes")
            return RunReport("interrupted", self.store.snapshot(), "interrupted: resume with merlin-mdm restart")
        pool.shutdown()
        return self._finish(tracker)

    def _loop(self, pool: WorkerPool, tracker: DependencyTracker, ready: deque[Release], bar: Any) -> None:
        while ready or pool.busy():
            while ready and pool.idle():
                release = ready.popleft()
                if release.blocked or self.stop_reason:
                    self._not_run(release, tracker, ready)
                    continue
                self.store.unit_started(release.key, "", time.time())
                pool.submit(release.key)
            if not pool.busy():
                continue
            for event in pool.next_event(timeout=None):
                outcome = self._outcome(event, pool, ready)
                if outcome is None:
                    continue
                key = event.key
                self.store.unit_finished(key, outcome)
                self._advance(bar, len(self.plan.unit_samples(key)))
                if outcome.stop and not self.stop_reason:
                    self._request_stop(key, outcome, pool)
                ready.extend(tracker.complete(key, outcome.ok, self.plan.instances[key.instance].name))

    def _not_run(self, release: Release, tracker: DependencyTracker, ready: deque[Release]) -> None:
        self.store.units_not_run([release.key], release.blocked or self.stop_reason or "")
        ready.extend(tracker.complete(release.key, False, self.plan.instances[release.key.instance].name))

    def _outcome(self, event: Finished | Lost, pool: WorkerPool, ready: deque[Release]) -> UnitOutcome | None:
        """The outcome to record, or None when a lost unit was queued again."""
        if isinstance(event, Finished):
            return event.outcome
        key = event.key
        self.lost[key] = self.lost.get(key, 0) + 1
        self._say(f"worker process {event.pid} died while running {self.plan.instances[key.instance].name}")
        if self.lost[key] <= MAX_LOST:
            self.store.unit_restarted(key, "worker process died")
            ready.appendleft(Release(key))
            return None
        samples = self.plan.unit_samples(key)
        failure = TaskFailure(samples[0], TaskState.FAILED, None, f"worker process died {self.lost[key]} times", "")
        return UnitOutcome(0, len(samples), 0, failures=(failure,))

    def _request_stop(self, key: UnitKey, outcome: UnitOutcome, pool: WorkerPool) -> None:
        name = self.plan.instances[key.instance].name
        self.stop_kind = outcome.stop or ""
        code = "MERLIN_HARD_FAIL" if outcome.stop == "hard_fail" else "MERLIN_STOP_WORKERS"
        self.stop_reason = f"study stopped: {name} exited with {code}"
        pool.request_stop()
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
