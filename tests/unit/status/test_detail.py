"""`detailed-status` rows: the done-marker on disk, the recorded failures, and the units in flight."""

from __future__ import annotations

from pathlib import Path

from merlin_mdm.status.detail import task_rows
from merlin_mdm.status.model import StepSummary, StudySnapshot, StudyState, TaskFailure, TaskState
from merlin_mdm.study.plan import Edge, StepInstance, StudyPlan, UnitKey
from merlin_mdm.study.samples import SampleSet


def _plan(ws: Path) -> StudyPlan:
    """Step a over 6 samples in units of 2 (units 0, 1, 2), then a funnel b."""
    a = StepInstance(0, "a", "a", "", "a", "echo", None, "/bin/bash", True, ())
    b = StepInstance(1, "b", "b", "", "b", "echo", None, "/bin/bash", False, (Edge(0, False),))
    return StudyPlan("s", str(ws), (a, b), SampleSet(f"{ws}/s.npy", 6, ("X",)), 2)


def _snap(state: StudyState, failures: tuple[tuple[str, TaskFailure], ...] = ()) -> StudySnapshot:
    return StudySnapshot("s", "", state, "", (StepSummary("a", 1, 6, {}, failures=failures),
                                             StepSummary("b", 1, 1, {})))


def test_tasks_of_units_in_flight_are_running_unless_finished_or_failed(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    for sample in (0, 2):  # unit 0's first task and unit 1's first task finished
        folder = tmp_path / "a" / plan.samples.path(sample)  # type: ignore[union-attr]
        folder.mkdir(parents=True)
        (folder / "MERLIN_FINISHED").touch()
    failed = (("a", TaskFailure(5, TaskState.FAILED, 1, "exit code 1", "")),)
    rows = list(task_rows(plan, _snap(StudyState.RUNNING, failed), [UnitKey(0, 0), UnitKey(0, 2)]))
    assert [(r.instance, r.sample, r.status) for r in rows] == [
        ("a", 0, "finished"), ("a", 1, "running"),  # unit 0, in flight
        ("a", 2, "finished"), ("a", 3, "queued"),  # unit 1, waiting
        ("a", 4, "running"), ("a", 5, "failed"),  # unit 2, in flight, a failure already recorded
        ("b", -1, "queued")]


def test_a_study_that_is_over_has_nothing_running(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    rows = list(task_rows(plan, _snap(StudyState.INTERRUPTED), [UnitKey(0, 0)]))
    assert {r.status for r in rows} == {"queued"}  # as `status` counts them: a restart runs them
    rows = list(task_rows(plan, _snap(StudyState.FINISHED), [UnitKey(0, 0)]))
    assert {r.status for r in rows} == {"unknown"}  # over, yet neither a done-marker nor a failure
