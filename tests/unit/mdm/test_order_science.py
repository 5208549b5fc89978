"""The learned order beats every heuristic at a 2-step budget on a small `blocks` task (the issue's bar, shrunk)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.mdm.checkpoint import load_denoiser  # noqa: E402
from merlin_mdm.mdm.order import OrderTrainConfig, train_order  # noqa: E402
from merlin_mdm.mdm.samplers import generate, make_sampler  # noqa: E402
from merlin_mdm.mdm.samplers.learned import LearnedSampler  # noqa: E402
from merlin_mdm.mdm.training import TrainConfig, train  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

HEURISTICS = ("iid", "top_prob", "margin", "entropy")


def test_learned_order_is_20_points_above_the_best_heuristic_at_two_steps(tmp_path):
    cfg = TrainConfig(
        task="blocks",
        task_knobs={"nb": 3, "bl": 3},
        steps=600,
        batch_size=64,
        d_model=32,
        n_heads=2,
        d_ff=64,
        warmup=20,
    )
    train(cfg, tmp_path / "den", quiet=True)  # ~9 s on one core
    loaded = load_denoiser(tmp_path / "den")
    task = loaded.task
    result = train_order(loaded.model, task, 32, OrderTrainConfig(budget=2, iterations=150, d_model=16))  # ~5 s

    def valid(sampler):
        gen = torch.Generator().manual_seed(0)
        prompts = task.sample(500, gen)[:, : task.prompt_len]
        out = generate(loaded.model, prompts, task.answer_len, sampler, 2, gen)
        assert bool((out.nfe <= 2).all())
        return task.score(out.tokens).float().mean().item()

    best = max(valid(make_sampler(name)) for name in HEURISTICS)
    learned = valid(LearnedSampler.from_policy(result.policy))
    assert learned >= best + 0.20, f"learned {learned:.3f} vs best heuristic {best:.3f}"
