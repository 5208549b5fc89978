"""A study's order training stopped part-way (SIGTERM to the runner, SIGTERM to the command itself) continues on
`restart` from its saved state and saves the policy an uninterrupted run saves, bit for bit."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import (  # noqa: F401  (start is a fixture)
    CLI,
    assert_status_matches_disk,
    merlin,
    spec_file,
    start,
    the_workspace,
    wait_for,
)

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

ARGS = ["--budget", "2", "--iterations", "1500", "--batch-size", "4", "--rollouts", "2", "--d-model", "8",
        "--select-every", "50", "--select-samples", "8", "--eval-samples", "0", "--seed", "3", "--state-every", "20"]

STUDY = """
    description: {name: order_stop, description: one order training}
    env: {variables: {OUTPUT_PATH: ./out}}
    study:
      - name: train_order
        run:
          cmd: merlin-mdm mdm train-order --denoiser DENOISER ARGS --out $(WORKSPACE)/policy
"""


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from merlin_mdm.mdm.checkpoint import save_denoiser
    from merlin_mdm.mdm.model import Denoiser, DenoiserConfig
    from merlin_mdm.mdm.tasks import make_task

    task = make_task("blocks", nb=2, bl=2, layout="random")
    torch.manual_seed(0)
    cfg = DenoiserConfig(task.vocab_size, task.seq_len, task.mask_id, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    return save_denoiser(tmp_path_factory.mktemp("den"), Denoiser(cfg).eval(), task, {"step": 0})


def _weights(policy_dir: Path) -> list[torch.Tensor]:
    blob = torch.load(policy_dir / "policy.pt", weights_only=True)
    return [*blob["policy_state"].values(), *blob["posterior_state"].values()]


def _saved_iteration(state: Path) -> int:
    return int(torch.load(state, weights_only=True)["iteration"])


@pytest.fixture(scope="module")
def uninterrupted(denoiser: Path, tmp_path_factory: pytest.TempPathFactory) -> list[torch.Tensor]:
    """The policy's weights after the same training run start to end."""
    out = tmp_path_factory.mktemp("whole")
    done = merlin("mdm", "train-order", "--denoiser", str(denoiser), *ARGS, "--out", str(out), cwd=out)
    assert done.returncode == 0, done.stderr
    assert not (out / "train-state.pt").exists()
    return _weights(out)


def test_sigterm_to_the_runner_then_restart_continues_the_training(start, denoiser, uninterrupted,  # noqa: F811
                                                                    tmp_path) -> None:
    spec = spec_file(tmp_path, STUDY.replace("DENOISER", str(denoiser)).replace("ARGS", " ".join(ARGS)))
    runner = start("run", str(spec), "--local", "--workers", "1", "--grace", "0")
    wait_for(lambda: list((tmp_path / "out").glob("*/train_order/policy/train-state.pt")), 120, "a saved state")
    ws = the_workspace(tmp_path)
    state = ws / "train_order" / "policy" / "train-state.pt"
    runner.signal(signal.SIGTERM)
    rc, err = runner.finish()
    assert rc == 128 + signal.SIGTERM, err
    stopped_at = _saved_iteration(state)
    assert 20 <= stopped_at < 1500  # the last periodic state, or the signal's if it was saved within the kill delay
    assert assert_status_matches_disk(ws)["state"] == "interrupted"
    again = merlin("restart", str(ws), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    log = (ws / "train_order" / "train_order.err").read_text()
    assert f"continuing from iteration {stopped_at} of 1500" in log, log
    assert not state.exists() and (ws / "train_order" / "MERLIN_FINISHED").exists()
    assert all(torch.equal(a, b) for a, b in zip(_weights(ws / "train_order" / "policy"), uninterrupted, strict=True))


def test_sigterm_to_the_command_saves_the_iteration_in_flight(denoiser, uninterrupted, tmp_path) -> None:
    out = tmp_path / "policy"
    cmd = [*CLI, "mdm", "train-order", "--denoiser", str(denoiser), *ARGS, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / "train-state.pt").exists(), 120, "a saved state")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped; the state is saved in" in err and "Traceback" not in err
    stopped_at = _saved_iteration(out / "train-state.pt")
    assert 20 <= stopped_at < 1500
    assert not (out / "policy.pt").exists()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"continuing from iteration {stopped_at} of 1500" in again.stderr
    assert all(torch.equal(a, b) for a, b in zip(_weights(out), uninterrupted, strict=True))
