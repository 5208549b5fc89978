"""The ``reward`` objective: REINFORCE on the task's score of the generated answer, less a price per call.

A rollout generates an answer from the prompt alone, exactly as evaluation does: at each step the frozen
denoiser is called, the policy draws which masked positions to reveal (through its kind's ``sample``,
:mod:`.policies`: a conditioned Bernoulli vector, or a sequence of picks ending in "stop"; the last step of
the budget reveals everything) and the revealed positions are filled by the same token rule as every
sampler (:func:`merlin_mdm.mdm.samplers.base.fill_tokens` at ``token_temperature``; 1.0 samples from the
denoiser, 0 takes its argmax). A row whose draw reveals everything is finished and spends no further call.
The return is

    R = task.score(answer) - nfe_penalty * NFE,

and the gradient estimate is (R - b) grad sum_t log p_theta(r_t), with b the mean return of the other K-1
rollouts of the same prompt (leave-one-out, as in :func:`merlin_mdm.mdm.order.elbo.leave_one_out_advantages`).
The policy never sees the reference answer: only ``x0``'s prompt is used. See docs/mdm-order-learning.md.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from merlin_mdm.mdm.order.elbo import leave_one_out_advantages
from merlin_mdm.mdm.order.features import order_inputs
from merlin_mdm.mdm.order.networks import OrderNet
from merlin_mdm.mdm.order.objectives import (
    DenoiserFn,
    ObjectiveBatch,
    OrderObjective,
    denoise_frozen,
    masked_start,
    register_objective,
)
from merlin_mdm.mdm.order.policies import BernoulliPolicy, RevealPolicy, make_reveal_policy
from merlin_mdm.mdm.samplers.base import fill_tokens

__all__ = ["RewardObjective", "RewardTrace", "reward_rollout"]


class RewardTrace(NamedTuple):
    """What a batch of policy rollouts produced.

    Attributes:
        tokens: (N, L) the generated sequences (prompt + answer, no mask left).
        log_prob: (N,) sum_t log p_theta(r_t) of the drawn reveal vectors (with gradients).
        nfe: (N,) denoiser calls spent per row.
        first_reveals: (N,) positions revealed at the first step.
    """

    tokens: Tensor
    log_prob: Tensor
    nfe: Tensor
    first_reveals: Tensor


def reward_rollout(
    denoiser: DenoiserFn,
    policy: OrderNet,
    prompts: Tensor,
    answer_len: int,
    mask_id: int,
    budget: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    rollouts: int = 1,
    kind: RevealPolicy | None = None,
) -> RewardTrace:
    """Generate answers for ``prompts`` with the policy's sampled reveals, recording their log-probability.

    Args:
        denoiser: the frozen denoiser.
        policy: p_theta.
        prompts: (N, P) prompt tokens; rows come in groups of ``rollouts`` identical copies.
        answer_len: A.
        mask_id: the mask token.
        budget: T, the most denoiser calls per row.
        generator: draws the reveal vectors and the tokens.
        temperature: token temperature of :func:`fill_tokens` (the evaluation's rule).
        rollouts: K; the first (identical) denoiser call is computed once per group.
        kind: how the policy draws reveal sets (:mod:`.policies`); None: the Bernoulli policy.

    Returns:
        The :class:`RewardTrace`.
    """
    kind = kind or BernoulliPolicy()
    n = prompts.shape[0]
    x, masked = masked_start(prompts, answer_len, mask_id)  # (N, L) each
    log_prob = torch.zeros(n)
    nfe = torch.zeros(n, dtype=torch.long)
    first = torch.zeros(n)
    for t in range(budget):
        active = masked.any(-1)  # (N,)
        if not bool(active.any()):
            break
        logits, hidden = denoise_frozen(denoiser, x, rollouts if t == 0 else 1)
        nfe += active.long()
        reveal = masked
        if t < budget - 1:
            draw = kind.sample(policy, order_inputs(x, masked, logits, hidden, t, budget), generator)
            reveal = draw.reveal
            log_prob = log_prob + torch.where(active, draw.log_prob, torch.zeros_like(log_prob))
        if t == 0:
            first = reveal.sum(-1).float()
        x = torch.where(reveal, fill_tokens(logits, temperature, generator), x)
        masked = masked & ~reveal
    return RewardTrace(tokens=x, log_prob=log_prob, nfe=nfe, first_reveals=first)


@register_objective
class RewardObjective(OrderObjective):
    """Maximise E[score(generated answer)] - nfe_penalty * E[NFE] by REINFORCE with a leave-one-out baseline."""

    name: ClassVar[str] = "reward"
    policy_kinds: ClassVar[tuple[str, ...] | None] = None  # any: it only samples and scores the policy

    def loss(self, batch: ObjectiveBatch) -> tuple[Tensor, dict[str, float]]:
        """Negative surrogate whose gradient is the REINFORCE estimate; logs score, NFE and return."""
        cfg, task = batch.config, batch.task
        trace = reward_rollout(batch.denoiser, batch.policy, batch.x0[:, : task.prompt_len], task.answer_len,
                               task.mask_id, batch.budget, batch.generator, cfg.token_temperature, cfg.rollouts,
                               make_reveal_policy(cfg.policy_kind))
        score = task.score(trace.tokens).float()  # (N,)
        ret = score - cfg.nfe_penalty * trace.nfe.float()
        adv = leave_one_out_advantages(ret.view(-1, cfg.rollouts)).reshape(-1)  # (N,)
        loss = -(adv * trace.log_prob).mean()
        return loss, {
            "score": score.mean().item(),
            "mean_nfe": trace.nfe.float().mean().item(),
            "return": ret.mean().item(),
            "first_step_reveals": trace.first_reveals.mean().item(),
        }
