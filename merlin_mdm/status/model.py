"""What the status store records and returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from merlin_mdm.status.states import StopKind, StudyState, TaskState

__all__ = ["StepSummary", "StopKind", "StudySnapshot", "StudyState", "TaskFailure", "TaskState", "UnitOutcome"]


@dataclass(frozen=True)
class TaskFailure:
    """One task that failed or did not run, with why and where its log is."""

    sample: int  # sample index, -1 for a non-sample task
    state: TaskState  # FAILED or NOT_RUN
    rc: int | None  # exit code of the last attempt (None when never started)
    reason: str
    log: str  # path of the task's stderr ('' when it never ran)


@dataclass(frozen=True)
class UnitOutcome:
    """What running one unit (a batch of tasks of one instance) produced."""

    finished: int
    failed: int
    not_run: int
    restarts: int = 0  # extra attempts caused by MERLIN_RESTART/RETRY
    started: float = 0.0  # epoch seconds
    ended: float = 0.0
    host: str = ""
    failures: tuple[TaskFailure, ...] = ()
    stop: StopKind | None = None  # when a task asked to stop the study
    ran: int | None = None  # tasks that ran this time (not found done already); None: every one that ended
    after_raise: bool = False  # not run because a parent raised: blocks its own chain, not a funnel

    @property
    def ok(self) -> bool:
        """Every task finished."""
        return self.failed == 0 and self.not_run == 0

    @property
    def releases_children(self) -> bool:
        """Whether the unit's dependants may run: yes, unless a task hard-failed or did not run (a stop).

        Merlin's semantics: a failed task (soft fail, any unknown exit code) never blocks its dependants, and
        a funnel runs over what exists, so one failed simulation out of thousands does not stop the collector.
        """
        return self.stop is not StopKind.HARD_FAIL and (self.not_run == 0 or self.after_raise)

    @property
    def raised(self) -> bool:
        """Whether a task exited with $(MERLIN_RAISE_ERROR), or the unit was left out for a parent that did: its
        own dependants do not run (Merlin queues no more of the chain), while a funnel over its step still does."""
        from merlin_mdm.spec.exitcodes import ExitCode  # here: `status` loads no spec package (test_layers)

        return self.after_raise or any(f.rc == ExitCode.RAISE_ERROR for f in self.failures)

    @property
    def run_time(self) -> tuple[int, float] | None:
        """(tasks, seconds) the unit ran, when it ran to its end (every task finished or failed); else None.

        None for a unit stopped part way (tasks not run) or one that could not run at all (no start, or
        started and ended at the same instant: :func:`~merlin_mdm.backends.execution.unit_failure`). The tasks
        are those that ran this time: a unit run again after a redelivery skips the tasks it finished before,
        and its time is theirs only (else 15 s tasks showed as 9 s), and one that ran none is not timed.
        """
        tasks = self.finished + self.failed if self.ran is None else self.ran
        if self.not_run or not self.started or self.ended <= self.started or not tasks:
            return None
        return tasks, self.ended - self.started


@dataclass(frozen=True)
class StepSummary:
    """Task counts of one step (all its instances) by state."""

    step: str
    instances: int
    total: int
    counts: dict[str, int]  # TaskState value -> tasks
    restarts: int = 0
    started: float | None = None
    ended: float | None = None
    failures: tuple[tuple[str, TaskFailure], ...] = ()  # (instance name, failure), the first few
    n_failures: int = 0
    # Run times, per task: a unit of n tasks that ran s seconds counts as n tasks of s/n seconds each (its tasks
    # run one after the other). Only units that ran to their end count; a unit queued again drops out.
    run_tasks: int = 0  # tasks of the units timed
    run_seconds: float = 0.0  # the sum of those units' run times
    run_sq: float = 0.0  # the sum over those units of s * s / n (for the spread)

    @property
    def done(self) -> bool:
        """Every task is in a terminal state."""
        return sum(self.counts.get(s.value, 0) for s in TaskState if s.terminal) == self.total

    @property
    def avg_run(self) -> float | None:
        """Mean run time of a task, seconds (Merlin's "avg run time"); None when no unit ran to its end."""
        return self.run_seconds / self.run_tasks if self.run_tasks else None

    @property
    def run_std(self) -> float | None:
        """Standard deviation of a task's run time over the timed tasks (Merlin's "run time std dev")."""
        mean = self.avg_run
        if mean is None:
            return None
        return math.sqrt(max(0.0, self.run_sq / self.run_tasks - mean * mean))


@dataclass(frozen=True)
class StudySnapshot:
    """Where a whole study stands."""

    name: str
    workspace: str
    state: StudyState
    message: str
    steps: tuple[StepSummary, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        """All tasks."""
        return sum(s.total for s in self.steps)

    @property
    def count_failed(self) -> int:
        """Tasks that failed."""
        return self.count(TaskState.FAILED)

    @property
    def count_not_run(self) -> int:
        """Tasks that did not run."""
        return self.count(TaskState.NOT_RUN)

    def count(self, state: TaskState) -> int:
        """Tasks in ``state`` across steps."""
        return sum(s.counts.get(state.value, 0) for s in self.steps)
