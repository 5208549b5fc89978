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


def test_a_task_larger_than_the_runner_runs_alone_with_a_warning(write_spec, tmp_path: Path) -> None:
    # Merlin runs it anyway (its own examples ask for 4 processes); here it takes every slot.
    spec = write_spec("""
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
    """)
    result = merlin("run", str(spec), "--local", "--workers", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (f"{spec}:11:23: study[1].run.cores per task: warning: step 'huge' needs 6 cores for one task "
            "(procs x cores per task) but the runner (--workers 4) has 4; each of its tasks takes every slot") \
        in result.stderr
    assert (workspace_of(result) / "huge" / "slots.txt").read_text() == "0,1,2,3\n"


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
    assert result.returncode == 0 and "but this allocation has 2; each of its tasks takes every slot" in result.stderr
    assert (workspace_of(result) / "big" / "slots.txt").read_text() == "0,1\n"
