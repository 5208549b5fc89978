"""specs/mdm_heavy_part_gpu.sh, the prepared GPU command of issue 11's heavy part, at its smoke scale on the CPU.

A device session has one try at it (15 minutes of device time), so every stage, the deadline and the packing are
checked here, where the script can run for free: a real run of every `merlin-mdm mdm` stage with tiny models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("torch")

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "specs" / "mdm_heavy_part_gpu.sh"


def _run(out: Path, deadline: int, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCALE": "smoke", "THREADS": "1", "DEADLINE": str(deadline), "PYTHON": sys.executable,
           "WORK": str(out.parent / "work"), **extra}
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=900,
                          check=False)


def _stages(out: Path) -> dict[str, str]:
    lines = (out / "stages.txt").read_text().splitlines()
    return {line.split()[0]: line.split()[1] for line in lines if " rc=" in line}


def test_every_stage_runs_and_the_results_come_back_packed(tmp_path: Path) -> None:
    out = tmp_path / "heavy"
    done = _run(out, deadline=800)
    assert done.returncode == 0, done.stderr
    stages = _stages(out)
    expected = {f"arith{s}-{name}" for s in range(3) for name in
                ("train", "fixed", "thr", "eb", "dus", "imitate", "clone", "reward", "specialist")}
    expected |= {f"sudoku90-{name}" for name in
                 ("train", "fixed", "eb", "thr", "dus", "prior", "prior-eval", "imitate", "clone", "reward",
                  "learned")}
    assert set(stages) == expected and set(stages.values()) == {"rc=0"}
    with tarfile.open(out / "results_arith.tar.gz") as tar:
        names = set(tar.getnames())
        member = tar.extractfile("./arith/seed0/specialist/meta.json")
        assert member is not None
        config = json.load(member)["train_config"]
        assert config["policy_kind"] == "sequential-onepass"  # the default POLICY_KIND
        assert config["objective"] == "reward" and config["budget"] == 5  # the T=5 specialist, from the clone
    for seed in range(3):
        assert {f"./eval/arith/seed{seed}/clone_T{cap}.h5" for cap in (5, 10, 15)} <= names
        assert {f"./eval/arith/seed{seed}/thr_t0.99_T{cap}.h5" for cap in (5, 10, 15)} <= names  # capped sweeps
        assert f"./eval/arith/seed{seed}/specialist_T5.h5" in names
        assert f"./arith/seed{seed}/specialist/policy.pt" in names
    assert "stages.txt" in names and "logs/arith0-train.err" in names
    with tarfile.open(out / "results_sudoku9.tar.gz") as tar:
        assert {"./eval/sudoku9/seed0/top_prob_T40.h5", "./eval/sudoku9/seed0/reward_T2.h5",
                "./eval/sudoku9/seed0/prior_T3.h5", "./sudoku9/seed0/prior/meta.json"} <= set(tar.getnames())
        member = tar.extractfile("./sudoku9/seed0/prior/meta.json")
        assert member is not None
        prior = json.load(member)
        assert prior["train_config"]["prior"] == "eb" and prior["train_config"]["select_every"] == 1
        assert prior["selected_iteration"] in (1, 2)  # the best validated iterate was kept (section 22)
    with tarfile.open(out / "den_arith.tar.gz") as tar:
        assert {f"arith/seed{s}/denoiser.pt" for s in range(3)} <= set(tar.getnames())
    assert (out / "den_sudoku9.tar.gz").is_file()
    assert len(list(out.iterdir())) <= 8  # the device tool returns at most 8 files


def test_carried_weights_are_used_instead_of_training_and_other_seeds_train(tmp_path: Path) -> None:
    first = tmp_path / "first" / "heavy"
    assert _run(first, deadline=800, TASKS="sudoku9").returncode == 0
    carried = tmp_path / "carried"
    with tarfile.open(first / "den_sudoku9.tar.gz") as tar:
        tar.extractall(carried, filter="data")
    out = tmp_path / "second" / "heavy"
    done = _run(out, deadline=800, TASKS="sudoku9", S9_SEEDS="0 1", DENOISERS=str(carried))
    assert done.returncode == 0, done.stderr
    stages = (out / "stages.txt").read_text()
    assert f"sudoku90-train rc=0 seconds=0 copied from {carried}/sudoku9/seed0" in stages
    assert "sudoku91-train rc=0" in stages and "copied from" not in stages.split("sudoku91-train")[1].split("\n")[0]
    assert "arith0" not in stages  # TASKS picks the streams
    assert set(_stages(out).values()) == {"rc=0"}
    with tarfile.open(out / "results_sudoku9.tar.gz") as tar:
        member = tar.extractfile("./sudoku9/seed0/den/meta.json")
        assert member is not None
        assert json.load(member)["checkpoint_id"] == json.loads(
            (carried / "sudoku9" / "seed0" / "meta.json").read_text())["checkpoint_id"]
        assert "./eval/sudoku9/seed1/reward_T4.h5" in tar.getnames()
    with tarfile.open(out / "den_sudoku9.tar.gz") as tar:
        assert {f"sudoku9/seed{s}/denoiser.pt" for s in (0, 1)} <= set(tar.getnames())


def test_the_deadline_stops_every_stream_and_still_packs(tmp_path: Path) -> None:
    out = tmp_path / "heavy"
    # trainings far longer than the deadline, and a deadline well past the script's start-up (its machine probe
    # imports torch, which took over 3 s on a loaded 2-core CI machine): every training is running when it comes
    endless = "--steps 1000000 --batch-size 16 --d-model 32 --n-layers 1 --d-ff 64"
    done = _run(out, deadline=20, ARITH_TRAIN=endless, S9_TRAIN=endless)
    assert done.returncode == 0, done.stderr
    stages = _stages(out)
    assert "deadline reached at 20 s" in (out / "stages.txt").read_text()
    trained = ("arith0-train", "arith1-train", "arith2-train", "sudoku90-train")
    assert stages == {**{name: "rc=124" for name in trained}, **{f"{name}-kept": "rc=0" for name in trained}}
    with tarfile.open(out / "den_sudoku9.tar.gz") as tar:  # what the next session carries is usable as it is
        member = tar.extractfile("sudoku9/seed0/meta.json")
        assert member is not None
        meta = json.load(member)
        assert meta["train_summary"]["steps"] == meta["step"] < meta["train_config"]["steps"] == 1000000
    assert (out / "results_arith.tar.gz").is_file() and (out / "results_sudoku9.tar.gz").is_file()
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True, check=False)
    assert left.stdout == ""  # no stage outlives the command


def test_a_used_work_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "old.h5").write_text("an earlier run")
    done = _run(tmp_path / "heavy", deadline=3)
    assert done.returncode == 2 and "is not empty" in done.stderr
    assert not (tmp_path / "heavy" / "stages.txt").exists()
