"""A damaged status database is named with what to do, never read as an empty study, and `restart` rebuilds it
from the done-markers without running a finished task again."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import SAMPLED_STUDY as SAMPLED
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


@pytest.mark.parametrize("change", ["truncated", "deleted", "a row more"])
def test_restart_refuses_a_study_whose_samples_copy_changed_before_anything_runs(tmp_path: Path,
                                                                                  change: str) -> None:
    """A truncated merlin_info/samples.csv fed a task an empty value and marked it done; a deleted one failed
    each task in turn with an internal error."""
    spec = spec_file(tmp_path, SAMPLED.replace('NAP: "0.3"', 'NAP: "0"'))
    assert merlin("run", str(spec), "--local", cwd=tmp_path).returncode == 0
    ws = the_workspace(tmp_path)
    copy = ws / "merlin_info" / "samples.csv"
    if change == "deleted":
        copy.unlink()
    else:
        copy.write_text("0\n1\n2\n" if change == "truncated" else "".join(f"{i}\n" for i in range(31)))
    for marker in list(ws.rglob("MERLIN_FINISHED"))[:3]:
        marker.unlink()
    before = {log: log.read_text() for log in ws.rglob("runs.log")}
    result = merlin("restart", str(ws), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"the study's samples file {copy} changed since the study was made" in result.stderr
    assert {log: log.read_text() for log in ws.rglob("runs.log")} == before  # nothing ran


def test_a_corrupt_plan_is_named_with_what_can_be_done(tmp_path: Path) -> None:
    assert merlin("run", str(spec_file(tmp_path)), "--local", cwd=tmp_path).returncode == 0
    ws = the_workspace(tmp_path)
    plan = ws / "merlin_info" / "plan.json"
    plan.write_text(plan.read_text()[:200])
    for command in ("restart", "detailed-status"):
        result = merlin(command, str(ws), cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{plan} is corrupt (" in result.stderr and "run the spec again for a new study" in result.stderr
