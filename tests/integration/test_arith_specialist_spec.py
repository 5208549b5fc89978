"""specs/mdm_arith_t5_specialist.yaml, the by-hand lineage of the arith T=5 specialist (docs/mdm-order-learning.md
sections 16 and 17) as one study, run whole at a smoke scale with the embedded runner: every stage starts from
the one before it, with the seeds the by-hand runs used, and the aggregate reports the specialist at T=5."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO
from tests.integration.launching import merlin

pytest.importorskip("torch")

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SPEC = REPO / "specs" / "mdm_arith_t5_specialist.yaml"
SMOKE = {
    "STEPS_FIRST": "20", "STEPS_RESUMED": "30",
    "CLONE": "--budget 10 --objective imitate --teacher threshold --teacher-knob tau=0.99 --iterations 2"
             " --batch-size 8",
    "FIRST_STAGE": "--iterations 2 --batch-size 4 --rollouts 2", "STAGE": "--iterations 1 --batch-size 4 --rollouts 2",
    "N_EXAMPLES": "20", "THRESHOLDS": "0.9,0.99", "GAMMAS": "0.1",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("specialist")
    overrides = [arg for key, value in SMOKE.items() for arg in ("--vars", f"{key}={value}")]
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    done = merlin("run", str(SPEC), "--local", "--workers", "2", "--vars", f"OUTPUT_PATH={out}", *overrides,
                  cwd=out, env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = out.glob("mdm_arith_t5_specialist_*")
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_specialist_descends_from_the_clone_stage_by_stage(workspace: Path, seed: int) -> None:
    steps = workspace / "train_specialist" / f"TRAIN_SEED.{seed}"
    assert all((steps / f"stage{k}" / "policy.pt").is_file() for k in range(1, 5))
    meta = json.loads((steps / "policy" / "meta.json").read_text())
    ancestors = meta["lineage"]["ancestors"]
    assert meta["lineage"]["stage"] == 8 and meta["train_config"]["seed"] == int(f"19{seed}")
    assert [a["objective"] for a in ancestors] == ["imitate"] * 3 + ["reward"] * 4
    assert [a["budgets"] for a in ancestors[:3]] == [[10, 15], [10, 15], [5, 10, 15]]
    assert meta["budgets"] == [5] and meta["denoiser_dir"] == str(
        workspace / "train_denoiser" / f"TRAIN_SEED.{seed}" / "denoiser")


def test_the_denoiser_is_resumed_from_the_first_checkpoint(workspace: Path) -> None:
    folder = workspace / "train_denoiser" / "TRAIN_SEED.0"
    first = json.loads((folder / "denoiser5000" / "meta.json").read_text())
    resumed = json.loads((folder / "denoiser" / "meta.json").read_text())
    assert (first["step"], resumed["step"]) == (20, 30)
    assert resumed["losses"][:20] == first["losses"]  # the same first 20 steps, then 10 more


def test_the_report_holds_the_specialist_against_the_capped_baselines(workspace: Path) -> None:
    report = (workspace / "aggregate" / "results.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| learned (T=5, ")]
    assert rows and all("objective=reward" in row and "stage=8" in row for row in rows)
    assert "| threshold (tau=0.99) | 5 |" in report and "| eb (gamma=0.1) | 5 |" in report
