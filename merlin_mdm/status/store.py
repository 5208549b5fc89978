"""The status store contract, shared by every backend (SQLite for the local one, Redis for Celery)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

from merlin_mdm.status.model import StudySnapshot, StudyState, UnitOutcome
from merlin_mdm.study.plan import StudyPlan, UnitKey

__all__ = ["StatusStore"]


class StatusStore(ABC):
    """Where a study stands, task by task, counted per unit so that reading it costs O(steps).

    Every write is idempotent: recording the outcome of a unit twice (a redelivered message) counts once.
    """

    @abstractmethod
    def register(self, plan: StudyPlan) -> None:
        """Record every unit of ``plan`` as queued (no-op for units already known)."""

    @abstractmethod
    def unit_started(self, key: UnitKey, host: str, when: float) -> None:
        """A worker took ``key``."""

    @abstractmethod
    def unit_progress(self, key: UnitKey, done: int) -> None:
        """``done`` tasks of ``key`` (started, not yet recorded) have their done-marker: they count finished.

        Counts, not increments: telling the same or a smaller count again changes nothing, so a redelivered
        unit or a late report never counts a task twice.
        """

    @abstractmethod
    def unit_restarted(self, key: UnitKey, reason: str) -> None:
        """``key`` goes back to the queue (lost worker, retry)."""

    @abstractmethod
    def unit_finished(self, key: UnitKey, outcome: UnitOutcome) -> bool:
        """Record the outcome; False when ``key`` had already been recorded (nothing changes then)."""

    @abstractmethod
    def units_not_run(self, keys: Iterable[UnitKey], reason: str) -> None:
        """Mark units that will not run (failed parent, stopped study) with the reason."""

    @abstractmethod
    def set_state(self, state: StudyState, message: str = "") -> None:
        """Set the study's overall state."""

    @abstractmethod
    def snapshot(self, every_failure: bool = False) -> StudySnapshot:
        """Counts per step and the first failures (``every_failure``: all that are kept, for `detailed-status`),
        without walking the workspace."""

    @abstractmethod
    def finished_units(self) -> set[UnitKey]:
        """Units whose every task finished (skipped on restart)."""

    @abstractmethod
    def reset_unfinished(self) -> list[UnitKey]:
        """Put every unit with a task not finished back to queued; returns them."""

    def unfinished_units(self) -> list[UnitKey]:
        """Units with a task not finished (the embedded backend's restart requeues them)."""
        raise NotImplementedError(f"{type(self).__name__} does not list unfinished units")

    def units_in_flight(self) -> list[UnitKey]:
        """Units recorded as running or restarted: a runner that died left them so."""
        raise NotImplementedError(f"{type(self).__name__} does not list units in flight")

    def requeue(self, finished: Mapping[UnitKey, int]) -> None:
        """Put units back to queued, each with its count of tasks already finished (their done-markers)."""
        raise NotImplementedError(f"{type(self).__name__} cannot requeue units")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
