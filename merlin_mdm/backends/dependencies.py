"""Dependency counting over units: a unit becomes ready the moment its last parent unit is done.

Pure and in memory; the local backend uses it directly. The Celery backend keeps the same counts in Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from merlin_mdm.status.states import RAISED_REASON
from merlin_mdm.study.plan import Edge, StudyPlan, UnitKey

__all__ = ["DependencyTracker", "Release", "blocked_by"]


def blocked_by(edge: Edge, ok: bool, raised: bool, name: str) -> str | None:
    """Why the child at the end of ``edge`` must not run after its parent unit ``name`` (None when it may): the
    parent was not ok (a hard fail, or not run) and the child is not aligned with it, or the parent raised an
    error and the child is no funnel (Merlin 1.13 queues no more of the chain; its chords still run)."""
    if not ok and not edge.aligned:
        return f"parent {name} did not finish every task"
    if raised and not edge.funnel:
        return f"parent {name} {RAISED_REASON}"
    return None


@dataclass(frozen=True)
class Release:
    """A unit whose parents are all done: run it, or (``blocked``) mark it not run for that reason."""

    key: UnitKey
    blocked: str | None = None


class DependencyTracker:
    """Counts unfinished parents per unit and releases units as their parents complete."""

    def __init__(self, plan: StudyPlan, done: Iterable[UnitKey] = ()):
        self.plan = plan
        self.children = plan.children()
        self.done = set(done)
        self.waiting: dict[UnitKey, int] = {}
        self.blocked: dict[UnitKey, str] = {}

    def initial(self) -> list[UnitKey]:
        """Units that can start now (done units excluded)."""
        ready = []
        for key in self.plan.units():
            if key in self.done:
                continue
            remaining = sum(1 for parent in self.plan.unit_parents(key) if parent not in self.done)
            if remaining:
                self.waiting[key] = remaining
            else:
                ready.append(key)
        return ready

    def complete(self, key: UnitKey, ok: bool, name: str, raised: bool = False) -> list[Release]:
        """Record ``key`` as done; ``ok`` False when its dependants must not run (a hard fail, or not run);
        ``raised`` when a task exited with $(MERLIN_RAISE_ERROR).

        A failed task does not make a unit not ok (:attr:`UnitOutcome.releases_children`: Merlin's semantics).
        An aligned child (its samples after the same samples) always runs; any other child of a unit that is not
        ok is blocked. A unit that raised blocks every child but a funnel (:func:`blocked_by`).
        """
        releases = []
        for edge in self.children[key.instance]:
            units = self.plan.aligned_units(edge.parent, key) if edge.aligned else range(self.plan.n_units(edge.parent))
            for child in (UnitKey(edge.parent, u) for u in units):
                if child not in self.waiting:
                    continue
                why = blocked_by(edge, ok, raised, name)
                if why:
                    self.blocked.setdefault(child, why)
                self.waiting[child] -= 1
                if self.waiting[child] == 0:
                    del self.waiting[child]
                    releases.append(Release(child, self.blocked.pop(child, None)))
        return releases

    def remaining(self) -> list[UnitKey]:
        """Units still waiting for a parent."""
        return sorted(self.waiting)
