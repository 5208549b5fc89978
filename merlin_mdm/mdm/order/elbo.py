"""The ELBO over generation orders and its gradient estimator.

For clean data x0 and an order drawn from the posterior (r_0, ..., r_{T-1}, with r_{T-1} = everything left),

    log p(x0) >= E_q sum_t F_t,   F_t = sum_i q_{t,i} log p_den(x0_i | x_t) - KL(q_t || p_theta,t),

where the within-step expectation over r_t is analytic (Rao-Blackwellised): the reconstruction term is linear
in the bits and the KL is between product (and conditioned-product) Bernoullis. r_t's effect on later states is
handled by the score function: grad E_q sum_t F_t = E_q sum_t [grad F_t + grad log q(r_t) (G_t - b_t)], with the
returns-to-go G_t = sum_{t' > t} F_{t'} and a leave-one-out baseline b_t over the K rollouts of one example.
See docs/mdm-order-learning.md for the derivation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.order.bernoulli import PosteriorBernoulli, policy_kl

__all__ = ["StepTerms", "leave_one_out_advantages", "returns_to_go", "surrogate_objective", "within_step_terms"]


class StepTerms(NamedTuple):
    """The analytic within-step terms for one step, each (N,).

    Attributes:
        recon: E_{r ~ q}[sum_i r_i log p_den(x0_i | x_t)] = sum_i q_i log p_den(x0_i | x_t).
        kl: KL(q(r_t) || p_theta(r_t)), the policy conditioned on r != 0.
    """

    recon: Tensor
    kl: Tensor


def within_step_terms(post: PosteriorBernoulli, log_p_x0: Tensor, policy_logits: Tensor) -> StepTerms:
    """Closed-form reconstruction and KL of one (non-final) step.

    Args:
        post: the posterior at this step.
        log_p_x0: (N, L) log p_den(x0_i | x_t) (no gradient; the denoiser is frozen).
        policy_logits: (N, L) the policy's Bernoulli logits.

    Returns:
        The :class:`StepTerms`.
    """
    recon = torch.where(post.masked, post.q * log_p_x0, torch.zeros_like(log_p_x0)).sum(-1)
    return StepTerms(recon=recon, kl=policy_kl(post, policy_logits))


def returns_to_go(step_values: Tensor) -> Tensor:
    """G_t = sum_{t' > t} F_{t'} for step values (..., T): same shape, last entry 0."""
    suffix = torch.flip(torch.cumsum(torch.flip(step_values, [-1]), -1), [-1])  # sum_{t' >= t}
    return suffix - step_values


def leave_one_out_advantages(returns: Tensor) -> Tensor:
    """G^k - mean_{j != k} G^j over the rollout axis.

    Args:
        returns: (B, K, ...) returns of K >= 2 rollouts of each example.

    Returns:
        Same shape. The baseline of rollout k does not depend on rollout k, so the estimator stays unbiased;
        the advantages of one example sum to zero.
    """
    k = returns.shape[1]
    if k < 2:
        raise MdmError(f"the leave-one-out baseline needs at least 2 rollouts per example, got {k}")
    baseline = (returns.sum(1, keepdim=True) - returns) / (k - 1)
    return returns - baseline


def surrogate_objective(step_values: Tensor, log_q_r: Tensor, rollouts: int) -> Tensor:
    """Per-rollout surrogate whose gradient is the estimator above, and whose value is the ELBO.

    Args:
        step_values: (N, T) F_t with gradients (N = B * K, rollouts of one example adjacent).
        log_q_r: (N, T) log q(r_t) of the drawn vectors, with gradients (0 at the forced last step).
        rollouts: K.

    Returns:
        (N,) surrogate; its mean over N is maximised.
    """
    n, steps = step_values.shape
    advantages = leave_one_out_advantages(returns_to_go(step_values.detach()).view(n // rollouts, rollouts, steps))
    score_term = log_q_r * advantages.reshape(n, steps)
    return step_values.sum(-1) + score_term.sum(-1) - score_term.detach().sum(-1)
