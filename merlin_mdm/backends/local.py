"""The embedded default backend: a dependency-driven pool of worker processes on this machine, no server."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merlin_mdm.backends.base import Backend, RunOptions, RunReport, register_backend
from merlin_mdm.backends.dependencies import DependencyTracker, Release
from merlin_mdm.backends.slots import SlotTable, default_workers, runner_cores
from merlin_mdm.errors import MerlinMdmError, ResourceError, SpecIssue, UsageError, WorkspaceError
from merlin_mdm.status.model import StopKind, StudyState, TaskFailure, TaskState, UnitOutcome
from merlin_mdm.status.sqlite_store import MAX_DB_PATH, SqliteStatusStore, too_long
from merlin_mdm.status.states import after_raise, final_state, stop_message
from merlin_mdm.status.store import StatusStore
from merlin_mdm.study.layout import Workspace
from merlin_mdm.study.plan import StudyPlan, UnitKey

# The worker pool and the executor load when a study runs (imports in the methods), not when `status` opens
# the store through this backend.
if TYPE_CHECKING:
    from merlin_mdm.backends.worker_pool import Finished, Lost, WorkerPool
    from merlin_mdm.spec.model import Spec

__all__ = ["LocalBackend"]

_log = logging.getLogger(__name__)  # `merlin-mdm -l info run --local` shows each unit start and end

MAX_LOST = 2  # a unit whose worker process dies is resubmitted this many times, then recorded as failed
POLL_SECONDS = 0.2  # how soon the scheduler notices a stop signal while every worker is busy
CLAIM_SECONDS = 1.0  # how often the scheduler checks that the study's lock file is still the one it holds


@register_backend
class LocalBackend(Backend):
    """Runs units in a process pool as soon as their parents finish (no depth-by-depth barrier)."""

    name = "local"

    def __init__(self, **config: Any):
        self.config = config

    def status_store(self, workspace: Workspace, patient: bool = True) -> StatusStore:
        """The study's database; read only where this user cannot write it (another user's study, a workspace
        made read-only): `status` of those failed on SQLite's "attempt to write a readonly database"."""
        return SqliteStatusStore(workspace.status_path, readonly=not workspace.may_record())

    def check_spec(self, spec: Spec, options: RunOptions) -> None:
        """Refuse a spec with a task that needs more cores than the runner's slots, before anything is written.

        Merlin would start it anyway (its `procs` only shape $(LAUNCHER)) and oversubscribe the machine;
        here the user says so with --workers (Merlin's own examples ask for 4 processes).
        """
        from merlin_mdm.spec.checks import check_cores  # only when starting a study

        _check_db_path(spec)
        available, where = runner_cores(options.workers)
        issues = check_cores(spec, available, where)
        if issues:
            raise ResourceError(issues, _fix(max((s.run.procs or 1) * (s.run.cores_per_task or 1) for s in spec.steps)))

    def launch(self, workspace: Workspace, plan: StudyPlan, options: RunOptions) -> RunReport:
        if options.resume:  # `restart`: the runner may be smaller than the one that started the study
            _check_plan(workspace, plan, options.workers)
        store = self.status_store(workspace)
        try:
            return _Scheduler(plan, store, options).run()
        finally:
            store.close()


def _fix(need: int) -> str:
    return f"to run it here: lower procs (or cores per task), or pass --workers {need} to oversubscribe"


def _check_plan(workspace: Workspace, plan: StudyPlan, workers: int | None) -> None:
    """`restart`: refuse a plan with a task larger than this runner; the issue sits in the workspace's spec copy."""
    available, where = runner_cores(workers)
    too_big = {inst.step: inst.cores for inst in plan.instances if inst.cores > available}
    if not too_big:
        return
    copy = workspace.spec_copy("partial") or workspace.info / f"{plan.name}.partial.yaml"  # the spec as it ran
    issues = _copy_issues(copy, available, where) or [
        SpecIssue(str(copy), 0, 0, f"step {step}", f"step '{step}' needs {need} cores for one task (procs x "
                  f"cores per task) but the runner has {available} ({where})") for step, need in too_big.items()]
    raise ResourceError(issues, _fix(max(too_big.values())))


