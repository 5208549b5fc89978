"""The ELBO's closed-form within-step terms and the leave-one-out score-function estimator."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.order.bernoulli import posterior_bernoulli  # noqa: E402
from merlin_mdm.mdm.order.elbo import (  # noqa: E402
    leave_one_out_advantages,
    returns_to_go,
    surrogate_objective,
    within_step_terms,
)

pytestmark = pytest.mark.torch


def _step(seed: int = 0, length: int = 5):
    gen = torch.Generator().manual_seed(seed)
    scores = 0.1 * torch.randn(1, length, generator=gen)
    masked = torch.ones(1, length, dtype=torch.bool)
    masked[0, 1] = False
    post = posterior_bernoulli(scores, masked, tau=0.1)
    log_p_x0 = -3 * torch.rand(1, length, generator=gen)
    logits = torch.randn(1, length, generator=gen)
    return post, log_p_x0, logits, masked


def _log_policy(r, logits, masked):
    """log p_theta(r | r != 0) by brute force."""
    p = torch.sigmoid(logits)
    lp = torch.where(r, p.log(), (1 - p).log())[masked].sum()
    return lp - torch.log(1 - torch.prod((1 - p)[masked]))


def test_closed_form_terms_equal_exhaustive_expectation():
    post, log_p_x0, logits, masked = _step()
    terms = within_step_terms(post, log_p_x0, logits)
    idx = masked[0].nonzero().squeeze(1).tolist()
    recon = kl = 0.0
    for bits in itertools.product([False, True], repeat=len(idx)):
        r = torch.zeros_like(masked)
        r[0, idx] = torch.tensor(bits)
        prob = post.log_prob(r).exp().item()
        if prob == 0.0:
            continue
        recon += prob * log_p_x0[r].sum().item()
        kl += prob * (post.log_prob(r).item() - _log_policy(r, logits, masked).item())
    assert terms.recon.item() == pytest.approx(recon, abs=1e-5)
    assert terms.kl.item() == pytest.approx(kl, abs=1e-5)


def test_closed_form_terms_match_a_monte_carlo_estimate():
    post, log_p_x0, logits, masked = _step(3, length=12)
    terms = within_step_terms(post, log_p_x0, logits)
    n = 20000
    expanded = type(post)(*(t.expand(n, -1) for t in post))
    r = expanded.sample(torch.Generator().manual_seed(0))
    recon_mc = (r * log_p_x0).sum(-1)
    p = torch.sigmoid(logits)
    log_pol = torch.where(r, p.log(), (1 - p).log()).masked_fill(~masked, 0).sum(-1)
    kl_mc = expanded.log_prob(r) - (log_pol - torch.log(1 - torch.prod((1 - p)[masked])))
    assert terms.recon.item() == pytest.approx(recon_mc.mean().item(), abs=4 * recon_mc.std().item() / n**0.5)
    assert terms.kl.item() == pytest.approx(kl_mc.mean().item(), abs=4 * kl_mc.std().item() / n**0.5)
    assert terms.kl.item() >= 0.0


def test_returns_to_go_sum_the_strict_future():
    values = torch.tensor([[1.0, 2.0, 4.0]])
    assert returns_to_go(values).tolist() == [[6.0, 4.0, 0.0]]


def test_leave_one_out_advantages_sum_to_zero_and_exclude_self():
    returns = torch.tensor([[[1.0], [2.0], [6.0]]])  # (B=1, K=3, T=1)
    adv = leave_one_out_advantages(returns)
    assert adv.squeeze().tolist() == pytest.approx([1 - 4.0, 2 - 3.5, 6 - 1.5])
    assert adv.sum().item() == pytest.approx(0.0)
    with pytest.raises(MdmError, match="at least 2 rollouts"):
        leave_one_out_advantages(returns[:, :1])


def test_leave_one_out_estimator_is_unbiased():
    """E[grad log q(r_k) (f(r_k) - b_k)] equals the exact gradient of E_q f(r), and the baseline's part is 0."""
    theta = torch.tensor([0.4, -0.8, 0.1], requires_grad=True)

    def f(r):  # an arbitrary non-linear reward of a 3-bit vector
        return 3.0 * r[..., 0] * r[..., 1] - 2.0 * r[..., 2] + r.sum(-1) ** 2

    exact = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        r = torch.tensor(bits)
        q = torch.sigmoid(theta)
        exact = exact + torch.prod(torch.where(r > 0, q, 1 - q)) * f(r)
    (grad_exact,) = torch.autograd.grad(exact, theta)
    batches, k = 20000, 4
    q = torch.sigmoid(theta).expand(batches, k, 3)
    r = (torch.rand(batches, k, 3, generator=torch.Generator().manual_seed(0)) < q).float()
    log_q = (r * q.log() + (1 - r) * (1 - q).log()).sum(-1)  # (B, K)
    rewards = f(r)[..., None]  # (B, K, 1)
    adv = leave_one_out_advantages(rewards).squeeze(-1)
    (grad_loo,) = torch.autograd.grad((log_q * adv).mean(), theta, retain_graph=True)
    (grad_base,) = torch.autograd.grad((log_q * (rewards.squeeze(-1) - adv)).mean(), theta)
    assert torch.allclose(grad_loo, grad_exact, atol=0.06)
    assert torch.allclose(grad_base, torch.zeros(3), atol=0.12)


def test_surrogate_value_is_the_elbo_and_gradient_adds_the_score_term():
    values = torch.tensor([[1.0, 2.0], [3.0, 5.0]], requires_grad=True)  # one example, K = 2, T = 2
    log_q = torch.tensor([[0.5, 0.0], [0.2, 0.0]], requires_grad=True)
    sur = surrogate_objective(values, log_q, rollouts=2)
    assert sur.tolist() == pytest.approx([3.0, 8.0])
    sur.sum().backward()
    assert log_q.grad[:, 0].tolist() == pytest.approx([2.0 - 5.0, 5.0 - 2.0])
    assert values.grad.tolist() == [[1.0, 1.0], [1.0, 1.0]]
