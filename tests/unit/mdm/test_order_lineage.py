"""The lineage of warm-started order policies (merlin_mdm.mdm.order.lineage), end to end: tiny policies trained
by `train-order` from the CLI, evaluated by `run_eval`, aggregated by `aggregate`. A second stage with the same
arguments gets its own Table 1 line, replicate training seeds of one lineage share one, and a policy saved
before lineages were recorded keeps its old label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from merlin_mdm.cli import mdm_order  # noqa: E402
from merlin_mdm.mdm.checkpoint import save_denoiser  # noqa: E402
from merlin_mdm.mdm.evaluation import EvalConfig, _policy_attrs, run_eval  # noqa: E402
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig  # noqa: E402
from merlin_mdm.mdm.order.lineage import UNRECORDED, policy_lineage, recipe  # noqa: E402
from merlin_mdm.mdm.samplers import make_sampler  # noqa: E402
from merlin_mdm.mdm.tasks import make_task  # noqa: E402
from merlin_mdm.results.aggregate import aggregate, default_outputs  # noqa: E402

pytestmark = pytest.mark.torch

SEEDS = (0, 1)
TINY = ["--budget", "3", "--iterations", "2", "--batch-size", "4", "--rollouts", "2", "--d-model", "8",
        "--eval-samples", "0"]
REWARD = ["--objective", "reward", "--nfe-penalty", "0.1", "--lr", "1e-3"]  # both reward stages: identical
OLD_CLONE_LABEL = "learned (T=3, tau=0.1, objective=imitate, iterations=2, d_model=8, rollouts=2, batch_size=4)"
CLONE_LABEL = OLD_CLONE_LABEL[:-1] + ", teacher=eb[gamma=0.1])"  # a clone trained since lineages names its teacher
REWARD_LABEL = ("learned (T=3, tau=0.1, nfe_penalty=0.1, objective=reward, iterations=2, d_model=8, rollouts=2, "
                "batch_size=4, lr_policy=0.001")  # what every reward stage was called before lineages


def _train(denoiser: Path, out: Path, *args: str) -> Path:
    result = CliRunner().invoke(mdm_order.train_order, ["--denoiser", str(denoiser), *TINY, *args, "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def _eval(denoiser: Path, out: Path, sampler: str, policy: Path | None = None, **knobs: float) -> Path:
    config = EvalConfig(checkpoint=str(denoiser), sampler=sampler, sampler_knobs=knobs, steps=3, seed=0,
                        n_examples=16, batch_size=16, policy_dir=None if policy is None else str(policy))
    run_eval(config, out)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per training seed S: a denoiser; an EB clone (stage 1); a reward stage from it (stage 2); the same reward
    stage again from that result with --seed S+10 (stage 3, the fifth session's "second stage"); EB itself.
    Each evaluated on the same 16 prompts into eval/<line>_S.h5."""
    root = tmp_path_factory.mktemp("lineage")
    task = make_task("blocks", nb=2, bl=2)
    config = DenoiserConfig(vocab_size=task.vocab_size, seq_len=task.seq_len, mask_id=task.mask_id, d_model=16,
                            n_layers=1, n_heads=2, d_ff=32)
    for seed in SEEDS:
        torch.manual_seed(seed)
        den = save_denoiser(root / f"den{seed}", Denoiser(config).eval(), task,
                            {"step": 0, "train_config": {"seed": seed}})
        clone = _train(den, root / f"clone{seed}", "--objective", "imitate", "--teacher", "eb", "--teacher-knob",
                       "gamma=0.1", "--seed", str(seed))
        first = _train(den, root / f"first{seed}", *REWARD, "--init-policy", str(clone), "--seed", str(seed))
        second = _train(den, root / f"second{seed}", *REWARD, "--init-policy", str(first), "--seed", str(seed + 10))
        for name, policy in (("clone", clone), ("first", first), ("second", second)):
            _eval(den, root / "eval" / f"{name}_{seed}.h5", "learned", policy)
        _eval(den, root / "eval" / f"eb_{seed}.h5", "eb", gamma=1.0)
    return root


def _label(policy: Path) -> str:
    return str(_policy_attrs(make_sampler("learned", policy_dir=str(policy)))["method"])


