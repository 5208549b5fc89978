"""The order distributions: the renormalised-score posterior and the conditioned-Bernoulli policy."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.mdm.order.bernoulli import (  # noqa: E402
    policy_kl,
    policy_log_normaliser,
    posterior_bernoulli,
    sample_policy,
    threshold_policy,
)

pytestmark = pytest.mark.torch


def _case(seed: int = 0, batch: int = 6, length: int = 9):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, length, generator=gen)
    masked = torch.rand(batch, length, generator=gen) < 0.7
    masked[:, 0] = True  # every row has something masked
    return scores, masked


def test_max_score_masked_position_has_q_one_and_all_q_in_unit_interval():
    scores, masked = _case()
    scores[:, 1] = 100.0  # an unmasked position may out-score every masked one
    masked[:, 1] = False
    post = posterior_bernoulli(scores, masked, tau=0.1)
    best = torch.where(masked, scores, torch.tensor(float("-inf"))).argmax(-1)
    assert torch.equal(post.q.gather(1, best[:, None]).squeeze(1), torch.ones(len(best)))
    assert bool(((post.q > 0) & (post.q <= 1))[masked].all())
    assert bool((post.q[~masked] == 0).all())


def test_every_draw_reveals_the_argmax_and_only_masked_positions():
    scores, masked = _case(1)
    post = posterior_bernoulli(scores, masked, tau=0.5)
    gen = torch.Generator().manual_seed(3)
    best = torch.where(masked, scores, torch.tensor(float("-inf"))).argmax(-1)
    for _ in range(20):
        r = post.sample(gen)
        assert bool(r.gather(1, best[:, None]).all())
        assert not bool((r & ~masked).any())


def test_small_tau_reveals_only_the_argmax():
    scores, masked = _case(2)
    post = posterior_bernoulli(scores, masked, tau=1e-4)
    r = post.sample(torch.Generator().manual_seed(0))
    assert torch.equal(r.sum(-1), torch.ones(r.shape[0], dtype=torch.long))
    best = torch.where(masked, scores, torch.tensor(float("-inf"))).argmax(-1)
    assert bool(r.gather(1, best[:, None]).all())


def test_large_tau_reveals_more_than_small_tau():
    scores, masked = _case(4)
    assert posterior_bernoulli(scores, masked, 10.0).q.sum() > posterior_bernoulli(scores, masked, 0.05).q.sum()


def test_rows_without_masks_have_zero_q_and_finite_terms():
    scores, masked = _case(5)
    masked[0] = False
    post = posterior_bernoulli(scores, masked, 0.1)
    assert bool((post.q[0] == 0).all())
    kl = policy_kl(post, torch.randn_like(scores))
    assert bool(torch.isfinite(kl).all()) and kl[0].item() == 0.0


def test_gradients_are_finite_even_where_q_is_one():
    scores, masked = _case(6)
    scores.requires_grad_(True)
    logits = torch.randn_like(scores, requires_grad=True)
    post = posterior_bernoulli(scores, masked, 0.1)
    r = post.sample(torch.Generator().manual_seed(0))
    (policy_kl(post, logits).sum() + post.log_prob(r).sum()).backward()
    assert bool(torch.isfinite(scores.grad).all()) and bool(torch.isfinite(logits.grad).all())


def test_policy_normaliser_is_the_probability_of_revealing_anything():
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.0]])
    masked = torch.tensor([[True, True, False, True]])
    p = torch.sigmoid(logits)[masked]
    expected = torch.log(1 - torch.prod(1 - p))
    assert policy_log_normaliser(logits, masked).item() == pytest.approx(expected.item(), abs=1e-6)


def test_sample_policy_matches_the_conditioned_bernoulli():
    logits = torch.tensor([[-1.5, 0.2, -0.7]])
    masked = torch.ones(1, 3, dtype=torch.bool)
    p = torch.sigmoid(logits)[0]
    n = 40000
    draws = sample_policy(logits.expand(n, 3), masked.expand(n, 3), torch.Generator().manual_seed(0))
    assert bool(draws.any(-1).all())
    z = 1 - torch.prod(1 - p)
    for bits in itertools.product([0, 1], repeat=3):
        if not any(bits):
            continue
        b = torch.tensor(bits, dtype=torch.bool)
        exact = torch.prod(torch.where(b, p, 1 - p)) / z
        freq = (draws == b).all(-1).float().mean()
        assert freq.item() == pytest.approx(exact.item(), abs=0.012)


def test_sample_policy_is_deterministic_under_a_seed_and_stays_in_masked():
    scores, masked = _case(7)
    a = sample_policy(scores, masked, torch.Generator().manual_seed(11))
    b = sample_policy(scores, masked, torch.Generator().manual_seed(11))
    assert torch.equal(a, b)
    assert not bool((a & ~masked).any()) and bool(a.any(-1).all())


def test_threshold_policy_reveals_confident_positions_or_the_single_best():
    logits = torch.tensor([[3.0, -2.0, 1.0, 4.0], [-3.0, -1.0, -2.0, -4.0]])
    masked = torch.tensor([[True, True, True, False], [True, True, True, True]])
    r = threshold_policy(logits, masked)
    assert r.tolist() == [[True, False, True, False], [False, True, False, False]]
