"""The ``imitate`` objective: behaviour cloning of a baseline sampler, a warm start for the ``reward`` objective.

A rollout generates answers from the prompts with a registered *teacher* sampler (``OrderTrainConfig.teacher``
and ``teacher_knobs``, e.g. ``eb`` with ``gamma=0.1``) exactly as :func:`merlin_mdm.mdm.samplers.base.generate`
would (same token rule, at least one reveal per step, everything at the last step of the budget). At every
step but the last the policy reads the same features and is trained, by binary cross-entropy over the masked
positions, to reveal what the teacher revealed. Its thresholded decoding then behaves like the teacher; the
``reward`` objective can start from it (``--init-policy``) instead of from a fresh or ELBO-trained policy.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from merlin_mdm.mdm.order.features import order_inputs
from merlin_mdm.mdm.order.objectives import (
    ObjectiveBatch,
    OrderObjective,
    denoise_frozen,
    masked_start,
    register_objective,
)
from merlin_mdm.mdm.samplers.base import StepState, at_least_one, fill_tokens, make_sampler

__all__ = ["ImitationObjective"]


@register_objective
class ImitationObjective(OrderObjective):
    """Mean binary cross-entropy between the policy's reveal probabilities and a teacher sampler's reveals."""

    name: ClassVar[str] = "imitate"

    def loss(self, batch: ObjectiveBatch) -> tuple[Tensor, dict[str, float]]:
        """Roll the teacher out and score the policy's agreement with it; logs the loss and the teacher's NFE."""
        cfg, task = batch.config, batch.task
        teacher = make_sampler(cfg.teacher, **dict(cfg.teacher_knobs))
        prompts = batch.x0[:, : task.prompt_len]
        n, p = prompts.shape
        x, masked = masked_start(prompts, task.answer_len, task.mask_id)  # (N, L) each
        terms: list[Tensor] = []
        nfe = torch.zeros(n)
        for t in range(batch.budget):
            nfe += masked.any(-1).float()
            if t == batch.budget - 1 or not bool(masked.any()):
                break
            logits, hidden = denoise_frozen(batch.denoiser, x, batch.config.rollouts if t == 0 else 1)
            state = StepState(x, masked, logits, hidden, t, batch.budget, batch.generator, p)
            reveal = at_least_one(teacher.select(state) & masked, masked, logits)  # (N, L)
            a = batch.policy(order_inputs(x, masked, logits, hidden, t, batch.budget))  # (N, L)
            terms.append(F.binary_cross_entropy_with_logits(a[masked], reveal[masked].float(), reduction="sum"))
            x = torch.where(reveal, fill_tokens(logits, cfg.token_temperature, batch.generator), x)
            masked = masked & ~reveal
        loss = torch.stack(terms).sum() / max(1, n * task.answer_len)
        return loss, {"bce_per_token": loss.item(), "teacher_nfe": nfe.mean().item()}