def _copy_issues(copy: Path, available: int, where: str) -> list[SpecIssue]:
    """check_cores on the workspace's copy of the spec, read without validation (it was validated at `run`)."""
    from merlin_mdm.spec.build import build_spec
    from merlin_mdm.spec.checks import check_cores
    from merlin_mdm.spec.issues import IssueCollector
    from merlin_mdm.spec.loader import load_marked

    try:
        spec = build_spec(load_marked(copy), copy, IssueCollector(str(copy)))
    except (OSError, MerlinMdmError):
        return []
    return check_cores(spec, available, where)


class _Scheduler:
    """One run of a plan: feeds ready units to idle workers and records outcomes (the only status writer)."""

    def __init__(self, plan: StudyPlan, store: StatusStore, options: RunOptions):
        self.plan = plan
        self.store = store
        self.options = options
        self.workers = max(1, options.workers or default_workers())
        self.slots = SlotTable(self.workers)
        # A task larger than the runner was refused before (check_spec, launch); a library caller that skips
        # those checks gets it run alone on every slot (SlotTable.acquire).
        self.held: dict[UnitKey, tuple[int, ...]] = {}
        self.ticks: dict[UnitKey, int] = {}  # tasks of a running unit already shown on the progress bar
        self.lost: dict[UnitKey, int] = {}
        self.stop_reason: str | None = None
        self.stop_kind: StopKind | None = None
        self.done_tasks = 0
        self.in_flight: set[UnitKey] = set()
        self._bar_task: Any = None
        self.root_id = _identity(plan.workspace)  # the workspace's folder: a move or delete stops the study
        self.moved = False
        self.claim_lost: str | None = None  # another runner took the study (its lock deleted under this one)
        self.claim_checked = 0.0

    def run(self) -> RunReport:
        self.store.register(self.plan)
        if self.options.resume:
            from merlin_mdm.backends.execution import markers_missing

            # the file system is the truth: a unit recorded finished whose done-marker is gone runs again
            lost = markers_missing(self.plan, self.store.finished_units())
            self._requeue(sorted({*self.store.unfinished_units(), *lost}))
        done = self.store.finished_units() if self.options.resume else set()
        tracker = DependencyTracker(self.plan, done)
        ready: deque[Release] = deque(Release(k) for k in tracker.initial())
        self.done_tasks = sum(len(self.plan.unit_samples(k)) for k in done)
        self.store.set_state(StudyState.RUNNING)
        from merlin_mdm.backends.worker_pool import WorkerPool

        pool = WorkerPool(self.plan, self.workers)
        watch = self.options.signals
        try:
            with self._progress() as bar, watch.deferred() if watch else nullcontext():
                self._loop(pool, tracker, ready, bar)
                if self.moved:
                    self._stop_moved(pool)
                if self.claim_lost is not None:
                    self._stop_claimed(pool, self.claim_lost)
                if watch is not None and watch.received:
                    return self._interrupt(pool, watch.received)
        except KeyboardInterrupt:  # only without a SignalWatch (library use)
            return self._interrupt(pool, signal.SIGINT)
        pool.shutdown()
        return self._finish(tracker)

    def _signalled(self) -> int:
        watch = self.options.signals
        return watch.count if watch is not None else 0

    def _loop(self, pool: WorkerPool, tracker: DependencyTracker, ready: deque[Release], bar: Any) -> None:
        from merlin_mdm.backends import worker_pool

        # With a signal watch the wait wakes up a few times a second to notice a stop signal.
        timeout = POLL_SECONDS if self.options.signals is not None else None
        while (ready or pool.busy()) and not self._signalled() and not self._moved() and not self._lost_claim():
            self._submit_ready(pool, tracker, ready)
            if not pool.busy():
                continue
            for event in pool.next_event(timeout=timeout):
                if isinstance(event, worker_pool.TaskEnded):  # progress per sample, in the bar and in status
                    self._tasks_ended(event.key, event.n, bar)
                    continue
                if isinstance(event, worker_pool.Finished) and not event.outcome.ok and self._moved():
                    continue  # its tasks did not run because the workspace moved: queued again by _stop_moved
                self.in_flight.discard(event.key)
                self.slots.release(self.held.pop(event.key, ()))
                outcome = self._outcome(event, pool, ready)
                if outcome is None:
                    continue
                key = event.key
                self.store.unit_finished(key, outcome)
                _log.info("%s (unit %s) ended: %d finished, %d failed, %d not run", self._name(key), key.to_id(),
                          outcome.finished, outcome.failed, outcome.not_run)
                self._advance(bar, max(0, len(self.plan.unit_samples(key)) - self.ticks.pop(key, 0)))
                if outcome.stop and not self.stop_reason:
                    self._request_stop(key, outcome.stop, pool)
                ready.extend(tracker.complete(key, outcome.releases_children, self.plan.instances[key.instance].name,
                                              outcome.raised))

    def _moved(self) -> bool:
        """Whether the workspace's folder was moved or deleted since the run began (then it stays so)."""
        self.moved = self.moved or _identity(self.plan.workspace, self.root_id) != self.root_id
        return self.moved

    def _lost_claim(self) -> bool:
        """Whether another runner took the study: its lock file was deleted under this one, and taken by another
        before this one took it again (:meth:`~merlin_mdm.study.lock.WorkspaceLock.keep`, asked once a second)."""
        keep, now = self.options.keep_claim, time.monotonic()
        if self.claim_lost is None and keep is not None and now - self.claim_checked >= CLAIM_SECONDS:
            self.claim_checked = now
            try:
                said = keep()
            except WorkspaceError as exc:
                self.claim_lost = str(exc)
            else:
                if said:
                    self._say(said)
        return self.claim_lost is not None

    def _stop_claimed(self, pool: WorkerPool, message: str) -> None:
        """Another runner holds the study now: start nothing more, let running units end and record those that
        finished (the study's state and its other units are the other runner's), then fail saying so.

        Raises:
            WorkspaceError: always.
        """
        self._say(f"{message}; running tasks finish")
        pool.request_stop()
        self._record_finished(pool)
        pool.shutdown(interrupt=bool(self._signalled()))
        raise WorkspaceError(message)

    def _record_finished(self, pool: WorkerPool) -> None:
        """Wait for the running units (a signal stops their tasks too) and record those whose every task ran."""
        from merlin_mdm.backends import worker_pool

        while pool.busy() and not self._signalled():
            for event in pool.next_event(timeout=POLL_SECONDS):
                if isinstance(event, worker_pool.Finished) and event.outcome.ok:
                    self.in_flight.discard(event.key)
                    with contextlib.suppress(MerlinMdmError):  # a deleted store: the done-markers tell restart
                        self.store.unit_finished(event.key, event.outcome)

    def _stop_moved(self, pool: WorkerPool) -> None:
        """The workspace moved or was deleted: start nothing more, let running units end (their tasks write their
        done-markers in the moved folders), queue again what did not finish, then fail with what to do.

        Raises:
            WorkspaceError: always.
        """
        from merlin_mdm.backends.execution import workspace_gone_message

        message = workspace_gone_message(self.plan.workspace)
        self._say(f"{message}; no new task starts, running ones finish")
        pool.request_stop()
        self._record_finished(pool)
        pool.shutdown(interrupt=bool(self._signalled()))
        with contextlib.suppress(MerlinMdmError):  # the store moved with the workspace: it still records
            self._requeue(sorted(self.in_flight))
            self.store.set_state(StudyState.INTERRUPTED, message)
        raise WorkspaceError(message)

    def _tasks_ended(self, key: UnitKey, n: int, bar: Any) -> None:
        """``n`` more tasks of the running unit ``key`` ended: move the bar, and record in the status store the
        tasks whose done-marker exists (the truth; a failed task ends without one). Never above the unit's size,
        and the unit's outcome overwrites it when the unit ends."""
        from merlin_mdm.backends.execution import count_done

        self.ticks[key] = self.ticks.get(key, 0) + n
        self._advance(bar, n)
        self.store.unit_progress(key, count_done(self.plan, key))

    def _submit_ready(self, pool: WorkerPool, tracker: DependencyTracker, ready: deque[Release]) -> None:
        """Start ready units in order while workers and slots allow (the first unit waits for its slots)."""
        while ready and pool.idle():
            release = ready[0]
            if release.blocked or self.stop_reason:
                ready.popleft()
                self._not_run(release, tracker, ready)
                continue
            slots = self.slots.acquire(self.plan.instances[release.key.instance].cores)
            if slots is None:
                return
            ready.popleft()
            self.held[release.key] = slots
            self.store.unit_started(release.key, "", time.time())
            self.in_flight.add(release.key)
            pool.submit(release.key, slots)
            where = f" in slot(s) {','.join(map(str, slots))}" if slots else ""
            _log.info("%s (unit %s) started: %d task(s)%s", self._name(release.key), release.key.to_id(),
                      len(self.plan.unit_samples(release.key)), where)

    def _interrupt(self, pool: WorkerPool, signum: int) -> RunReport:
        """Take no more work, give running tasks the grace period, then stop them; record them as queued."""
        from merlin_mdm.backends import worker_pool

        name = signal.Signals(signum).name
        grace = self.options.grace if signum != signal.SIGINT or self._signalled() < 2 else 0.0
        if pool.busy():
            self._say(f"{name}: no new work; running tasks have {grace:g} s to finish (send it again to stop now)")
        pool.request_stop()  # a running unit starts none of its remaining tasks
        deadline = time.monotonic() + grace
        while pool.busy() and self._signalled() < 2 and time.monotonic() < deadline:
            for event in pool.next_event(timeout=min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
                if isinstance(event, worker_pool.Finished) and event.outcome.ok:
                    self.in_flight.discard(event.key)
                    self.store.unit_finished(event.key, event.outcome)
        pool.shutdown(interrupt=True)
        self._requeue(sorted(self.in_flight))
        message = f"stopped by {name}; `merlin-mdm restart` resumes"
        self.store.set_state(StudyState.INTERRUPTED, message)
        return RunReport(StudyState.INTERRUPTED, self.store.snapshot(), message, signal=signum)

    def _requeue(self, keys: list[UnitKey]) -> None:
        """Units that did not end go back to queued, counting the tasks whose done-marker exists."""
        from merlin_mdm.backends.execution import count_done

        self.store.requeue({key: count_done(self.plan, key) for key in keys})

    def _name(self, key: UnitKey) -> str:
        return self.plan.instances[key.instance].name

    def _not_run(self, release: Release, tracker: DependencyTracker, ready: deque[Release]) -> None:
        reason = release.blocked or self.stop_reason or ""
        _log.info("%s (unit %s) not run: %s", self._name(release.key), release.key.to_id(), reason)
        self.store.units_not_run([release.key], reason)
        chain = after_raise(reason) and not self.stop_reason  # left out for a raise: a funnel over it still runs
        ready.extend(tracker.complete(release.key, chain, self.plan.instances[release.key.instance].name, chain))

    def _outcome(self, event: Finished | Lost, pool: WorkerPool, ready: deque[Release]) -> UnitOutcome | None:
        """The outcome to record, or None when a lost unit was queued again."""
        from merlin_mdm.backends import worker_pool

        if isinstance(event, worker_pool.Finished):
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

    def _request_stop(self, key: UnitKey, stop: StopKind, pool: WorkerPool) -> None:
        self.stop_kind = stop
        self.stop_reason = stop_message(stop, self.plan.instances[key.instance].name)
        pool.request_stop()
        self._say(self.stop_reason)

    def _finish(self, tracker: DependencyTracker) -> RunReport:
        leftover = tracker.remaining()
        if leftover:
            self.store.units_not_run(leftover, self.stop_reason or "a parent did not run")
        snap = self.store.snapshot()
        state, message = final_state(self.stop_kind, self.stop_reason or "", snap.count_failed + snap.count_not_run)
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


def _identity(folder: str, known: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The (device, inode) of ``folder``; None when it is not there. Any other error (a passing ESTALE or EIO
    of a parallel file system) says nothing of a move: ``known`` then."""
    try:
        info = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return known
    return info.st_dev, info.st_ino


def _check_db_path(spec: Spec) -> None:
    """Refuse, before the workspace is made, an OUTPUT_PATH so long that its status database could not open."""
    from merlin_mdm.study.workspace import output_path

    longest = output_path(spec).absolute() / f"{spec.description.folder}_20260101-000000.9999" / "merlin_info" / \
        "status.db"  # the longest name a workspace of it can take
    if len(os.fsencode(longest)) > MAX_DB_PATH:
        raise UsageError(too_long(longest))
