"""The MDLM masking process and loss, and a resumable training loop."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.checkpoint import load_denoiser  # noqa: E402
from merlin_mdm.mdm.training import TrainConfig, corrupt, mdlm_loss, train  # noqa: E402

pytestmark = pytest.mark.torch

TINY = {"task": "blocks", "task_knobs": {"nb": 2, "bl": 2}, "batch_size": 8, "d_model": 16, "n_layers": 1,
        "n_heads": 2, "d_ff": 32, "warmup": 2, "seed": 3}


def test_corrupt_never_masks_the_prompt_and_follows_t() -> None:
    x0 = torch.randint(0, 10, (4000, 12))
    batch = corrupt(x0, 4, 99, torch.Generator().manual_seed(0))
    assert not batch.masked[:, :4].any()
    assert torch.equal(batch.xt == 99, batch.masked)
    assert torch.equal(batch.xt[~batch.masked], x0[~batch.masked])
    frac = batch.masked[:, 4:].float().mean(-1)  # (N,) realised mask ratio
    assert abs(float((frac - batch.t).mean())) < 0.01
    assert 0.45 < float(batch.t.mean()) < 0.55


def test_loss_is_masked_ce_weighted_by_inverse_t_per_answer_token() -> None:
    v = 5
    logits = torch.zeros(2, 3, v)  # uniform predictions: CE = log 5 everywhere
    x0 = torch.zeros(2, 3, dtype=torch.long)
    masked = torch.tensor([[False, True, True], [False, True, False]])
    t = torch.tensor([0.5, 0.25])
    loss = mdlm_loss(logits, x0, masked, t, answer_len=2)
    expected = math.log(v) * (2 / 0.5 + 1 / 0.25) / (2 * 2)
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    assert float(mdlm_loss(logits, x0, torch.zeros_like(masked), t, 2)) == 0.0


def test_train_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    full = train(TrainConfig(steps=6, **TINY), tmp_path / "full", quiet=True)
    train(TrainConfig(steps=3, **TINY), tmp_path / "part", quiet=True)
    resumed = train(TrainConfig(steps=6, **TINY), tmp_path / "part", resume=True, quiet=True)
    assert full.steps == resumed.steps == 6
    a, b = load_denoiser(tmp_path / "full"), load_denoiser(tmp_path / "part")
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name
    meta = json.loads((tmp_path / "part" / "meta.json").read_text())
    assert meta["step"] == 6 and meta["train_summary"]["tokens_per_s"] > 0
    assert meta["train_config"]["task_knobs"] == {"nb": 2, "bl": 2}


def test_train_learns_something(tmp_path) -> None:
    summary = train(TrainConfig(steps=60, lr=1e-2, **{**TINY, "batch_size": 32}), tmp_path / "ck", quiet=True)
    losses = load_denoiser(tmp_path / "ck").extra["losses"]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
    assert summary.n_params > 0


def test_resume_refuses_a_different_model(tmp_path) -> None:
    train(TrainConfig(steps=1, **TINY), tmp_path / "ck", quiet=True)
    with pytest.raises(MdmError, match="cannot resume"):
        train(TrainConfig(steps=2, **{**TINY, "d_model": 32}), tmp_path / "ck", resume=True, quiet=True)


def test_config_validation() -> None:
    with pytest.raises(MdmError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(MdmError, match="lr"):
        TrainConfig(lr=0)
