"""The local runner's worker slots: a task reserves procs x cores per task of them, never one another's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from .conftest import CLI, counts, merlin, workspace_of

# Each task claims its slots with mkdir (atomic: it fails when the directory exists), holds them a moment,
# and gives them back; a slot claimed twice at once leaves a line in overlaps.txt.
CLAIM = ("for s in $(echo $MERLIN_MDM_SLOTS | tr , ' '); do mkdir {d}/slot_$s || echo $(V) $s >> {d}/overlaps.txt; "
         "done; echo $MERLIN_MDM_SLOTS >> {d}/{name}.txt; sleep 0.3; "
         "for s in $(echo $MERLIN_MDM_SLOTS | tr , ' '); do rmdir {d}/slot_$s; done")


def test_two_core_tasks_never_share_a_slot(write_spec, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.arange(6).reshape(-1, 1))
    spec = write_spec(f"""
        description: {{name: slots, description: two-core and one-core tasks on 4 slots}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples: {{file: s.npy, column_labels: [V]}}
        study:
          - name: wide
            run: {{cmd: "{CLAIM.format(d=tmp_path, name='wide')}", procs: 2}}
          - name: narrow
            run: {{cmd: "{CLAIM.format(d=tmp_path, name='narrow')}"}}
    """)
    result = merlin("run", str(spec), "--local", "--workers", "4", "--batch-size", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert counts(workspace_of(result)) == {"wide": {"finished": 6}, "narrow": {"finished": 6}}
    assert not (tmp_path / "overlaps.txt").exists(), (tmp_path / "overlaps.txt").read_text()
    wide = (tmp_path / "wide.txt").read_text().split()
    narrow = (tmp_path / "narrow.txt").read_text().split()
    assert len(wide) == 6 and all(len(s.split(",")) == 2 for s in wide)
    assert set(wide) <= {"0,1", "2,3"} and set(narrow) <= {"0", "1", "2", "3"}


HUGE = """
    description: {name: huge, description: too big}
    env: {variables: {OUTPUT_PATH: ./out}}
    study:
      - name: ok
        run: {cmd: "true", procs: 2}
      - name: huge
        run:
          cmd: "echo $MERLIN_MDM_SLOTS > slots.txt"
          procs: 3
          cores per task: 2
"""
TOO_BIG = ("step 'huge' needs 6 cores for one task (procs 3 x cores per task 2) but the runner has 4 (--workers 4)\n"
           "to run it here: lower procs (or cores per task), or pass --workers 6 to oversubscribe")


def test_a_task_larger_than_the_runner_is_refused_before_anything_runs(write_spec, tmp_path: Path) -> None:
    spec = write_spec(HUGE)
    result = merlin("run", str(spec), "--local", "--workers", "4", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"Error: {spec}:11:23: study[1].run.cores per task: {TOO_BIG}" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before any workspace was written
    result = merlin("run", str(spec), "--local", "--workers", "6", cwd=tmp_path)  # oversubscribing is asked for
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert (ws / "huge" / "slots.txt").read_text() == "0,1,2,3,4,5\n"


def test_a_restart_on_a_smaller_runner_is_refused_before_anything_runs(write_spec, tmp_path: Path) -> None:
    result = merlin("run", str(write_spec(HUGE)), "--local", "--workers", "6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    for name in ("ok", "huge"):
        (ws / name / "MERLIN_FINISHED").unlink()
    (ws / "huge" / "slots.txt").unlink()
    result = merlin("restart", str(ws), "--local", "--workers", "4", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    copy = ws / "merlin_info" / "huge.partial.yaml"  # the spec as the study ran it
    assert f"Error: {copy}:11:23: study[1].run.cores per task: {TOO_BIG}" in result.stderr
    assert not (ws / "ok" / "MERLIN_FINISHED").exists() and not (ws / "huge" / "slots.txt").exists()
    result = merlin("restart", str(ws), "--local", "--workers", "6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert counts(ws) == {"ok": {"finished": 1}, "huge": {"finished": 1}}


def test_workers_default_to_the_allocation(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: alloc, description: cores from the allocation}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: big
            run: {cmd: "echo $MERLIN_MDM_SLOTS > slots.txt", procs: 3}
    """)
    env = {**os.environ, "SLURM_JOB_ID": "12345", "SLURM_CPUS_ON_NODE": "3"}
    result = subprocess.run([*CLI, "run", str(spec), "--local"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert (workspace_of(result) / "big" / "slots.txt").read_text() == "0,1,2\n"
    env["SLURM_CPUS_ON_NODE"] = "2"
    result = subprocess.run([*CLI, "run", str(spec), "--local"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "but the runner has 2 (this allocation's cores)\nto run it here: lower procs" in result.stderr
    # `validate` does not know the machine that will run the study: it only warns
    result = subprocess.run([*CLI, "validate", str(spec)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert (f"{spec}:6:61: study[0].run.procs: warning: step 'big' needs 3 cores for one task (procs 3 x cores per "
            "task 1) but the runner has 2 (this allocation's cores); `validate` does not know the machine that will "
            "run it, but `run --local` here refuses it unless --workers oversubscribes") in result.stderr
