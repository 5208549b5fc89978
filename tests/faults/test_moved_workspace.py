"""A workspace moved or deleted under a running study: the runner stops starting tasks and never writes a second
tree; moved back, `restart` finishes the study without running anything twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import merlin, spec_file, status_json, wait_for

STUDY = """
    description: {name: moving, description: moved while it runs}
    env: {variables: {OUTPUT_PATH: ./studies}}
    global.parameters:
      P: {values: [a, b, c, d, e, f], label: P.%%}
    study:
      - name: one
        run: {cmd: "if [ -f MERLIN_FINISHED ]; then touch TWICE; fi; echo $(P) >> runs.log; sleep 1"}
      - name: two
        run: {cmd: "if [ -f MERLIN_FINISHED ]; then touch TWICE; fi; echo $(P) >> runs.log", depends: [one_*]}
"""


@pytest.mark.parametrize("what", ["parent", "workspace"])
def test_a_moved_workspace_stops_the_study_and_restarts_where_it_was(start, tmp_path: Path, what: str) -> None:
    spec = spec_file(tmp_path, STUDY)
    runner = start("run", str(spec), "--local", "--workers", "2", "--no-progress")
    studies = tmp_path / "studies"
    wait_for(lambda: any(studies.glob("moving_*/one/*/MERLIN_FINISHED")), 60, "a finished task")
    (ws,) = studies.glob("moving_*")
    moved = tmp_path / "studiesR" / ws.name if what == "parent" else studies / "elsewhere"
    shutil.move(studies if what == "parent" else ws, moved.parent if what == "parent" else moved)
    rc, err = runner.finish()
    assert rc == 1, err
    assert f"Error: the workspace {ws} was moved or deleted while the study ran; move it back and " \
           f"`merlin-mdm restart {ws}`" in err
    assert "Traceback" not in err
    assert not ws.exists() and not (what == "parent" and studies.exists()), "a second tree was written"
    shutil.move(moved.parent if what == "parent" else moved, studies if what == "parent" else ws)
    assert status_json(ws)["state"] == "interrupted"  # moved back: it says how it ended, and restart resumes
    result = merlin("restart", str(ws), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not list(ws.rglob("TWICE"))
    logs = {log.relative_to(ws).as_posix(): log.read_text() for log in ws.rglob("runs.log")}
    assert logs == {f"{step}/P.{p}/runs.log": f"{p}\n" for step in ("one", "two") for p in "abcdef"}
    assert status_json(ws)["state"] == "finished"
