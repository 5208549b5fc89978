"""What only the SQLite status store does (the shared behaviour is in tests/contract/test_status_store_contract.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from merlin_mdm.errors import StatusError
from merlin_mdm.status.model import UnitOutcome
from merlin_mdm.status.sqlite_store import SqliteStatusStore
from merlin_mdm.study.plan import Edge, StepInstance, StudyPlan, UnitKey
from merlin_mdm.study.samples import SampleSet


def _plan(n_samples: int = 10, batch: int = 4) -> StudyPlan:
    a = StepInstance(0, "a", "a", "", "a", "echo", None, "/bin/bash", True, ())
    b = StepInstance(1, "b", "b", "", "b", "echo", None, "/bin/bash", False, (Edge(0, False),))
    return StudyPlan("s", "/ws", (a, b), SampleSet("/ws/s.npy", n_samples, ("X",)), batch)


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


def test_a_database_from_before_run_times_is_read_then_gains_them(tmp_path: Path) -> None:
    """A study started by an older merlin-mdm: `status` reads it as is; its next writer adds the columns."""
    path = tmp_path / "status.db"
    SqliteStatusStore(path).register(_plan())
    with sqlite3.connect(path) as db:  # the units table as it was before run_s and run_n
        db.execute("ALTER TABLE units DROP COLUMN run_s")
        db.execute("ALTER TABLE units DROP COLUMN run_n")
    old = SqliteStatusStore(path, readonly=True)
    assert (old.timed, old.snapshot().steps[0].counts["queued"], old.snapshot().steps[0].avg_run) == (False, 10, None)
    writer = SqliteStatusStore(path)
    writer.unit_finished(UnitKey(0, 0), UnitOutcome(4, 0, 0, 0, 1.0, 9.0))
    assert (writer.timed, writer.snapshot().steps[0].avg_run) == (True, 2.0)
    assert SqliteStatusStore(path, readonly=True).snapshot() == writer.snapshot()
