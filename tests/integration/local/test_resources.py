"""The local runner's worker slots: a task reserves procs x cores per task of them, never one another's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from merlin_mdm.study.layout import Workspace
from tests.integration.conftest import MIXED_STEPS, check_mixed_order

from .conftest import CLI, counts, merlin, workspace_of

# Each task claims its slots with mkdir (atomic: it fails when the directory exists), holds them a moment,
# and gives them back; a slot claimed twice at once leaves a line in overlaps.txt.
CLAIM = ("for s in $(echo $MERLIN_MDM_SLOTS | tr , ' '); do mkdir {d}/slot_$s || echo $(V) $s >> {d}/overlaps.txt; "
         "done; echo $MERLIN_MDM_SLOTS >> {d}/{name}.txt; sleep {sleep}; "
         "for s in $(echo $MERLIN_MDM_SLOTS | tr , ' '); do rmdir {d}/slot_$s; done")
# CLAIM, and a line `sample slots start end` per task in {name}_times.txt (times from `date`, in seconds).
TIMED = "t0=$(date +%s.%N); " + CLAIM + "; echo $(V) $MERLIN_MDM_SLOTS $t0 $(date +%s.%N) >> {d}/{name}_times.txt"


def test_two_core_tasks_never_share_a_slot(write_spec, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.arange(6).reshape(-1, 1))
    spec = write_spec(f"""
        description: {{name: slots, description: two-core and one-core tasks on 4 slots}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples: {{file: s.npy, column_labels: [V]}}
        study:
          - name: wide
            run: {{cmd: "{CLAIM.format(d=tmp_path, name='wide', sleep=0.3)}", procs: 2}}
          - name: narrow
            run: {{cmd: "{CLAIM.format(d=tmp_path, name='narrow', sleep=0.3)}"}}
    """)
    result = merlin("run", str(spec), "--local", "--workers", "4", "--batch-size", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert counts(workspace_of(result)) == {"wide": {"finished": 6}, "narrow": {"finished": 6}}
    assert not (tmp_path / "overlaps.txt").exists(), (tmp_path / "overlaps.txt").read_text()
    wide = (tmp_path / "wide.txt").read_text().split()
    narrow = (tmp_path / "narrow.txt").read_text().split()
    assert len(wide) == 6 and all(len(s.split(",")) == 2 for s in wide)
    assert set(wide) <= {"0,1", "2,3"} and set(narrow) <= {"0", "1", "2", "3"}


def test_units_of_two_core_tasks_are_sized_for_the_two_that_fit(write_spec, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.arange(8).reshape(-1, 1))
    spec = write_spec(f"""
        description: {{name: wide, description: eight 2-core tasks of a second on 4 slots}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples: {{file: s.npy, column_labels: [V]}}
        study:
          - name: wide
            run: {{cmd: "{TIMED.format(d=tmp_path, name='wide', sleep=1)}", procs: 2}}
    """)
    result = merlin("run", str(spec), "--local", "--workers", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert counts(ws) == {"wide": {"finished": 8}}
    assert not (tmp_path / "overlaps.txt").exists(), (tmp_path / "overlaps.txt").read_text()
    # Units for the 2 tasks that run at once, not for 4 slots (2, 2, 1, 1, 1, 1): one unit on each pair of
    # slots until the tail.
    plan = Workspace(ws).load_plan()
    assert [list(plan.unit_samples(key)) for key in plan.units()] == [[0, 1, 2, 3], [4, 5], [6], [7]]
    rows = {int(v): (slots, float(t0), float(t1)) for v, slots, t0, t1 in
            (line.split() for line in (tmp_path / "wide_times.txt").read_text().splitlines())}
    assert sorted(rows) == list(range(8))
    first, second = {rows[v][0] for v in (0, 1, 2, 3)}, {rows[v][0] for v in (4, 5)}
    assert len(first) == len(second) == 1 and first | second == {"0,1", "2,3"}  # a unit keeps its slots
    # The two units that fit ran at once (their first tasks overlap) and the 8 tasks took 4 rounds: no pair
    # of slots ran more than 4 of them (unit 0 on one pair; units 1, 2 and 3 one after another on the other).
    assert rows[0][1] < rows[4][2] and rows[4][1] < rows[0][2]
    per_pair = [sum(1 for slots, _, _ in rows.values() if slots == pair) for pair in ("0,1", "2,3")]
    assert sorted(per_pair) == [4, 4], rows


def test_a_one_core_step_then_a_two_core_step_pair_their_samples(write_spec, tmp_path: Path) -> None:
    """sim (1 core) runs in units of 2, 2, 1, 1, 1, 1 on 4 slots, post (2 cores, aligned) in units of 4, 2, 1, 1:
    each post unit waits for the sim units that hold its samples, and only for those."""
    np.save(tmp_path / "s.npy", np.arange(8).reshape(-1, 1))
    spec = write_spec(MIXED_STEPS.format(d=tmp_path))
    result = merlin("run", str(spec), "--local", "--workers", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert counts(ws) == {"sim": {"finished": 8}, "post": {"finished": 8}}
    plan = Workspace(ws).load_plan()
    assert [plan.n_units(i) for i in range(2)] == [6, 4]
    check_mixed_order(tmp_path)


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
    copy = ws / "merlin_info" / "spec.partial.yaml"  # the spec as the study ran it (named after its file)
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
