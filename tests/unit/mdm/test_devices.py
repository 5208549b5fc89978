"""``--device``: where the denoiser runs, checked before work starts and recorded with every run.

The GPU tests run only where torch sees a GPU (the device machine); everywhere else the refusals are tested.
"""

from __future__ import annotations

import json

import h5py
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from merlin_mdm.cli.mdm import mdm  # noqa: E402
from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.checkpoint import load_denoiser  # noqa: E402
from merlin_mdm.mdm.devices import describe_device, resolve_device  # noqa: E402
from merlin_mdm.mdm.evaluation import EvalConfig, evaluate  # noqa: E402
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig  # noqa: E402
from merlin_mdm.mdm.training import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.torch

HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="torch sees no GPU here")
without_gpu = pytest.mark.skipif(HAS_GPU, reason="tests the refusal where torch sees no GPU")

TINY = {"task": "blocks", "task_knobs": {"nb": 2, "bl": 2}, "batch_size": 8, "d_model": 16, "n_layers": 1,
        "n_heads": 2, "d_ff": 32, "warmup": 2, "seed": 3}


def test_auto_takes_a_gpu_only_where_torch_sees_one() -> None:
    assert resolve_device("auto") == (torch.device("cuda:0") if HAS_GPU else torch.device("cpu"))
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert describe_device(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu", ""])
def test_an_unknown_device_names_the_choices(spec: str) -> None:
    with pytest.raises(MdmError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


@without_gpu
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_a_gpu_this_torch_cannot_use_says_what_to_pass(spec: str) -> None:
    with pytest.raises(MdmError, match=r"cannot use a GPU.*--device cpu"):
        resolve_device(spec)


@without_gpu
def test_the_cli_refuses_a_missing_gpu_before_reading_anything(tmp_path) -> None:
    result = CliRunner().invoke(mdm, ["eval", "--checkpoint", str(tmp_path / "absent"), "--sampler", "top_prob",
                                      "--steps", "2", "--device", "cuda", "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 2
    assert "Invalid value for '--device'" in result.output and "--device cpu" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m.h5").exists()


def test_runs_record_where_the_denoiser_ran(tmp_path) -> None:
    summary = train(TrainConfig(steps=2, device="cpu", **TINY), tmp_path / "den", quiet=True)
    meta = json.loads((tmp_path / "den" / "meta.json").read_text())
    assert summary.device == meta["train_summary"]["device"] == "cpu"
    out = tmp_path / "m.h5"
    result = CliRunner().invoke(mdm, ["eval", "--checkpoint", str(tmp_path / "den"), "--sampler", "top_prob",
                                      "--steps", "2", "--n-examples", "8", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with h5py.File(out) as f:
        assert f.attrs["device"] == "cpu"


@needs_gpu
def test_a_gpu_denoiser_takes_and_returns_cpu_tensors() -> None:
    torch.manual_seed(0)
    cpu = Denoiser(DenoiserConfig(vocab_size=12, seq_len=8, mask_id=11, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    gpu = Denoiser(cpu.config)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    x = torch.randint(0, 11, (4, 8))
    mine, theirs = cpu(x), gpu(x)
    assert theirs.logits.device.type == "cpu" and theirs.hidden.device.type == "cpu"
    finite = torch.isfinite(mine.logits)
    assert torch.allclose(mine.logits[finite], theirs.logits[finite], atol=1e-3)


@needs_gpu
def test_a_gpu_trained_checkpoint_evaluates_on_the_cpu(tmp_path) -> None:
    summary = train(TrainConfig(steps=3, device="cuda", **TINY), tmp_path / "den", quiet=True)
    assert summary.device.startswith("cuda:0")
    loaded = load_denoiser(tmp_path / "den")  # a CPU load of GPU-trained weights
    assert next(loaded.model.parameters()).device.type == "cpu"
    config = EvalConfig(checkpoint=str(tmp_path / "den"), sampler="top_prob", steps=2, n_examples=16, device="cpu")
    on_cpu = evaluate(config)
    on_gpu = evaluate(EvalConfig(**{**config.__dict__, "device": "cuda"}))
    assert on_cpu.attrs["device"] == "cpu" and on_gpu.attrs["device"].startswith("cuda:0")
    assert (on_cpu.correct == on_gpu.correct).mean() >= 0.9  # same examples and draws; kernels differ slightly


@needs_gpu
@pytest.mark.parametrize("kind", [("elbo", "bernoulli"), ("imitate", "sequential"), ("reward", "sequential")])
def test_order_training_on_a_gpu_saves_a_policy_that_evaluates_anywhere(tmp_path, kind: tuple[str, str]) -> None:
    from merlin_mdm.mdm.order.pipeline import run_train_order
    from merlin_mdm.mdm.order.training import OrderTrainConfig

    train(TrainConfig(steps=3, device="cpu", **TINY), tmp_path / "den", quiet=True)
    objective, policy_kind = kind
    config = OrderTrainConfig(budget=2, objective=objective, policy_kind=policy_kind, iterations=2, batch_size=4,
                              rollouts=2, d_model=8, seed=1)
    summary = run_train_order(tmp_path / "den", tmp_path / "order", config, eval_samples=8, device="cuda")
    assert summary.iterations == 2 and summary.evaluation["samples"] == 8
    runs = {}
    for device in ("cpu", "cuda"):
        cfg = EvalConfig(checkpoint=str(tmp_path / "den"), sampler="learned", steps=2, n_examples=32,
                         policy_dir=str(tmp_path / "order"), device=device)
        runs[device] = evaluate(cfg)
    assert runs["cuda"].attrs["device"].startswith("cuda:0") and runs["cpu"].attrs["device"] == "cpu"
    assert (runs["cpu"].nfe == runs["cuda"].nfe).mean() >= 0.9  # the same draws; kernels differ slightly
