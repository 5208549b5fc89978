"""``--device``: where the networks run, checked before work starts and recorded with every run.

Where torch sees no GPU (CI) the refusals are tested; the GPU itself is tested in test_devices_gpu.py.
"""

from __future__ import annotations

import json

import h5py
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from merlin_mdm.cli.mdm import mdm  # noqa: E402
from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.devices import describe_device, resolve_device  # noqa: E402
from merlin_mdm.mdm.training import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.torch

HAS_GPU = torch.cuda.is_available()
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
