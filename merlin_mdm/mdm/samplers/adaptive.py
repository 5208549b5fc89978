"""Adaptive samplers: the number revealed per step depends on the denoiser's confidence; the budget is a maximum."""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.samplers.base import Sampler, StepState, register_sampler
from merlin_mdm.mdm.samplers.heuristics import entropy_of, probs_of

__all__ = ["EntropyBoundedSampler", "ThresholdSampler"]


@register_sampler
class ThresholdSampler(Sampler):
    """Fast-dLLM: reveal every masked position whose top-1 probability is >= ``tau`` (at least the most confident).

    Args:
        tau: the confidence threshold in (0, 1].
    """

    name = "threshold"
    adaptive = True

    def __init__(self, tau: float = 0.9) -> None:
        if not 0.0 < float(tau) <= 1.0:
            raise MdmError(f"threshold: tau must be in (0, 1], got {tau}")
        self.tau = float(tau)

    def select(self, state: StepState) -> Tensor:
        """Masked positions at or above the threshold, plus each row's most confident one."""
        conf = probs_of(state).max(-1).values.masked_fill(~state.masked, -1.0)  # (B, L)
        best = torch.zeros_like(state.masked).scatter_(-1, conf.argmax(-1, keepdim=True), True)  # (B, L)
        return ((conf >= self.tau) | best) & state.masked


@register_sampler
class EntropyBoundedSampler(Sampler):
    """EB-sampler: reveal the lowest-entropy prefix whose entropy sum minus its max is <= ``gamma``.

    Masked positions are sorted by entropy; the first one is always revealed.

    Args:
        gamma: the entropy bound in nats, >= 0.
    """

    name = "eb"
    adaptive = True

    def __init__(self, gamma: float = 0.5) -> None:
        if float(gamma) < 0:
            raise MdmError(f"eb: gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def select(self, state: StepState) -> Tensor:
        """The entropy-bounded prefix of the masked positions."""
        ent = entropy_of(probs_of(state)).masked_fill(~state.masked, float("inf"))  # (B, L)
        sorted_ent, order = torch.sort(ent, dim=-1, stable=True)  # (B, L) ascending
        finite = sorted_ent.masked_fill(sorted_ent.isinf(), 0.0)
        # Sorted ascending, the prefix's max is its last element: sum - max = the sum of the ones before it.
        before = finite.cumsum(-1) - finite  # (B, L)
        take_sorted = (before <= self.gamma) & sorted_ent.isfinite()  # (B, L), a prefix per row
        return torch.zeros_like(state.masked).scatter_(-1, order, take_sorted) & state.masked
