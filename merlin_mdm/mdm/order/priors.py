"""Heuristic priors of a sequential policy: the policy = a heuristic sampler's decisions + a learned residual.

A sequential policy picks masked positions one at a time and then stops (:mod:`.policies`): each decision is a
softmax over the positions still available and "stop". With a prior, the logits are the prior's plus the
network's. The prior gives position ``i`` the logit ``scale * key_i`` and "stop" the logit
``logsumexp_j(scale * key_j) + scale * margin`` (``j`` over the available positions), so that, with the
network's outputs at zero, P(stop) = sigmoid(scale * margin) whatever the number of positions, and the next
position is the heuristic's next. The margins are positive exactly where the heuristic stops, so a policy whose
network outputs zero, decoded as sequential policies are (pick the most likely position until P(stop) >= 0.5),
*is* the heuristic sampler; one trained from there (``reward``) starts at the baseline instead of at a copy that
lost a point or two to imitation (docs/mdm-order-learning.md sections 16-21):

* ``threshold`` (``tau``, as :class:`~merlin_mdm.mdm.samplers.adaptive.ThresholdSampler`): ``key_i =
  logit(confidence_i)``, ``margin = logit(tau) - max_j key_j``: pick the most confident position while its
  confidence is >= tau.
* ``eb`` (``gamma``, as :class:`~merlin_mdm.mdm.samplers.adaptive.EntropyBoundedSampler`): ``key_i = -H_i``
  (nats), ``margin = (sum of the chosen positions' H) - gamma``: pick the lowest-entropy position while the
  chosen ones' entropies sum to <= gamma.

``scale`` sets how sharp the prior is when the policy is *sampled* (reward training explores where the
heuristic's decision is close); the decoded sets do not depend on it. The stop margin may have its own scale
(``prior_stop_scale``), so that sampled rollouts stop where the heuristic does while their picks explore: then
P(stop) = sigmoid(stop_scale * margin). Priors read only
:class:`.features.OrderInputs` scalars, so training and sampling see the same numbers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, TypeVar

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.order.features import CONFIDENCE_COLUMN, ENTROPY_COLUMN
from merlin_mdm.mdm.registry import build

__all__ = ["ORDER_PRIORS", "EntropyBoundPrior", "OrderPrior", "ThresholdPrior", "best_key", "make_order_prior",
           "register_order_prior"]

_CLAMP = 1e-6  # confidences are clamped to [_CLAMP, 1 - _CLAMP] before the logit (1.0 is common in float32)
_EB_TIE = 1e-6  # nats: chosen entropy of exactly gamma (e.g. 0 = 0 with gamma 0) goes on, as the EB-sampler does


class OrderPrior(ABC):
    """A heuristic's pick and stop preferences, in logit units (before ``scale``)."""

    name: ClassVar[str]

    @abstractmethod
    def keys(self, scalars: Tensor, vocab_size: int) -> Tensor:
        """(B, L) each position's pick preference from the step's scalars (B, L, N_SCALARS)."""

    @abstractmethod
    def margin(self, keys: Tensor, available: Tensor, chosen: Tensor) -> Tensor:
        """(n,) how strongly the heuristic stops (> 0) or goes on (< 0), given the keys (n, L), the positions
        still available (at least one per row) and those already chosen (n, L) bool."""


def best_key(keys: Tensor, available: Tensor) -> Tensor:
    """(n,) the largest key among the available positions (0 for a row with none: its step has ended)."""
    best = keys.masked_fill(~available, float("-inf")).max(-1).values
    return torch.where(torch.isfinite(best), best, torch.zeros_like(best))


ORDER_PRIORS: dict[str, type[OrderPrior]] = {}

_P = TypeVar("_P", bound=type[OrderPrior])


def register_order_prior(cls: _P) -> _P:
    """Class decorator adding ``cls`` to :data:`ORDER_PRIORS` under ``cls.name``."""
    ORDER_PRIORS[cls.name] = cls
    return cls


def make_order_prior(name: str, knobs: dict[str, float]) -> OrderPrior:
    """The registered prior ``name`` with its knobs.

    Raises:
        MdmError: an unknown prior or knob (the message lists the valid ones), or a knob out of range.
    """
    return build("order prior", ORDER_PRIORS, name, knobs)


@register_order_prior
class ThresholdPrior(OrderPrior):
    """Fast-dLLM's threshold rule as a prior: most confident first, stop below ``tau``."""

    name: ClassVar[str] = "threshold"

    def __init__(self, tau: float = 0.9) -> None:
        if not 0.0 < float(tau) < 1.0:
            raise MdmError(f"order prior threshold: tau must be in (0, 1), got {tau}")
        self.tau = float(tau)

    def keys(self, scalars: Tensor, vocab_size: int) -> Tensor:
        """logit of the denoiser's confidence."""
        return torch.logit(scalars[..., CONFIDENCE_COLUMN].clamp(_CLAMP, 1.0 - _CLAMP))

    def margin(self, keys: Tensor, available: Tensor, chosen: Tensor) -> Tensor:
        """logit(tau) minus the best available position's logit confidence."""
        return math.log(self.tau / (1.0 - self.tau)) - best_key(keys, available)


@register_order_prior
class EntropyBoundPrior(OrderPrior):
    """The EB-sampler's rule as a prior: lowest entropy first, stop once the chosen entropies exceed ``gamma``."""

    name: ClassVar[str] = "eb"

    def __init__(self, gamma: float = 0.1) -> None:
        if float(gamma) < 0:
            raise MdmError(f"order prior eb: gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def keys(self, scalars: Tensor, vocab_size: int) -> Tensor:
        """Minus the entropy in nats (the features hold it divided by log V)."""
        return -scalars[..., ENTROPY_COLUMN] * math.log(vocab_size)

    def margin(self, keys: Tensor, available: Tensor, chosen: Tensor) -> Tensor:
        """The chosen positions' entropy beyond gamma (less a hair: at exactly gamma the EB-sampler goes on)."""
        spent = -(keys * chosen.float()).sum(-1)  # (n,) nats
        return spent - self.gamma - _EB_TIE
