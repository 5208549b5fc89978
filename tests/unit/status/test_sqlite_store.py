"""The SQLite status store: registration, idempotent outcomes, counts, failures, restart bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from merlin_mdm.errors import StatusError
from merlin_mdm.status.model import TaskFailure, TaskState, UnitOutcome
from merlin_mdm.status.sqlite_store import SqliteStatusStore
from merlin_mdm.study.plan import Edge, StepInstance, StudyPlan, UnitKey
from merlin_mdm.study.samples import SampleSet


def _plan(n_samples: int = 10, batch: int = 4) -> StudyPlan:
    a = StepInstance(0, "a", "a", "", "a", "echo", None, "/bin/bash", True, ())
    b = StepInstance(1, "b", "b", "", "b", "echo", None, "/bin/bash", False, (Edge(0, False),))
    return StudyPlan("s", "/ws", (a, b), SampleSet("/ws/s.npy", n_samples, ("X",)), batch)


def test_register_counts_every_task_queued(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "status.db")
    store.register(_plan())
    store.register(_plan())  # idempotent
    snap = store.snapshot()
    assert [(s.step, s.instances, s.total, s.counts["queued"]) for s in snap.steps] == [("a", 1, 10, 10),
                                                                                       ("b", 1, 1, 1)]
    assert snap.name == "s" and snap.state == "created"


def test_outcomes_count_once_and_failures_are_listed(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "status.db")
    store.register(_plan())
    key = UnitKey(0, 1)
    store.unit_started(key, "host", 1.0)
    assert store.snapshot().steps[0].counts["running"] == 4
    failure = TaskFailure(5, TaskState.FAILED, 1, "exit code 1", "/ws/a/05/a.err")
    outcome = UnitOutcome(3, 1, 0, 2, 1.0, 3.0, "host", (failure,))
    assert store.unit_finished(key, outcome) is True
    assert store.unit_finished(key, outcome) is False  # a redelivery changes nothing
    step = store.snapshot().steps[0]
    assert step.counts == {"queued": 6, "running": 0, "restarted": 0, "finished": 3, "failed": 1, "not_run": 0}
    assert step.restarts == 2 and step.n_failures == 1
    assert step.failures[0] == ("a", failure)
    assert (step.started, step.ended) == (1.0, 3.0)


def test_not_run_and_reset_unfinished(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "status.db")
    store.register(_plan())
    for unit in range(3):
        n = 4 if unit < 2 else 2
        store.unit_finished(UnitKey(0, unit), UnitOutcome(n - (unit == 1), unit == 1, 0))
    store.units_not_run([UnitKey(1, 0)], "parent a did not finish every task")
    snap = store.snapshot()
    assert snap.steps[1].counts["not_run"] == 1
    assert snap.steps[1].failures[0][1].reason == "parent a did not finish every task"
    assert store.finished_units() == {UnitKey(0, 0), UnitKey(0, 2)}
    assert sorted(store.reset_unfinished()) == [UnitKey(0, 1), UnitKey(1, 0)]
    snap = store.snapshot()
    assert snap.steps[0].counts["queued"] == 4 and snap.steps[0].counts["finished"] == 6
    assert snap.steps[1].n_failures == 0


def test_readonly_open_of_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StatusError, match="no status database"):
        SqliteStatusStore(tmp_path / "missing.db", readonly=True)


def test_status_reads_while_another_connection_writes(tmp_path: Path) -> None:
    writer = SqliteStatusStore(tmp_path / "status.db")
    writer.register(_plan())
    reader = SqliteStatusStore(tmp_path / "status.db", readonly=True)
    writer.db.execute("BEGIN IMMEDIATE")
    writer.db.execute("UPDATE units SET state='running'")
    assert reader.snapshot().steps[0].counts["queued"] == 10  # WAL: the reader sees the last commit
    writer.db.execute("COMMIT")
    assert reader.snapshot().steps[0].counts["running"] == 10
