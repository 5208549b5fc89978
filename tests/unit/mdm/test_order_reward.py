"""The ``reward`` order objective: REINFORCE on the task's score of generated answers, on a task where the
order decides the score.

The "pair" task: the answer is two tokens that must be equal. The stand-in denoiser knows it: with both masked
it is uniform over {0, 1} at each; once one is revealed it puts all its mass on the same token at the other.
Revealing both in one step therefore succeeds half the time, one after the other always; with a price per
denoiser call above one half, finishing in one call is worth more.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.order import OrderTrainConfig, save_policy, train_order  # noqa: E402
from merlin_mdm.mdm.order.bernoulli import policy_log_prob  # noqa: E402
from merlin_mdm.mdm.order.features import order_inputs  # noqa: E402
from merlin_mdm.mdm.order.objectives import ObjectiveBatch, make_objective  # noqa: E402
from merlin_mdm.mdm.order.reward import reward_rollout  # noqa: E402
from merlin_mdm.mdm.order.training import build_networks  # noqa: E402

pytestmark = pytest.mark.torch

VOCAB, MASK, PROMPT, ANSWER, HIDDEN = 3, 2, 1, 2, 4


class _Out(NamedTuple):
    logits: torch.Tensor
    hidden: torch.Tensor


class _PairDenoiser(nn.Module):
    """Uniform over {0, 1} at a masked answer cell, unless the other cell is revealed: then its token."""

    def forward(self, x):
        b = x.shape[0]
        logits = torch.zeros(b, PROMPT + ANSWER, VOCAB)
        logits[..., MASK] = float("-inf")
        for i, j in ((1, 2), (2, 1)):
            known = x[:, j] != MASK
            copy = torch.nn.functional.one_hot(x[:, j].clamp(max=1), 2).float() * 20.0  # (B, 2)
            logits[:, i, :2] = torch.where(known[:, None], copy, logits[:, i, :2])
        hidden = torch.stack([(x == MASK).float(), (x == 0).float(), (x == 1).float(), torch.ones_like(x).float()], -1)
        return _Out(logits, hidden)


class _PairTask:
    vocab_size, mask_id, prompt_len, answer_len = VOCAB, MASK, PROMPT, ANSWER

    def sample_split(self, n, generator, split):
        return torch.cat([torch.zeros(n, 1, dtype=torch.long), torch.randint(0, 2, (n, 1), generator=generator)
                          .repeat(1, 2)], 1)

    def score(self, x):
        return x[:, 1] == x[:, 2]


def _config(**kw):
    base = {"budget": 2, "objective": "reward", "rollouts": 4, "batch_size": 16, "iterations": 60, "d_model": 8,
            "n_heads": 2, "lr_policy": 3e-2}
    return OrderTrainConfig(**{**base, **kw})


def _rollout_stats(policy, budget, n=2000, seed=5):
    prompts = torch.zeros(n, PROMPT, dtype=torch.long)
    with torch.no_grad():
        trace = reward_rollout(_PairDenoiser(), policy, prompts, ANSWER, MASK, budget,
                               torch.Generator().manual_seed(seed))
    return _PairTask().score(trace.tokens).float().mean().item(), trace.nfe.float().mean().item(), trace


def test_policy_log_prob_is_the_conditioned_bernoulli_by_enumeration():
    logits = torch.tensor([[0.3, -1.2, 0.8, 2.0]])
    masked = torch.tensor([[True, True, False, True]])
    total = 0.0
    for bits in itertools.product([False, True], repeat=3):
        if not any(bits):
            continue
        r = torch.tensor([[bits[0], bits[1], False, bits[2]]])
        total += policy_log_prob(logits, masked, r).exp().item()
    assert total == pytest.approx(1.0, abs=1e-6)  # a distribution over the non-empty subsets of masked


def test_rollout_reveals_everything_within_the_budget_and_a_row_that_reveals_all_stops():
    policy, _ = build_networks(_config(), VOCAB, PROMPT + ANSWER, HIDDEN)
    _, _, trace = _rollout_stats(policy, budget=3, n=200)
    assert not bool((trace.tokens == MASK).any())
    assert bool(((trace.nfe >= 1) & (trace.nfe <= 3)).all())
    both_first = trace.first_reveals == ANSWER
    assert bool(both_first.any()) and bool((trace.nfe[both_first] == 1).all())  # finished rows spend no call
    assert bool((trace.nfe[~both_first] >= 2).all())


def test_gradients_reach_the_policy_only_and_are_finite():
    config = _config()
    policy, posterior = build_networks(config, VOCAB, PROMPT + ANSWER, HIDDEN)
    x0 = _PairTask().sample_split(8, torch.Generator().manual_seed(0), "train").repeat_interleave(4, 0)
    batch = ObjectiveBatch(_PairDenoiser(), _PairTask(), policy, posterior, x0, 2, 0.1,
                           torch.Generator().manual_seed(1), config)
    loss, figures = make_objective("reward").loss(batch)
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in posterior.parameters())
    assert 0.0 <= figures["score"] <= 1.0 and 1.0 < figures["mean_nfe"] < 2.0


def test_reward_training_raises_the_score_by_revealing_one_cell_first():
    before, _, _ = _rollout_stats(build_networks(_config(), VOCAB, PROMPT + ANSWER, HIDDEN)[0], budget=2)
    result = train_order(_PairDenoiser(), _PairTask(), HIDDEN, _config())
    after, _, _ = _rollout_stats(result.policy, budget=2)
    assert before < 0.9  # about 5/6: one in three first steps reveals both cells
    assert after > before + 0.08 and after > 0.95


def test_a_price_per_call_above_the_gain_teaches_the_policy_to_finish_in_one_call():
    cheap = train_order(_PairDenoiser(), _PairTask(), HIDDEN, _config(budget=3, nfe_penalty=0.0))
    dear = train_order(_PairDenoiser(), _PairTask(), HIDDEN, _config(budget=3, nfe_penalty=0.8))
    score_cheap, nfe_cheap, _ = _rollout_stats(cheap.policy, budget=3)
    score_dear, nfe_dear, _ = _rollout_stats(dear.policy, budget=3)
    assert nfe_cheap > 1.9 and score_cheap > 0.95
    assert nfe_dear < 1.2 and score_dear < 0.7


def test_reward_training_is_reproducible_under_a_seed_and_can_start_from_a_saved_policy(tmp_path):
    a = train_order(_PairDenoiser(), _PairTask(), HIDDEN, _config(iterations=5, seed=3))
    b = train_order(_PairDenoiser(), _PairTask(), HIDDEN, _config(iterations=5, seed=3))
    assert a.history == b.history
    assert all(torch.equal(x, y) for x, y in zip(a.policy.parameters(), b.policy.parameters(), strict=True))
    save_policy(tmp_path / "init", a.policy, a.posterior, {"budget": 2})
    started = build_networks(_config(init_policy=str(tmp_path / "init"), d_model=16), VOCAB, PROMPT + ANSWER,
                             HIDDEN)[0]
    assert all(torch.equal(x, y) for x, y in zip(started.parameters(), a.policy.parameters(), strict=True))


def test_unknown_objective_and_a_mismatched_initial_policy_are_refused(tmp_path):
    with pytest.raises(MdmError, match=r"unknown objective 'likelihood'; choose one of: elbo, imitate, reward"):
        OrderTrainConfig(budget=2, objective="likelihood")
    with pytest.raises(MdmError, match="token_temperature"):
        OrderTrainConfig(budget=2, token_temperature=-1.0)
    policy, posterior = build_networks(_config(), VOCAB, PROMPT + ANSWER, HIDDEN)
    save_policy(tmp_path / "init", policy, posterior, {"budget": 2})
    with pytest.raises(MdmError, match="was trained for sequences of 3"):
        build_networks(_config(init_policy=str(tmp_path / "init")), VOCAB, PROMPT + ANSWER + 1, HIDDEN)


def test_imitation_copies_the_teacher_so_that_thresholded_decoding_reveals_what_it_reveals():
    config = _config(objective="imitate", teacher="entropy", budget=3, iterations=80)
    result = train_order(_PairDenoiser(), _PairTask(), HIDDEN, config, log_every=1)
    assert result.history[-1]["bce_per_token"] < 0.5 * result.history[0]["bce_per_token"]
    assert result.history[0]["teacher_nfe"] == 2.0  # entropy at T=3 reveals one cell per step: two calls
    x = torch.tensor([[0, MASK, MASK]] * 4)
    out = _PairDenoiser()(x)
    with torch.no_grad():
        p = torch.sigmoid(result.policy(order_inputs(x, x == MASK, out.logits, out.hidden, 0, 3)))[:, 1:]
    assert bool(((p >= 0.5).sum(-1) <= 1).all())  # never both cells at once, like the teacher


def test_imitation_of_an_unknown_teacher_names_the_registered_samplers():
    config = _config(objective="imitate", teacher="oracle_of_delphi", iterations=1)
    with pytest.raises(MdmError, match="unknown sampler 'oracle_of_delphi'"):
        train_order(_PairDenoiser(), _PairTask(), HIDDEN, config)


def test_reward_training_with_common_token_noise_still_learns_to_reveal_one_cell_first():
    result = train_order(_PairDenoiser(), _PairTask(), HIDDEN, _config(common_token_noise=True))
    after, _, _ = _rollout_stats(result.policy, budget=2)
    assert after > 0.95
