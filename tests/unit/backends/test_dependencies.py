"""Dependency counting over units."""

from __future__ import annotations

import dataclasses

from merlin_mdm.backends.dependencies import DependencyTracker, Release
from merlin_mdm.study.plan import Edge, StepInstance, StudyPlan, UnitKey
from merlin_mdm.study.samples import SampleSet


def _inst(i: int, samples: bool, parents: tuple[Edge, ...] = ()) -> StepInstance:
    return StepInstance(i, f"s{i}", f"s{i}", "", f"s{i}", "true", None, "/bin/bash", samples, parents)


def _plan() -> StudyPlan:
    # s0 (samples) -> s1 (samples, aligned) -> s2 (funnel-like, waits for all of s1)
    insts = (_inst(0, True), _inst(1, True, (Edge(0, True),)), _inst(2, False, (Edge(1, False),)))
    return StudyPlan("p", "/ws", insts, SampleSet("/ws/s.npy", 5, ("X",)), 2)


def test_initial_units_are_the_roots() -> None:
    tracker = DependencyTracker(_plan())
    assert tracker.initial() == [UnitKey(0, 0), UnitKey(0, 1), UnitKey(0, 2)]


def test_aligned_child_released_by_its_own_parent_unit() -> None:
    tracker = DependencyTracker(_plan())
    tracker.initial()
    assert tracker.complete(UnitKey(0, 1), True, "s0") == [Release(UnitKey(1, 1))]
    # an aligned child still runs when its parent unit had failures (the executor skips those samples)
    assert tracker.complete(UnitKey(0, 0), False, "s0") == [Release(UnitKey(1, 0))]


def test_funnel_waits_for_every_unit_and_is_blocked_by_a_failure() -> None:
    tracker = DependencyTracker(_plan())
    tracker.initial()
    assert tracker.complete(UnitKey(1, 0), True, "s1") == []
    assert tracker.complete(UnitKey(1, 1), False, "s1") == []
    (release,) = tracker.complete(UnitKey(1, 2), True, "s1")
    assert release.key == UnitKey(2, 0) and release.blocked == "parent s1 did not finish every task"
    assert UnitKey(2, 0) not in tracker.remaining()


def test_resume_treats_done_units_as_complete() -> None:
    plan = _plan()
    done = {UnitKey(0, u) for u in range(3)} | {UnitKey(1, 0), UnitKey(1, 1)}
    tracker = DependencyTracker(plan, done)
    assert tracker.initial() == [UnitKey(1, 2)]
    assert tracker.complete(UnitKey(1, 2), True, "s1") == [Release(UnitKey(2, 0))]


def _wide_plan() -> StudyPlan:
    # 8 samples on 4 slots: s0 (1 core) in units 2,2,1,1,1,1; s1 (2 cores, aligned) in units 4,2,1,1
    insts = (_inst(0, True), dataclasses.replace(_inst(1, True, (Edge(0, True),)), cores=2))
    return StudyPlan("p", "/ws", insts, SampleSet("/ws/s.npy", 8, ("X",)), 100, slots=4)


def test_an_aligned_child_sized_apart_waits_for_the_parent_units_holding_its_samples() -> None:
    plan = _wide_plan()
    assert [plan.unit_samples(UnitKey(1, u)) for u in range(plan.n_units(1))] == [
        range(0, 4), range(4, 6), range(6, 7), range(7, 8)]
    tracker = DependencyTracker(plan)
    assert tracker.initial() == [UnitKey(0, u) for u in range(6)]
    assert tracker.complete(UnitKey(0, 1), True, "s0") == []  # samples 2-3: s1's unit 0 also needs 0-1
    assert tracker.complete(UnitKey(0, 0), False, "s0") == [Release(UnitKey(1, 0))]
    assert tracker.complete(UnitKey(0, 3), True, "s0") == []  # sample 5 of s1's unit 1 (samples 4-5)
    assert tracker.complete(UnitKey(0, 2), True, "s0") == [Release(UnitKey(1, 1))]
    assert tracker.complete(UnitKey(0, 5), True, "s0") == [Release(UnitKey(1, 3))]
    assert tracker.remaining() == [UnitKey(1, 2)]
