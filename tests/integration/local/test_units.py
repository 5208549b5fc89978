"""Units sized for the workers (guided self-scheduling), restart over them, and progress per sample."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from merlin_mdm.backends.execution import DONE_MARKER
from merlin_mdm.backends.worker_pool import Finished, TaskEnded, WorkerPool
from merlin_mdm.spec import load_spec
from merlin_mdm.study.plan import UnitKey
from merlin_mdm.study.workspace import create_workspace
from tests.integration.conftest import wait_until

from .conftest import CLI, counts, merlin, workspace_of


@pytest.mark.parametrize("post_procs", [1, 2])  # 2: post's units are 4, 2, 1, 1 (two of its tasks fit)
def test_units_shrink_for_the_workers_and_restart_stays_exact(write_spec, tmp_path: Path, post_procs: int) -> None:
    np.save(tmp_path / "s.npy", np.arange(8).reshape(-1, 1))
    spec = write_spec(f"""
        description: {{name: guided, description: eight samples on four workers}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples: {{file: s.npy, column_labels: [V]}}
        study:
          - name: sim
            run: {{cmd: "echo $(V) >> {tmp_path}/runs.log; [ $(V) -ne 5 ] || [ -f {tmp_path}/fixed ]"}}
          - name: post
            run: {{cmd: "echo post $(V) >> {tmp_path}/runs.log", depends: [sim], procs: {post_procs}}}
    """)
    result = merlin("run", str(spec), "--local", "--workers", "4", cwd=tmp_path)
    assert result.returncode == 1
    ws = workspace_of(result)
    plan = json.loads((ws / "merlin_info" / "plan.json").read_text())
    assert (plan["batch_size"], plan["slots"]) == (100, 4)  # units of 2, 2, 1, 1, 1, 1 samples
    assert counts(ws) == {"sim": {"finished": 7, "failed": 1}, "post": {"finished": 8}}  # Merlin runs it anyway
    (tmp_path / "fixed").touch()
    units = (ws / "merlin_info" / "plan.json").read_text()
    result = merlin("restart", str(ws), "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (ws / "merlin_info" / "plan.json").read_text() == units  # restart keeps its units on fewer workers
    assert counts(ws) == {"sim": {"finished": 8}, "post": {"finished": 8}}
    runs = (tmp_path / "runs.log").read_text().split("\n")
    assert sorted(r for r in runs if r and not r.startswith("post")) == ["0", "1", "2", "3", "4", "5", "5", "6", "7"]
    assert sorted(r for r in runs if r.startswith("post")) == [f"post {i}" for i in range(8)]


def test_a_worker_reports_each_slow_task_as_it_ends(write_spec, tmp_path: Path) -> None:
    # Each task takes longer than TICK_SECONDS, so each is reported on its own before the unit's outcome.
    np.save(tmp_path / "s.npy", np.arange(3).reshape(-1, 1))
    spec = write_spec("""
        description: {name: ticks, description: progress per sample}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples: {file: s.npy, column_labels: [V]}
        study:
          - name: sim
            run: {cmd: "sleep 0.3 # $(V)"}
    """)
    _, plan = create_workspace(load_spec(spec, {}), batch_size=3)
    pool = WorkerPool(plan, 1)
    try:
        pool.submit(UnitKey(0, 0))
        events: list[object] = []
        while not events or not isinstance(events[-1], Finished):
            events.extend(pool.next_event(timeout=60))
    finally:
        pool.shutdown()
    assert events[:3] == [TaskEnded(UnitKey(0, 0))] * 3
    assert isinstance(events[3], Finished) and events[3].outcome.finished == 3 and len(events) == 4


@pytest.mark.parametrize("before", ["sleep 0.3; ", ""], ids=["slower-than-a-tick", "quick"])
def test_status_counts_the_samples_of_a_running_local_unit_before_it_ends(write_spec, tmp_path: Path,
                                                                           before: str) -> None:
    # One unit of 4 samples on one worker; samples 0-2 take longer than a progress tick, or end at once, 1 fails,
    # 3 waits for `hold`. While 3 runs, status shows the two samples with a done-marker as finished and the unit
    # running (quick ones too: they are reported by the progress timer, not when the slow sample ends).
    hold = tmp_path / "hold"
    hold.touch()
    np.save(tmp_path / "s.npy", np.arange(4).reshape(-1, 1))
    spec = write_spec(f"""
        description: {{name: live, description: progress of a running unit in status}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples: {{file: s.npy, column_labels: [V]}}
        study:
          - name: sim
            run: {{cmd: "{before}[ $(V) != 1 ] || exit 3; while [ $(V) = 3 ] && [ -f {hold} ]; do sleep 0.05; done"}}
    """)
    runner = subprocess.Popen([*CLI, "run", str(spec), "--local", "--workers", "1", "--batch-size", "4"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(list((tmp_path / "out").glob("live_*/merlin_info/plan.json"))) == 1, 60,
                   "the workspace")
        (ws,) = (p.parent.parent for p in (tmp_path / "out").glob("live_*/merlin_info/plan.json"))
        wait_until(lambda: counts(ws).get("sim", {}).get("finished") == 2, 60, "two finished samples in status")
        assert counts(ws) == {"sim": {"running": 4 - 2, "finished": 2}}  # the unit's other two still running
        assert len(list((ws / "sim").rglob(DONE_MARKER))) == 2
    finally:
        hold.unlink()
        assert runner.wait(timeout=60) == 1  # sample 1 failed
    assert counts(ws) == {"sim": {"finished": 3, "failed": 1}}


def test_on_a_large_study_status_checks_each_units_last_marker_only(
        write_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past studies.MARKER_CHECKS finished tasks, one marker a unit (the one written last): a scratch purge
    takes whole trees, and `status` stays one existence check a unit."""
    from merlin_mdm import studies
    from merlin_mdm.study.layout import Workspace

    np.save(tmp_path / "s.npy", np.arange(6).reshape(-1, 1))
    spec = write_spec("""
        description: {name: purged, description: six samples in units of two}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples: {file: s.npy, column_labels: [V]}
        study:
          - name: work
            run: {cmd: "echo $(V)"}
    """)
    result = merlin("run", str(spec), "--local", "--batch-size", "2", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = Workspace(workspace_of(result))
    markers = sorted(ws.root.glob(f"work/**/{DONE_MARKER}"))
    assert len(markers) == 6 and studies.finished_without_markers(ws) == (0, "")
    markers[0].unlink()  # the first task of its unit: seen by the full check only
    assert studies.finished_without_markers(ws) == (1, "")
    monkeypatch.setattr(studies, "MARKER_CHECKS", 5)  # 6 tasks: one marker a unit (3 units)
    assert studies.finished_without_markers(ws) == (0, "in units whose last task has")
    markers[-1].unlink()  # the last task of its unit: its whole unit counts
    assert studies.finished_without_markers(ws) == (2, "in units whose last task has")
    monkeypatch.setattr(studies, "MARKER_CHECKS", 2)  # 3 units: the first and the last looked at
    assert studies.finished_without_markers(ws) == (2, "in units whose last task has (of 2 of 3 units looked at)")
