"""A damaged status database is named with what to do, never read as an empty study, and `restart` rebuilds it
from the done-markers without running a finished task again."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import assert_status_matches_disk, merlin, spec_file, the_workspace


@pytest.mark.parametrize("damage", ["empty", "half", "deleted"])
def test_a_damaged_status_database_is_named_and_restart_rebuilds_it(tmp_path: Path, damage: str) -> None:
    assert merlin("run", str(spec_file(tmp_path)), "--local", "--workers", "2", cwd=tmp_path).returncode == 0
    ws = the_workspace(tmp_path)
    db = ws / "merlin_info" / "status.db"
    runs = {log: log.read_text() for log in ws.rglob("runs.log")}
    content = db.read_bytes()
    if damage == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"" if damage == "empty" else content[: len(content) // 2] + b"x" * 64)
    for command in ("status", "detailed-status"):
        result = merlin(command, str(ws), cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"`merlin-mdm restart {ws}`" in result.stderr and "done-markers" in result.stderr
    if damage == "empty":  # status read it as an empty study (exit 0) and wrote tables into it
        assert db.stat().st_size == 0
    if damage == "half":
        db.unlink()  # as the message says
    assert merlin("restart", str(ws), cwd=tmp_path).returncode == 0
    assert assert_status_matches_disk(ws)["state"] == "finished"
    assert {log: log.read_text() for log in ws.rglob("runs.log")} == runs  # nothing ran again
