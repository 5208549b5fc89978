"""The denoiser's shapes, the mask logit, config validation and the checkpoint round trip."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.errors import CheckpointError, MdmError  # noqa: E402
from merlin_mdm.mdm.checkpoint import load_denoiser, save_denoiser  # noqa: E402
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig  # noqa: E402
from merlin_mdm.mdm.tasks import make_task  # noqa: E402

pytestmark = pytest.mark.torch


def tiny(task) -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(DenoiserConfig(task.vocab_size, task.seq_len, task.mask_id, d_model=16, n_layers=1, n_heads=2,
                                   d_ff=32))


def test_forward_shapes_and_mask_logit() -> None:
    task = make_task("blocks", nb=2, bl=3)
    model = tiny(task)
    x = task.sample(5, torch.Generator().manual_seed(0))
    x[:, 3] = task.mask_id
    out = model(x)
    assert out.logits.shape == (5, task.seq_len, task.vocab_size)
    assert out.hidden.shape == (5, task.seq_len, 16)
    assert torch.isneginf(out.logits[..., task.mask_id]).all()
    assert torch.isfinite(out.logits[..., : task.mask_id]).all()
    assert torch.allclose(out.hidden.mean(-1), torch.zeros(5, task.seq_len), atol=1e-5)  # after the final norm
    assert model(x[:, :4]).logits.shape == (5, 4, task.vocab_size)  # shorter inputs are fine
    with pytest.raises(MdmError, match="seq_len"):
        model(torch.zeros(1, task.seq_len + 1, dtype=torch.long))


def test_attention_is_bidirectional() -> None:
    task = make_task("blocks", nb=2, bl=3)
    model = tiny(task).eval()
    x = task.sample(1, torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 10
    assert not torch.allclose(model(x).logits[0, 0], model(y).logits[0, 0])  # position 0 sees the last one


@pytest.mark.parametrize(("field", "value", "match"), [("n_heads", 3, "divide"), ("mask_id", 99, "outside"),
                                                       ("dropout", 1.0, "dropout"), ("n_layers", 0, "n_layers")])
def test_config_validation(field, value, match) -> None:
    kwargs = {"vocab_size": 13, "seq_len": 8, "mask_id": 12, "d_model": 16, "n_heads": 2, field: value}
    with pytest.raises(MdmError, match=match):
        DenoiserConfig(**kwargs)


def test_checkpoint_round_trip(tmp_path) -> None:
    task = make_task("blocks", nb=2, bl=3, p_coupled=0.3)
    model = tiny(task)
    save_denoiser(tmp_path / "ck", model, task, {"step": 7, "optimizer": {"state": {}}, "note": "hi"})
    loaded = load_denoiser(tmp_path / "ck")
    assert loaded.config == model.config and not loaded.model.training
    assert loaded.task.knobs() == {"nb": 2, "bl": 3, "p_coupled": 0.3, "layout": "fixed"}
    x = task.sample(3, torch.Generator().manual_seed(1))
    assert torch.equal(loaded.model(x).logits, model.eval()(x).logits)
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert meta["step"] == 7 and meta["note"] == "hi" and len(meta["checkpoint_id"]) == 12
    assert loaded.meta["checkpoint_id"] == meta["checkpoint_id"] and loaded.extra["step"] == 7
    assert not list((tmp_path / "ck").glob("*.tmp"))
    with torch.no_grad():
        model.head.bias.add_(1.0)
    save_denoiser(tmp_path / "ck2", model, task, {})
    assert load_denoiser(tmp_path / "ck2").meta["checkpoint_id"] != meta["checkpoint_id"]


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(MdmError, match="no denoiser checkpoint"):
        load_denoiser(tmp_path)
    task = make_task("blocks")
    with pytest.raises(MdmError, match="reserved"):
        save_denoiser(tmp_path / "x", tiny(task), task, {"config": 1})
    good = save_denoiser(tmp_path / "good", tiny(task), task, {}) / "denoiser.pt"
    damaged = {"text": b"not a checkpoint", "empty": b"", "truncated": good.read_bytes()[:3000]}
    for name, data in damaged.items():  # each says what the file is not and what to do, with a reason
        (tmp_path / name).mkdir()
        (tmp_path / name / "denoiser.pt").write_bytes(data)
        with pytest.raises(CheckpointError, match=r"is not a readable checkpoint \(damaged, truncated.*: \S.*\); "
                                                  "train it again") as err:
            load_denoiser(tmp_path / name)
        assert err.value.exit_code == 1
    (tmp_path / "policy").mkdir()
    torch.save({"format": 2, "policy_config": {}, "policy_state": {}}, tmp_path / "policy" / "denoiser.pt")
    with pytest.raises(CheckpointError, match=r"holds an order policy .* pass its folder as --policy"):
        load_denoiser(tmp_path / "policy")
    (good.parent / "meta.json").write_bytes(b"\x89HDF\r\n")  # an eval's metrics file written over it
    with pytest.raises(CheckpointError, match=r"meta.json is damaged"):
        load_denoiser(good.parent)


def test_a_prompt_aligned_denoiser_sees_prompt_token_i_at_answer_position_i() -> None:
    task = make_task("blocks", nb=2, bl=2, layout="random")
    assert task.prompt_aligned and not make_task("blocks").prompt_aligned
    torch.manual_seed(0)
    cfg = DenoiserConfig(task.vocab_size, task.seq_len, task.mask_id, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                         prompt_aligned=True)
    model = Denoiser(cfg).eval()
    x = task.sample(1, torch.Generator().manual_seed(0))
    x[:, task.prompt_len :] = task.mask_id
    changed = x.clone()
    changed[0, 1] = 13 if int(x[0, 1]) != 13 else 10  # relabel prompt slot 1 only
    assert not torch.equal(model(changed).logits, model(x).logits)
    for block in model.blocks:  # without attention only the aligned embedding carries prompt slot 1 anywhere
        block.attn.forward = lambda h: torch.zeros_like(h)  # type: ignore[method-assign]
    moved = (model(changed).logits - model(x).logits)[0, task.prompt_len :, : task.mask_id].abs().amax(-1)  # (A,)
    assert moved.nonzero().flatten().tolist() == [1]
    with pytest.raises(MdmError, match="even seq_len"):
        DenoiserConfig(task.vocab_size, 7, task.mask_id, prompt_aligned=True)
    with pytest.raises(MdmError, match="prompt length == answer length"):
        model(x[:, :5])
