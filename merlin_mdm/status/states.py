"""The states of a study, of a task and of a stop request, and the one function that decides how a study ends.

Every backend and store uses these: the local runner, the SQLite store, and the Redis store (which keeps the
values as strings and asks :func:`final_state` when its last unit is recorded). Pure.
"""

from __future__ import annotations

import enum

__all__ = ["DRY_RUN_WORD", "RAISED_REASON", "StopKind", "StudyState", "TaskState", "after_raise", "final_state",
           "stop_message"]

# How a unit left out by $(MERLIN_RAISE_ERROR) says why: the tail of its not-run reason (one wording for the
# dependency counts in memory and in Redis), by which it passes the block on down its own chain.
RAISED_REASON = "raised an error ($(MERLIN_RAISE_ERROR))"
DRY_RUN_WORD = "dry_run"  # a task of a dry-run study: written, never queued (see StudyState.unrun_word)


def after_raise(reason: str) -> bool:
    """Whether a unit was left out, with ``reason``, because a parent raised (or was itself left out so)."""
    return reason.endswith(RAISED_REASON)


class TaskState(enum.StrEnum):
    """The state of one task (one step instance x one sample)."""

    QUEUED = "queued"  # waiting for its parents or for a free worker
    RUNNING = "running"
    RESTARTED = "restarted"  # re-queued after MERLIN_RESTART/RETRY or a lost worker
    FINISHED = "finished"
    FAILED = "failed"
    NOT_RUN = "not_run"  # a parent failed or the study stopped; the reason is recorded

    @property
    def terminal(self) -> bool:
        """True for states a task never leaves on its own."""
        return self in (TaskState.FINISHED, TaskState.FAILED, TaskState.NOT_RUN)


class StudyState(enum.StrEnum):
    """The state of a whole study."""

    CREATED = "created"  # registered, nothing queued yet
    DRY_RUN = "dry_run"  # `run --dry`: its scripts written, nothing queued or run; `restart` runs it (Merlin's DRY_RUN)
    QUEUED = "queued"  # on the broker, waiting for workers
    RUNNING = "running"
    FINISHED = "finished"  # every task finished
    FAILED = "failed"  # a task failed or did not run, or MERLIN_HARD_FAIL stopped it
    STOPPED = "stopped"  # MERLIN_STOP_WORKERS stopped it
    INTERRUPTED = "interrupted"  # the local runner was interrupted; `restart` resumes
    PURGED = "purged"  # its waiting messages were purged from the broker; `restart` queues them again
    UNKNOWN = "unknown"  # the store holds no state (never registered)

    @property
    def over(self) -> bool:
        """True when no unit of the study will run any more without a restart."""
        return self in (StudyState.FINISHED, StudyState.FAILED, StudyState.STOPPED, StudyState.INTERRUPTED,
                        StudyState.PURGED, StudyState.DRY_RUN)

    @property
    def unrun_word(self) -> str:
        """What a task that has not run is called in this study: ``dry_run`` in a dry-run study (its tasks wait
        for a `restart`, Merlin's DRY_RUN), ``queued`` otherwise. The table, the JSON counts, `detailed-status`
        and `--dump` all ask here."""
        return DRY_RUN_WORD if self is StudyState.DRY_RUN else TaskState.QUEUED.value

    @classmethod
    def parse(cls, value: str | None) -> StudyState:
        """The state a store recorded as text (UNKNOWN for none or an unknown word)."""
        try:
            return cls(value or "unknown")
        except ValueError:
            return cls.UNKNOWN


class StopKind(enum.StrEnum):
    """Why a task asked to stop the study (its exit code)."""

    HARD_FAIL = "hard_fail"  # MERLIN_HARD_FAIL: the study fails
    STOP_WORKERS = "stop_workers"  # MERLIN_STOP_WORKERS: the study stops, its task counts as finished

    @property
    def code(self) -> str:
        """The exit code's name, as a step script writes it."""
        return "MERLIN_HARD_FAIL" if self is StopKind.HARD_FAIL else "MERLIN_STOP_WORKERS"


def stop_message(kind: StopKind, instance: str) -> str:
    """What a study stopped by ``instance`` says, in status and in the runner's output."""
    return f"study stopped: {instance} exited with {kind.code}"


def final_state(stop: StopKind | None, stop_reason: str, not_finished: int) -> tuple[StudyState, str]:
    """How a study whose every unit is recorded ends, and its message.

    Args:
        stop: the first stop request of a task, if any.
        stop_reason: its message (:func:`stop_message`).
        not_finished: tasks that failed or did not run.
    """
    if stop is StopKind.STOP_WORKERS:
        return StudyState.STOPPED, stop_reason
    if stop is StopKind.HARD_FAIL:
        return StudyState.FAILED, stop_reason
    if not_finished > 0:
        return StudyState.FAILED, f"{not_finished} task(s) failed or did not run"
    return StudyState.FINISHED, ""