def test_a_second_stage_with_identical_arguments_is_its_own_line_and_seeds_of_a_lineage_pool(study, tmp_path):
    report = aggregate(str(study / "eval" / "*.h5"), default_outputs(tmp_path / "agg" / "results.h5"),
                       progress=False)
    assert report is not None and not report.failures
    lines = {row.method: row for row in report.summary if row.sampler == "learned"}
    assert len(lines) == 3 and all(row.n_seeds == len(SEEDS) for row in lines.values())
    first = next(m for m in lines if "stage=2" in m)
    second = next(m for m in lines if "stage=3" in m)
    assert CLONE_LABEL in lines
    assert first.startswith(REWARD_LABEL + ", stage=2, init=imitate-")
    assert second.startswith(REWARD_LABEL + ", stage=3, init=reward-")
    rows = report.table.rows()
    assert {(Path(r["path"]).stem.split("_")[0], r["train_seed"], r.get("policy.stage"), r.get("policy.seed"))
            for r in rows if r["sampler"] == "learned"} == {
        ("clone", 0, 1, 0), ("clone", 1, 1, 1), ("first", 0, 2, 0), ("first", 1, 2, 1),
        ("second", 0, 3, 10), ("second", 1, 3, 11)}  # paired by the denoiser's seed, not the policy's
    assert not any("/" in str(r.get("policy.init", "")) for r in rows)
    text = (tmp_path / "agg" / "results.md").read_text()
    assert "| eb (gamma=1) |" in text and "(unpaired)" not in text  # each stage pairs with EB seed by seed


def test_a_warm_start_from_another_teacher_is_another_lineage(study, tmp_path):
    den = study / "den0"
    clone = _train(den, tmp_path / "clone", "--objective", "imitate", "--teacher", "eb", "--teacher-knob",
                   "gamma=0.5", "--seed", "0")
    other = _train(den, tmp_path / "reward", *REWARD, "--init-policy", str(clone), "--seed", "0")
    assert ", stage=2, init=imitate-" in _label(other)
    assert _label(other) != _label(study / "first0")
    assert _label(clone) == CLONE_LABEL.replace("gamma=0.1", "gamma=0.5")  # clones of two teachers: two lines


def test_a_policy_saved_before_lineages_were_recorded_keeps_its_old_label(study, tmp_path):
    old = tmp_path / "old_second"
    shutil.copytree(study / "second0", old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["lineage"]
    (old / "meta.json").write_text(json.dumps(meta))
    attrs = _policy_attrs(make_sampler("learned", policy_dir=str(old)))
    assert attrs["method"] == REWARD_LABEL + ")"
    assert "policy.stage" not in attrs and "policy.init" not in attrs
    assert _label(study / "clone0") == CLONE_LABEL
    old_clone = tmp_path / "old_clone"
    shutil.copytree(study / "clone0", old_clone)
    meta = json.loads((old_clone / "meta.json").read_text())
    del meta["lineage"]
    (old_clone / "meta.json").write_text(json.dumps(meta))
    assert _label(old_clone) == OLD_CLONE_LABEL  # a clone saved before lineages keeps its label
    # Training from it follows its recorded init_policy path, so the lineage is the one it would have had.
    assert policy_lineage(old) == policy_lineage(study / "second0")
    assert policy_lineage(old)["stage"] == 4


def test_recipes_leave_out_seeds_paths_and_defaults_and_unreadable_ancestors_are_marked(tmp_path):
    assert recipe({"budget": 3, "seed": 7, "init_policy": "/x/y", "tau": 0.1, "teacher_knobs": [],
                   "budgets": [], "objective": "reward", "lr_policy": 3e-4}) == {
        "budget": 3, "objective": "reward", "lr_policy": 3e-4}
    assert policy_lineage(None) == {"stage": 1, "ancestors": []}
    assert policy_lineage(tmp_path / "gone") == {"stage": 2, "ancestors": [UNRECORDED]}
    looped = tmp_path / "in_place"  # trained in place before lineages: its meta names itself as its start
    looped.mkdir()
    (looped / "meta.json").write_text(json.dumps({"train_config": {"budget": 3, "init_policy": str(looped)}}))
    assert policy_lineage(looped) == {"stage": 3, "ancestors": [UNRECORDED, {"budget": 3}]}


def test_the_help_of_init_policy_says_the_lineage_enters_the_method_label():
    text = " ".join(CliRunner().invoke(mdm_order.train_order, ["--help"]).output.split())
    assert "appears in the evaluation's method label" in text and "never its path" in text
