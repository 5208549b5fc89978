"""Model selection in order training: validation prompts, the choice rule, and the restored iterate."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from merlin_mdm.cli import mdm_order  # noqa: E402
from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.checkpoint import save_denoiser  # noqa: E402
from merlin_mdm.mdm.evaluation import _recipe_parts  # noqa: E402
from merlin_mdm.mdm.order import OrderTrainConfig, train_order  # noqa: E402
from merlin_mdm.mdm.order.selection import SELECTION_CRITERIA, Checkpoint, ValidationSelector  # noqa: E402
from merlin_mdm.mdm.tasks.base import eval_mask  # noqa: E402

pytestmark = pytest.mark.torch

TINY = {"budget": 2, "budgets": (2, 3), "nfe_penalty": 0.5, "batch_size": 4, "rollouts": 2, "d_model": 8,
        "select_samples": 16}


@pytest.fixture(scope="module")
def tiny(tiny_random_blocks):
    return tiny_random_blocks


def _weights(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_choice_rule_is_score_then_fewer_calls_then_the_later_iteration() -> None:
    first = Checkpoint(iteration=2, score=0.5, mean_nfe=3.0)
    assert first.beats(None)
    assert Checkpoint(4, 0.6, 9.0).beats(first) and not Checkpoint(4, 0.4, 1.0).beats(first)
    assert Checkpoint(4, 0.5, 2.0).beats(first) and not Checkpoint(4, 0.5, 3.5).beats(first)
    assert Checkpoint(4, 0.5, 3.0).beats(first)  # a full tie goes to the later iterate


def test_validation_prompts_come_from_the_training_split_and_are_seeded(tiny) -> None:
    task, den = tiny
    config = OrderTrainConfig(**TINY, iterations=4, select_every=2, seed=3)
    a, b = ValidationSelector(den, task, config), ValidationSelector(den, task, config)
    assert a.prompts.shape == (16, task.prompt_len) and torch.equal(a.prompts, b.prompts)
    assert not eval_mask(a.prompts).any()  # random layout: the split key is the prompt
    assert [i for i in range(1, 5) if a.due(i)] == [2, 4]
    assert [i for i in range(1, 6) if ValidationSelector(den, task, OrderTrainConfig(
        **TINY, iterations=5, select_every=2)).due(i)] == [2, 4, 5]  # and always the last iterate
    score, nfe = a.validate(train_order(den, task, 16, OrderTrainConfig(**TINY, iterations=1)).policy)
    assert 0.0 <= score <= 1.0 and 1.0 <= nfe <= 2.5  # mean over budgets 2 and 3
    assert a.validate(train_order(den, task, 16, OrderTrainConfig(**TINY, iterations=1)).policy) == (score, nfe)


def test_selection_does_not_change_the_training_trajectory(tiny) -> None:
    task, den = tiny
    plain = train_order(den, task, 16, OrderTrainConfig(**TINY, iterations=4))
    checked = train_order(den, task, 16, OrderTrainConfig(**TINY, iterations=4, select_every=4))
    assert plain.selected_iteration is None and checked.selected_iteration == 4
    assert _same(_weights(plain.policy), _weights(checked.policy))
    assert _same(_weights(plain.posterior), _weights(checked.posterior))
    assert "val_score" in checked.history[-1] and "val_score" not in plain.history[-1]


def test_the_best_validated_iterate_is_restored(tiny, monkeypatch) -> None:
    task, den = tiny
    scripted = iter([(0.5, 2.0), (0.9, 2.5), (0.4, 2.0)])  # iterations 2, 4, 6: the second is best
    monkeypatch.setattr(ValidationSelector, "validate", lambda self, policy: next(scripted))
    selected = train_order(den, task, 16, OrderTrainConfig(**TINY, iterations=6, select_every=2))
    assert selected.selected_iteration == 4 and selected.iterations == 6
    after_four = train_order(den, task, 16, OrderTrainConfig(**TINY, iterations=4))
    last = train_order(den, task, 16, OrderTrainConfig(**TINY, iterations=6))
    assert _same(_weights(selected.policy), _weights(after_four.policy))
    assert _same(_weights(selected.posterior), _weights(after_four.posterior))
    assert not _same(_weights(selected.policy), _weights(last.policy))
    assert [e["val_score"] for e in selected.history if "val_score" in e] == [0.5, 0.9, 0.4]


def test_bad_selection_knobs_are_refused() -> None:
    with pytest.raises(MdmError, match="select_every"):
        OrderTrainConfig(budget=2, select_every=-1)
    with pytest.raises(MdmError, match="select_samples"):
        OrderTrainConfig(budget=2, select_samples=0)


def test_the_cli_saves_the_selected_iterate_and_the_label_names_the_recipe(tiny, tmp_path) -> None:
    task, den = tiny
    den_dir = save_denoiser(tmp_path / "den", den, task, {"step": 0})
    out = tmp_path / "pol"
    args = ["--denoiser", str(den_dir), "--budget", "2", "--budgets", "2,3", "--iterations", "3", "--batch-size",
            "4", "--rollouts", "2", "--d-model", "8", "--select-every", "2", "--select-samples", "8",
            "--eval-samples", "0", "--out", str(out), "--json"]
    result = CliRunner().invoke(mdm_order.train_order, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["selected_iteration"] in (2, 3)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["selected_iteration"] in (2, 3) and meta["train_config"]["select_every"] == 2
    assert _recipe_parts(meta["train_config"]) == ["iterations=3", "d_model=8", "rollouts=2", "batch_size=4",
                                                   "select_every=2"]
    bad = CliRunner().invoke(mdm_order.train_order, [*args[:-3], "--select-every", "-1", "--out", str(out)])
    assert bad.exit_code == 2 and "--select-every" in bad.output


def test_select_by_return_prices_the_calls() -> None:
    cheap, costly = (0.80, 3.0), (0.85, 4.0)  # (score, mean calls)
    by = {name: [SELECTION_CRITERIA[name](s, n, 0.1) for s, n in (cheap, costly)] for name in SELECTION_CRITERIA}
    assert by["score"][1] > by["score"][0]  # the score alone takes the iterate that spends a call more
    assert by["return"][0] == pytest.approx(0.5) and by["return"][1] == pytest.approx(0.45)
    first = Checkpoint(2, 0.85, 4.0, value=by["return"][1])
    assert Checkpoint(4, 0.80, 3.0, value=by["return"][0]).beats(first)
    assert not Checkpoint(4, 0.80, 3.0).beats(Checkpoint(2, 0.85, 4.0))  # no value: ranked by score


def test_selection_by_return_keeps_the_cheaper_iterate(tiny, monkeypatch) -> None:
    task, den = tiny
    scripted = [(0.5, 2.0), (0.6, 3.0), (0.4, 2.0)]  # iterations 2, 4, 6; price 0.5 per call: returns -0.5, -0.9, -0.6
    for select_by, expected in (("score", 4), ("return", 2)):
        steps = iter(scripted)
        monkeypatch.setattr(ValidationSelector, "validate", lambda self, policy, steps=steps: next(steps))
        config = OrderTrainConfig(**TINY, iterations=6, select_every=2, select_by=select_by)
        assert train_order(den, task, 16, config).selected_iteration == expected
    with pytest.raises(MdmError, match="select_by 'nfe'; choose one of: return, score"):
        OrderTrainConfig(budget=2, select_by="nfe")
