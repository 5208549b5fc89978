"""`train-order` end to end on a tiny random denoiser checkpoint, and the CLI module's import hygiene."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from merlin_mdm.cli import mdm_order  # noqa: E402
from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.checkpoint import save_denoiser  # noqa: E402
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig  # noqa: E402
from merlin_mdm.mdm.order import load_policy  # noqa: E402
from merlin_mdm.mdm.samplers import make_sampler  # noqa: E402
from merlin_mdm.mdm.tasks import make_task  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture()
def denoiser_dir(tmp_path):
    task = make_task("blocks", nb=2, bl=2)
    torch.manual_seed(0)
    cfg = DenoiserConfig(
        vocab_size=task.vocab_size,
        seq_len=task.seq_len,
        mask_id=task.mask_id,
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
    )
    return save_denoiser(tmp_path / "den", Denoiser(cfg).eval(), task, {"step": 0})


def test_train_order_writes_a_loadable_policy_and_reports_json(denoiser_dir, tmp_path):
    out = tmp_path / "order"
    args = [
        "--denoiser",
        str(denoiser_dir),
        "--budget",
        "2",
        "--out",
        str(out),
        "--iterations",
        "2",
        "--batch-size",
        "4",
        "--rollouts",
        "2",
        "--d-model",
        "8",
        "--eval-samples",
        "8",
        "--json",
    ]
    result = CliRunner().invoke(mdm_order.train_order, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["iterations"] == 2 and 0.0 <= summary["evaluation"]["valid"] <= 1.0
    assert summary["evaluation"]["max_nfe"] <= 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["budget"] == 2 and meta["task"] == "blocks" and meta["train_config"]["rollouts"] == 2
    assert meta["denoiser_checkpoint_id"]
    assert load_policy(out).policy.config.seq_len == 6
    assert make_sampler("learned", policy_dir=str(out)).knobs()["policy_dir"] == str(out)


def test_train_order_rejects_a_budget_below_two_and_a_missing_denoiser(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(mdm_order.train_order, ["--denoiser", str(tmp_path), "--budget", "1", "--out", "o"])
    assert bad.exit_code == 2 and "budget" in bad.output
    with pytest.raises(MdmError, match="no denoiser checkpoint"):
        runner.invoke(
            mdm_order.train_order,
            ["--denoiser", str(tmp_path / "none"), "--budget", "2", "--out", str(tmp_path / "o")],
            catch_exceptions=False,
        )


def test_cli_module_does_not_import_torch_at_import_time():
    tree = ast.parse(Path(mdm_order.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.startswith(("torch", "merlin_mdm.mdm"))]


def test_budget_conditioned_adaptive_policy_and_the_diagnostic_from_the_cli(denoiser_dir, tmp_path):
    out = tmp_path / "adaptive"
    args = ["--denoiser", str(denoiser_dir), "--budget", "4", "--budgets", "2,4", "--nfe-penalty", "0.5",
            "--out", str(out), "--iterations", "2", "--batch-size", "4", "--rollouts", "2", "--d-model", "8",
            "--eval-samples", "0"]
    result = CliRunner().invoke(mdm_order.train_order, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["budgets"] == [2, 4] and meta["train_config"]["nfe_penalty"] == 0.5
    bad = CliRunner().invoke(mdm_order.train_order, [*args[:4], "--budgets", "2,x", *args[6:]])
    assert bad.exit_code == 2 and "--budgets" in bad.output
    diag = CliRunner().invoke(mdm_order.order_diagnostic, [
        "--checkpoint", str(denoiser_dir), "--policy", str(out), "--steps", "4", "--n-examples", "30",
        "--out", str(tmp_path / "m" / "shuffled.h5"), "--json"], catch_exceptions=False)
    assert diag.exit_code == 0, diag.output
    figures = json.loads(diag.stdout)
    assert 1 <= figures["diag.distinct_schedules_per_100"] <= 30 and 0 <= figures["accuracy"] <= 1


def test_imitate_then_reward_from_the_cli_and_the_method_label_names_the_objective(denoiser_dir, tmp_path):
    base = ["--denoiser", str(denoiser_dir), "--budget", "3", "--iterations", "2", "--batch-size", "4",
            "--rollouts", "2", "--d-model", "8", "--eval-samples", "0"]
    warm = CliRunner().invoke(mdm_order.train_order, [*base, "--objective", "imitate", "--teacher", "eb",
                                                      "--teacher-knob", "gamma=0.1", "--out", str(tmp_path / "w")],
                              catch_exceptions=False)
    assert warm.exit_code == 0, warm.output
    assert json.loads((tmp_path / "w" / "meta.json").read_text())["train_config"]["teacher_knobs"] == [["gamma", 0.1]]
    args = [*base, "--objective", "reward", "--nfe-penalty", "0.1", "--init-policy", str(tmp_path / "w"),
            "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(mdm_order.train_order, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "score" in result.output and "mean_nfe" in result.output  # the progress lines name the reward's figures
    config = json.loads((tmp_path / "r" / "meta.json").read_text())["train_config"]
    assert config["objective"] == "reward" and config["init_policy"] == str(tmp_path / "w")
    from merlin_mdm.mdm.evaluation import _policy_attrs

    label = _policy_attrs(make_sampler("learned", policy_dir=str(tmp_path / "r")))["method"]
    assert label.startswith("learned (T=3") and "objective=reward" in label and "nfe_penalty=0.1" in label
    with pytest.raises(MdmError, match="unknown objective 'likelihood'"):
        CliRunner().invoke(mdm_order.train_order, [*base, "--objective", "likelihood", "--out", str(tmp_path / "x")],
                           catch_exceptions=False)


def test_a_sequential_imitation_warm_start_from_the_cli_then_reward_from_it(denoiser_dir, tmp_path):
    base = ["--denoiser", str(denoiser_dir), "--budget", "4", "--iterations", "2", "--batch-size", "4",
            "--rollouts", "2", "--d-model", "8", "--eval-samples", "4", "--policy-kind", "sequential"]
    warm = CliRunner().invoke(mdm_order.train_order, [*base, "--objective", "imitate", "--teacher", "eb",
                                                      "--teacher-knob", "gamma=0.05", "--out", str(tmp_path / "w")],
                              catch_exceptions=False)
    assert warm.exit_code == 0, warm.output
    assert "nll_per_token" in warm.output and "bce_per_token" not in warm.output
    assert load_policy(tmp_path / "w").kind == "sequential"
    reward = CliRunner().invoke(mdm_order.train_order, [*base, "--objective", "reward", "--nfe-penalty", "0.05",
                                                        "--init-policy", str(tmp_path / "w"), "--out",
                                                        str(tmp_path / "r")], catch_exceptions=False)
    assert reward.exit_code == 0, reward.output
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["policy_kind"] == "sequential"


def test_train_order_writes_a_sequential_policy_that_the_learned_sampler_reads_and_names(denoiser_dir, tmp_path):
    from merlin_mdm.mdm.evaluation import _policy_attrs

    out = tmp_path / "seq"
    args = ["--denoiser", str(denoiser_dir), "--budget", "2", "--out", str(out), "--objective", "reward",
            "--policy-kind", "sequential", "--iterations", "2", "--batch-size", "4", "--rollouts", "2",
            "--d-model", "8", "--eval-samples", "8", "--json"]
    result = CliRunner().invoke(mdm_order.train_order, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "meta.json").read_text())["policy_kind"] == "sequential"
    assert load_policy(out).kind == "sequential"
    method = _policy_attrs(make_sampler("learned", policy_dir=str(out)))["method"]
    assert method == "learned (T=2, tau=0.1, objective=reward, policy_kind=sequential, iterations=2, d_model=8, " \
                     "rollouts=2, batch_size=4)"
    with pytest.raises(MdmError, match="the elbo objective trains policy kinds bernoulli"):
        CliRunner().invoke(mdm_order.train_order, [*args[:6], "--policy-kind", "sequential"], catch_exceptions=False)


def test_common_token_noise_reaches_the_config_the_metadata_and_the_method_label(denoiser_dir, tmp_path):
    from merlin_mdm.mdm.evaluation import _policy_attrs

    base = ["--denoiser", str(denoiser_dir), "--budget", "3", "--objective", "reward", "--iterations", "2",
            "--batch-size", "4", "--rollouts", "2", "--d-model", "8", "--eval-samples", "0"]
    methods = {}
    for flag in ("--common-token-noise", "--independent-token-noise"):
        out = tmp_path / flag.strip("-")
        result = CliRunner().invoke(mdm_order.train_order, [*base, flag, "--out", str(out)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        config = json.loads((out / "meta.json").read_text())["train_config"]
        assert config["common_token_noise"] is (flag == "--common-token-noise")
        methods[flag] = _policy_attrs(make_sampler("learned", policy_dir=str(out)))["method"]
    assert methods["--common-token-noise"] == methods["--independent-token-noise"][:-1] + ", common_token_noise=True)"
    assert "common_token_noise" not in methods["--independent-token-noise"]  # the default leaves old labels alone
    help_text = CliRunner().invoke(mdm_order.train_order, ["--help"]).output
    assert "--common-token-noise / --independent-token-noise" in help_text and "Gumbel" in help_text
