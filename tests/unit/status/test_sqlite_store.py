"""What only the SQLite status store does (the shared behaviour is in tests/contract/test_status_store_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from merlin_mdm.errors import StatusError
from merlin_mdm.status.sqlite_store import SqliteStatusStore
from merlin_mdm.study.plan import Edge, StepInstance, StudyPlan
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
