"""Continuing an interrupted order training: the saved state, and the same policy as an uninterrupted run."""

from __future__ import annotations

import re
import signal

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.errors import Interrupted, MdmError  # noqa: E402
from merlin_mdm.mdm.order import OrderTrainConfig, train_order  # noqa: E402
from merlin_mdm.mdm.order.resume import STATE_FILE, TrainingStateFile, recipe_facts, recipe_fingerprint  # noqa: E402
from merlin_mdm.mdm.order.training import TrainingSaving  # noqa: E402

pytestmark = pytest.mark.torch

RECIPES = {
    "elbo, one budget": {"budget": 2, "batch_size": 4, "rollouts": 2, "d_model": 8, "tau_start": 1.0},
    "reward, sequential, selected": {"budget": 3, "budgets": (2, 3), "objective": "reward", "policy_kind": "sequential",
                                     "nfe_penalty": 0.1, "batch_size": 4, "rollouts": 2, "d_model": 8,
                                     "select_every": 2, "select_samples": 8, "select_by": "return"},
}


@pytest.fixture(scope="module")
def tiny(tiny_random_blocks):
    return tiny_random_blocks


def _tensors(result) -> list[torch.Tensor]:
    return [p.detach().clone() for p in (*result.policy.parameters(), *result.posterior.parameters())]


def _same_run(a, b) -> None:
    assert all(torch.equal(x, y) for x, y in zip(_tensors(a), _tensors(b), strict=True))
    assert a.history == b.history and a.iterations == b.iterations
    assert a.selected_iteration == b.selected_iteration


def _stop_after(n: int):
    calls = {"n": 0}

    def stop_requested() -> int | None:
        calls["n"] += 1
        return signal.SIGTERM if calls["n"] == n else None

    return stop_requested


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_run_stopped_by_a_signal_and_continued_saves_the_same_policy(tiny, tmp_path, recipe) -> None:
    task, den = tiny
    config = OrderTrainConfig(**RECIPES[recipe], iterations=6, seed=5)
    whole = train_order(den, task, 16, config)
    state = TrainingStateFile(tmp_path, "abc", every=0)
    with pytest.raises(Interrupted) as stop:
        train_order(den, task, 16, config, saving=TrainingSaving(state_file=state, stop_requested=_stop_after(3)))
    assert stop.value.exit_code == 128 + signal.SIGTERM
    saved, why_not = state.load()
    assert why_not is None and saved is not None and saved["iteration"] == 3  # saved after the iteration in flight
    continued = train_order(den, task, 16, config, saving=TrainingSaving(state_file=state, resume_from=saved))
    _same_run(continued, whole)
    assert continued.seconds >= saved["seconds"] > 0


def test_a_killed_run_continues_from_its_last_periodic_state(tiny, tmp_path) -> None:
    task, den = tiny
    config = OrderTrainConfig(**RECIPES["reward, sequential, selected"], iterations=7, seed=2)
    whole = train_order(den, task, 16, config)
    state = TrainingStateFile(tmp_path, "abc", every=2)
    assert [i for i in range(1, 8) if state.due(i, 7)] == [2, 4, 6]  # never after the last: the policy is saved
    train_order(den, task, 16, config, saving=TrainingSaving(state_file=state))  # as if killed after iteration 6
    saved, _ = state.load()
    assert saved is not None and saved["iteration"] == 6 and saved["selector"]["best"] is not None
    _same_run(train_order(den, task, 16, config, saving=TrainingSaving(resume_from=saved)), whole)


def test_a_state_of_another_recipe_is_refused_and_a_damaged_one_started_over(tmp_path) -> None:
    config = OrderTrainConfig(budget=2).to_dict()
    mine = recipe_fingerprint(config, "den-1", "blocks", {"nb": 2})
    assert mine == recipe_fingerprint(dict(config), "den-1", "blocks", {"nb": 2})
    others = [recipe_fingerprint({**config, "seed": 1}, "den-1", "blocks", {"nb": 2}),
              recipe_fingerprint(config, "den-2", "blocks", {"nb": 2}),
              recipe_fingerprint(config, "den-1", "blocks", {"nb": 3})]
    assert mine not in others and len(set(others)) == 3
    assert TrainingStateFile(tmp_path, mine, 10).load() == (None, None)  # nothing saved: nothing to say
    TrainingStateFile(tmp_path, others[0], 10).save({"iteration": 4})
    with pytest.raises(MdmError, match="stopped at iteration 4 under another recipe or denoiser"):
        TrainingStateFile(tmp_path, mine, 10).load()  # refused: starting over threw its iterations away
    assert (tmp_path / STATE_FILE).is_file()
    facts = [recipe_facts({**config, "seed": 1, "lr_policy": 0.5}, "den-1", "blocks", {"nb": 2}),
             recipe_facts(config, "den-1", "blocks", {"nb": 2})]
    assert recipe_fingerprint(config, "den-1", "blocks", {"nb": 2}) == mine  # the same digest as before the facts
    TrainingStateFile(tmp_path, others[0], 10, facts[0]).save({"iteration": 4})
    named = f"(lr_policy 0.5 -> {config['lr_policy']!r}; seed 1 -> {config['seed']!r})"
    with pytest.raises(MdmError, match=re.escape(named)):
        TrainingStateFile(tmp_path, mine, 10, facts[1]).load()
    assert TrainingStateFile(tmp_path, others[0], 10).load()[0] is not None  # its own recipe continues it
    torch.save({"format": 0, "fingerprint": others[0], "iteration": 4}, tmp_path / STATE_FILE)  # an older layout
    state, why_not = TrainingStateFile(tmp_path, mine, 10).load()  # no version could continue it: not refused
    assert state is None and "another layout (format 0" in str(why_not)
    torch.save({"iteration": 3}, tmp_path / STATE_FILE)  # a torch file, but no state of ours
    state, why_not = TrainingStateFile(tmp_path, mine, 10).load()
    assert state is None and "not a training state" in str(why_not)
    (tmp_path / STATE_FILE).write_bytes(b"not a torch file")
    state, why_not = TrainingStateFile(tmp_path, mine, 10).load()
    assert state is None and "cannot be read" in str(why_not)
    TrainingStateFile(tmp_path, mine, 10).remove()
    assert not (tmp_path / STATE_FILE).exists()


def test_a_policy_whose_training_was_stopped_says_how_to_continue_it(tmp_path) -> None:
    """It said `policy.pt is missing (train one with mdm train-order)`, as of a folder never trained (a probe)."""
    from merlin_mdm.errors import MdmError
    from merlin_mdm.mdm.order.checkpoint import load_policy

    TrainingStateFile(tmp_path, "abc", every=0).save({"iteration": 3})
    with pytest.raises(MdmError, match=r"its training was stopped before it ended \(train-state.pt is there\); run the "
                                       r"same `merlin-mdm mdm train-order` command again to continue it"):
        load_policy(tmp_path)
