"""The ``imitate`` objective: behaviour cloning of a baseline sampler, a warm start for the ``reward`` objective.

A rollout generates answers from the prompts with a registered *teacher* sampler (``OrderTrainConfig.teacher``
and ``teacher_knobs``, e.g. ``eb`` with ``gamma=0.1``) exactly as :func:`merlin_mdm.mdm.samplers.base.generate`
would (same token rule, at least one reveal per step, everything at the last step of the budget). At every
step but the last the policy reads the same features and is trained to reveal what the teacher revealed, by
its kind's :meth:`~merlin_mdm.mdm.order.policies.RevealPolicy.imitation_loss`: binary cross-entropy over the
masked positions for a ``bernoulli`` policy; for a ``sequential`` one, the negative log-probability of the
teacher's set picked in the denoiser's confidence order and closed by "stop" (none when the set is everything
left; the last step of the budget is forced and not trained). Its thresholded decoding then behaves like the
teacher; the ``reward`` objective can start from it (``--init-policy``) instead of from a fresh or
ELBO-trained policy.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from merlin_mdm.mdm.order.features import order_inputs
from merlin_mdm.mdm.order.objectives import (
    ObjectiveBatch,
    OrderObjective,
    denoise_frozen,
    masked_start,
    register_objective,
)
from merlin_mdm.mdm.order.policies import make_reveal_policy
from merlin_mdm.mdm.samplers.base import StepState, at_least_one, fill_tokens, make_sampler

__all__ = ["ImitationObjective"]


@register_objective
class ImitationObjective(OrderObjective):
    """The policy kind's imitation loss of a teacher sampler's reveals, per answer token."""

    name: ClassVar[str] = "imitate"
    policy_kinds: ClassVar[tuple[str, ...] | None] = None  # any: every kind defines its imitation loss

    def loss(self, batch: ObjectiveBatch) -> tuple[Tensor, dict[str, float]]:
        """Roll the teacher out and score the policy's agreement with it; logs the loss and the teacher's NFE."""
        cfg, task = batch.config, batch.task
        teacher = make_sampler(cfg.teacher, **dict(cfg.teacher_knobs))
        kind = make_reveal_policy(cfg.policy_kind)
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
            inputs = order_inputs(x, masked, logits, hidden, t, batch.budget)
            terms.append(kind.imitation_loss(batch.policy, inputs, reveal))
            x = torch.where(reveal, fill_tokens(logits, cfg.token_temperature, batch.generator), x)
            masked = masked & ~reveal
        loss = torch.stack(terms).sum() / max(1, n * task.answer_len)
        return loss, {kind.imitation_figure: loss.item(), "teacher_nfe": nfe.mean().item()}
