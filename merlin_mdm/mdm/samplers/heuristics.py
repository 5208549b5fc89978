"""Fixed-budget samplers: T steps, the remaining masks split evenly over the steps left, the top-k by a score.

``iid`` reveals uniformly random positions (the MDLM ancestral baseline); ``top_prob``, ``margin`` and
``entropy`` reveal the positions the denoiser is most sure of by the named confidence measure.
"""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.mdm.samplers.base import FixedBudgetSampler, StepState, register_sampler

__all__ = ["EntropySampler", "IidSampler", "MarginSampler", "TopProbSampler", "entropy_of", "probs_of"]


def probs_of(state: StepState) -> Tensor:
    """Softmax of the denoiser logits in float32. (B, L, V)."""
    return torch.softmax(state.logits.float(), dim=-1)


def entropy_of(probs: Tensor) -> Tensor:
    """Entropy in nats of each position's predictive distribution. (B, L, V) -> (B, L)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


@register_sampler
class IidSampler(FixedBudgetSampler):
    """Random order: k uniformly random masked positions per step."""

    name = "iid"

    def score(self, state: StepState) -> Tensor:
        """Uniform noise from the step's generator. (B, L)."""
        return torch.rand(state.masked.shape, generator=state.generator)


@register_sampler
class TopProbSampler(FixedBudgetSampler):
    """Reveal the k positions with the highest top-1 probability."""

    name = "top_prob"

    def score(self, state: StepState) -> Tensor:
        """max_v p(v). (B, L)."""
        return probs_of(state).max(-1).values


@register_sampler
class MarginSampler(FixedBudgetSampler):
    """Reveal the k positions with the largest gap between the top two probabilities."""

    name = "margin"

    def score(self, state: StepState) -> Tensor:
        """p(top1) - p(top2). (B, L)."""
        top2 = probs_of(state).topk(2, dim=-1).values  # (B, L, 2)
        return top2[..., 0] - top2[..., 1]


@register_sampler
class EntropySampler(FixedBudgetSampler):
    """Reveal the k positions with the lowest predictive entropy."""

    name = "entropy"

    def score(self, state: StepState) -> Tensor:
        """Negative entropy. (B, L)."""
        return -entropy_of(probs_of(state))
