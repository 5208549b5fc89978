"""The two distributions over unmasking vectors r (one bit per masked position) and their closed forms.

* Posterior q_phi: independent Bernoulli with q_i = exp((s_i - max_j s_j) / tau) over masked positions, so the
  best-scoring position has q = 1 and every draw reveals at least one token.
* Policy p_theta: independent Bernoulli(p_i = sigmoid(a_i)) *conditioned on r != 0*, i.e.
  p(r) = prod_i Bern(r_i; p_i) / Z with Z = 1 - prod_i (1 - p_i). This is how "at least one on" enters the
  likelihood. Because q never draws r = 0, KL(q || p) = sum_i KL(Bern(q_i) || Bern(p_i)) + log Z exactly.

Every function takes a (B, L) ``masked`` tensor and ignores unmasked positions (their bits are 0 under both).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "PosteriorBernoulli",
    "bernoulli_kl",
    "log1mexp",
    "policy_kl",
    "policy_log_normaliser",
    "policy_log_prob",
    "posterior_bernoulli",
    "sample_policy",
    "threshold_policy",
]

_TINY = 1e-7


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends; x is clamped to <= -1e-7 (so the result is finite)."""
    x = x.clamp_max(-_TINY)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class PosteriorBernoulli(NamedTuple):
    """q_phi at one step, all (B, L) and zero at unmasked positions.

    Attributes:
        q: probabilities of revealing each position.
        log_q: log q (0 where unmasked).
        log1m_q: log(1 - q), floored at log(1e-7) where q = 1 (0 where unmasked).
        masked: the masked positions.
    """

    q: Tensor
    log_q: Tensor
    log1m_q: Tensor
    masked: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw r ~ q: (B, L) bool, a subset of ``masked`` containing every position with q = 1."""
        u = torch.rand(self.q.shape, generator=generator, device=self.q.device)
        return (u < self.q) & self.masked

    def log_prob(self, r: Tensor) -> Tensor:
        """log q(r) per row: (B,)."""
        return torch.where(r, self.log_q, self.log1m_q).sum(-1)


def posterior_bernoulli(scores: Tensor, masked: Tensor, tau: float) -> PosteriorBernoulli:
    """Renormalised-score posterior: q_i = exp((s_i - max_{j masked} s_j) / tau) on masked positions.

    Args:
        scores: (B, L) posterior scores s.
        masked: (B, L) bool.
        tau: temperature > 0; as tau -> 0 only the argmax is revealed.

    Returns:
        The :class:`PosteriorBernoulli`. Rows with nothing masked are all zero.
    """
    neg_inf = torch.full_like(scores, float("-inf"))
    top = torch.where(masked, scores, neg_inf).amax(-1, keepdim=True)  # (B, 1)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    log_q = torch.where(masked, (scores - top) / tau, torch.zeros_like(scores))  # <= 0 on masked
    q = torch.where(masked, log_q.exp(), torch.zeros_like(scores))
    log1m_q = torch.where(masked, log1mexp(log_q), torch.zeros_like(scores))
    return PosteriorBernoulli(q=q, log_q=log_q, log1m_q=log1m_q, masked=masked)


def bernoulli_kl(post: PosteriorBernoulli, policy_logits: Tensor) -> Tensor:
    """sum_i KL(Bern(q_i) || Bern(p_i)) over masked positions, p_i = sigmoid(a_i): (B,)."""
    log_p = F.logsigmoid(policy_logits)
    log1m_p = F.logsigmoid(-policy_logits)
    kl = post.q * (post.log_q - log_p) + (1.0 - post.q) * (post.log1m_q - log1m_p)  # (B, L)
    return torch.where(post.masked, kl, torch.zeros_like(kl)).sum(-1)


def policy_log_normaliser(policy_logits: Tensor, masked: Tensor) -> Tensor:
    """log Z = log(1 - prod_{i masked} (1 - p_i)), the log-probability that the policy reveals anything: (B,).

    Rows with nothing masked get 0.
    """
    log1m_p = torch.where(masked, F.logsigmoid(-policy_logits), torch.zeros_like(policy_logits))
    log_z = log1mexp(log1m_p.sum(-1))
    return torch.where(masked.any(-1), log_z, torch.zeros_like(log_z))


def policy_kl(post: PosteriorBernoulli, policy_logits: Tensor) -> Tensor:
    """KL(q || p_theta(. | r != 0)) in closed form: (B,)."""
    return bernoulli_kl(post, policy_logits) + policy_log_normaliser(policy_logits, post.masked)


def policy_log_prob(policy_logits: Tensor, masked: Tensor, r: Tensor) -> Tensor:
    """log p_theta(r | r != 0) of a drawn vector: sum over masked i of log Bern(r_i; p_i), less log Z: (B,).

    Differentiable in ``policy_logits``; rows with nothing masked get 0.
    """
    log_bits = torch.where(r, F.logsigmoid(policy_logits), F.logsigmoid(-policy_logits))  # (B, L)
    log_bits = torch.where(masked, log_bits, torch.zeros_like(log_bits)).sum(-1)
    return log_bits - policy_log_normaliser(policy_logits, masked)


def sample_policy(policy_logits: Tensor, masked: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Exact draw from the policy conditioned on revealing at least one masked position.

    The first revealed position k (in index order) has probability prod_{j<k} (1 - p_j) p_k / Z; positions
    before k stay masked and positions after k are independent Bernoulli(p_j).

    Returns:
        (B, L) bool subset of ``masked``; rows with anything masked reveal at least one position.
    """
    log_p = F.logsigmoid(policy_logits)
    log1m_p = torch.where(masked, F.logsigmoid(-policy_logits), torch.zeros_like(policy_logits))
    before = torch.cumsum(log1m_p, dim=-1) - log1m_p  # (B, L) log prod_{j<k} (1 - p_j)
    log_first = torch.where(masked, before + log_p, torch.full_like(log_p, float("-inf")))
    rows = masked.any(-1)
    log_first = torch.where(rows[:, None], log_first, torch.zeros_like(log_first))
    first = torch.multinomial(torch.softmax(log_first, dim=-1), 1, generator=generator)  # (B, 1)
    index = torch.arange(masked.shape[1], device=masked.device)[None, :]  # (1, L)
    u = torch.rand(masked.shape, generator=generator, device=masked.device)
    later = (index > first) & (u < log_p.exp())
    return masked & rows[:, None] & ((index == first) | later)


def threshold_policy(policy_logits: Tensor, masked: Tensor, threshold: float = 0.5) -> Tensor:
    """Deterministic decoding: reveal masked positions with p_i >= threshold, else the single most likely.

    Returns:
        (B, L) bool subset of ``masked``; rows with anything masked reveal at least one position.
    """
    p = torch.sigmoid(policy_logits)
    chosen = masked & (p >= threshold)
    best = torch.where(masked, policy_logits, torch.full_like(policy_logits, float("-inf"))).argmax(-1)  # (B,)
    fallback = torch.zeros_like(masked).scatter_(1, best[:, None], True) & masked
    need = masked.any(-1) & ~chosen.any(-1)
    return torch.where(need[:, None], fallback, chosen)
