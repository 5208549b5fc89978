"""Evaluation to an HDF5 metrics file, and the `mdm` CLI end to end with a tiny model."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from merlin_mdm.cli.mdm import mdm, parse_knobs  # noqa: E402
from merlin_mdm.errors import MdmError, UsageError  # noqa: E402
from merlin_mdm.mdm.evaluation import EvalConfig, evaluate, run_eval  # noqa: E402
from merlin_mdm.mdm.training import TrainConfig, train  # noqa: E402
from merlin_mdm.results.metrics import read_metrics  # noqa: E402

pytestmark = pytest.mark.torch

TINY = ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-ff", "32", "--batch-size", "8", "--warmup", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("den")
    train(TrainConfig(task="blocks", task_knobs={"nb": 2, "bl": 2}, steps=3, batch_size=8, d_model=16, n_layers=1,
                      n_heads=2, d_ff=32, warmup=1), out, quiet=True)
    return out


def test_eval_writes_a_readable_metrics_file(checkpoint, tmp_path) -> None:
    cfg = EvalConfig(str(checkpoint), "threshold", {"tau": 0.8, "blocks": 2}, steps=3, seed=5, n_examples=30,
                     batch_size=7)
    result = run_eval(cfg, tmp_path / "sub" / "metrics.h5")
    m = read_metrics(tmp_path / "sub" / "metrics.h5")
    assert m.attrs["task"] == "blocks" and m.attrs["task.nb"] == 2 and m.attrs["task.bl"] == 2
    assert m.attrs["sampler"] == "threshold" and m.attrs["sampler.tau"] == 0.8 and m.attrs["sampler.blocks"] == 2
    assert m.attrs["adaptive"] is True or m.attrs["adaptive"] == 1
    assert m.attrs["steps"] == 3 and m.attrs["seed"] == 5 and len(m.attrs["checkpoint_id"]) == 12
    assert m.attrs["start_time"] <= m.attrs["end_time"]
    assert m.datasets["correct"].shape == (30,) and m.datasets["tokens"].shape == (30, 6)
    assert m.attrs["accuracy"] == pytest.approx(m.datasets["correct"].mean())
    assert m.attrs["max_nfe"] == m.datasets["nfe"].max() <= 3
    assert m.attrs["mean_nfe"] == pytest.approx(result.nfe.mean())
    assert (m.datasets["wall_time"] > 0).all()


def test_eval_is_paired_and_deterministic(checkpoint) -> None:
    a = evaluate(EvalConfig(str(checkpoint), "top_prob", steps=2, seed=1, n_examples=20))
    b = evaluate(EvalConfig(str(checkpoint), "top_prob", steps=2, seed=1, n_examples=20))
    c = evaluate(EvalConfig(str(checkpoint), "iid", steps=4, seed=1, n_examples=20))
    assert (a.tokens == b.tokens).all() and (a.correct == b.correct).all()
    assert (a.tokens[:, :2] == c.tokens[:, :2]).all()  # same prompts for every sampler under one seed


def test_eval_config_errors(checkpoint) -> None:
    with pytest.raises(MdmError, match="steps"):
        EvalConfig(str(checkpoint), "iid", steps=0)
    with pytest.raises(MdmError, match="unknown sampler"):
        evaluate(EvalConfig(str(checkpoint), "nope", n_examples=2))


def test_parse_knobs() -> None:
    assert parse_knobs(("nb=4", "tau=0.9", "flag=true", "name=x=y")) == {"nb": 4, "tau": 0.9, "flag": True,
                                                                         "name": "x=y"}
    with pytest.raises(UsageError):
        parse_knobs(("novalue",))


def test_cli_train_eval_samplers(tmp_path) -> None:
    runner = CliRunner()
    den = tmp_path / "den"
    res = runner.invoke(mdm, ["train", "--task", "blocks", "--knob", "nb=2", "--knob", "bl=2", "--out", str(den),
                              "--steps", "2", "--quiet", "--json", *TINY], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["steps"] == 2
    res = runner.invoke(mdm, ["train", "--task", "blocks", "--knob", "nb=2", "--knob", "bl=2", "--out", str(den),
                              "--steps", "3", "--resume", "--quiet", *TINY], catch_exceptions=False)
    assert res.exit_code == 0 and "step 3" in res.output
    out = tmp_path / "m.h5"
    res = runner.invoke(mdm, ["eval", "--checkpoint", str(den), "--sampler", "margin", "--knob", "blocks=2",
                              "--steps", "2", "--n-examples", "10", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0 and "accuracy" in res.output
    assert read_metrics(out).attrs["sampler.blocks"] == 2
    res = runner.invoke(mdm, ["samplers", "--json"], catch_exceptions=False)
    names = {row["name"] for row in json.loads(res.output)}
    assert {"iid", "top_prob", "margin", "entropy", "threshold", "eb"} <= names
    assert "Examples" in runner.invoke(mdm, ["eval", "--help"]).output


def test_cli_eval_several_budgets_and_a_knob_sweep_in_one_process(checkpoint, tmp_path) -> None:
    runner = CliRunner()
    pattern = str(tmp_path / "m" / "T{steps}_tau{tau}.h5")
    res = runner.invoke(mdm, ["eval", "--checkpoint", str(checkpoint), "--sampler", "threshold", "--sweep",
                              "tau=0.5,0.9", "--steps", "2,3", "--n-examples", "6", "--out", pattern],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["T2_tau0.5.h5", "T2_tau0.9.h5", "T3_tau0.5.h5", "T3_tau0.9.h5"]
    assert read_metrics(tmp_path / "m" / "T3_tau0.9.h5").attrs["sampler.tau"] == 0.9
    one_name = runner.invoke(mdm, ["eval", "--checkpoint", str(checkpoint), "--sampler", "iid", "--steps", "2,3",
                                   "--out", str(tmp_path / "x.h5")])
    assert isinstance(one_name.exception, UsageError) and "pattern" in str(one_name.exception)
    bad = runner.invoke(mdm, ["eval", "--checkpoint", str(checkpoint), "--sampler", "iid", "--steps", "0,2",
                              "--out", str(tmp_path / "y{steps}.h5")])
    assert isinstance(bad.exception, UsageError) and "--steps" in str(bad.exception)
