"""What an order-training iteration maximises: a registered objective strategy.

``train_order`` draws a batch, asks the configured objective (``OrderTrainConfig.objective``) for a loss, and
takes one Adam step. Two objectives are registered:

* ``elbo`` (:mod:`.training`): the order ELBO of arXiv 2602.23968, a likelihood of the clean training example
  under the policy's order, with a posterior q_phi trained alongside.
* ``reward`` (:mod:`.reward`): REINFORCE on the task's own score of the board the policy actually generates,
  less a price per denoiser call; no posterior, no clean answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.order.networks import OrderNet

__all__ = [
    "OBJECTIVES",
    "DenoiserFn",
    "ObjectiveBatch",
    "OrderObjective",
    "denoise_frozen",
    "make_objective",
    "masked_start",
    "register_objective",
]


class _DenoiserOutput(Protocol):
    logits: Tensor  # (B, L, V)
    hidden: Tensor  # (B, L, D)


DenoiserFn = Callable[[Tensor], _DenoiserOutput]


def denoise_frozen(denoiser: DenoiserFn, x: Tensor, shared: int) -> tuple[Tensor, Tensor]:
    """Frozen denoiser call -> (logits (N, L, V), hidden (N, L, D)) as float, without gradients.

    With ``shared`` > 1 the rows come in identical groups of that size and each group is computed once.
    """
    with torch.no_grad():
        out = denoiser(x[::shared])
        logits, hidden = out.logits.float(), out.hidden.float()
    if shared > 1:
        logits, hidden = logits.repeat_interleave(shared, 0), hidden.repeat_interleave(shared, 0)
    return logits, hidden


def masked_start(prompts: Tensor, answer_len: int, mask_id: int) -> tuple[Tensor, Tensor]:
    """The state generation starts from: (x (N, P + A) with the answer masked, masked (N, P + A) bool)."""
    n, p = prompts.shape
    x = torch.cat([prompts, torch.full((n, answer_len), mask_id, dtype=torch.long)], dim=1)
    masked = torch.zeros_like(x, dtype=torch.bool)
    masked[:, p:] = True
    return x, masked


@dataclass(frozen=True)
class ObjectiveBatch:
    """One iteration's inputs.

    Attributes:
        denoiser: the frozen denoiser.
        task: the task (``prompt_len``, ``answer_len``, ``mask_id``, and ``score`` for the reward objective).
        policy: p_theta, being trained.
        posterior: q_phi (trained by the ELBO objective only).
        x0: (B * K, L) training examples, each repeated K = ``rollouts`` times (adjacent rows).
        budget: T for this iteration.
        tau: the posterior temperature at this iteration.
        generator: the rollouts' RNG.
        config: the :class:`~merlin_mdm.mdm.order.training.OrderTrainConfig`.
    """

    denoiser: DenoiserFn
    task: Any
    policy: OrderNet
    posterior: OrderNet
    x0: Tensor
    budget: int
    tau: float
    generator: torch.Generator
    config: Any


class OrderObjective(ABC):
    """A training objective for the order policy: a differentiable loss and the figures to log."""

    name: ClassVar[str]
    policy_kinds: ClassVar[tuple[str, ...] | None] = ("bernoulli",)  # policy kinds it can train (None: any)

    @abstractmethod
    def loss(self, batch: ObjectiveBatch) -> tuple[Tensor, dict[str, float]]:
        """Return (a scalar to minimise, log figures) for one batch."""


OBJECTIVES: dict[str, type[OrderObjective]] = {}

_O = TypeVar("_O", bound=type[OrderObjective])


def register_objective(cls: _O) -> _O:
    """Class decorator adding ``cls`` to :data:`OBJECTIVES` under ``cls.name``."""
    OBJECTIVES[cls.name] = cls
    return cls


def make_objective(name: str) -> OrderObjective:
    """The registered objective called ``name``.

    Raises:
        MdmError: unknown name (the message lists the registered ones).
    """
    if name not in OBJECTIVES:
        raise MdmError(f"train-order: unknown objective {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]()
