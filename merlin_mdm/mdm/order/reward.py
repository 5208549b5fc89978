"""The ``reward`` objective: REINFORCE on the task's score of the generated answer, less a price per call.

A rollout generates an answer from the prompt alone, exactly as evaluation does: at each step the frozen
denoiser is called, the policy draws which masked positions to reveal (through its kind's ``sample``,
:mod:`.policies`: a conditioned Bernoulli vector, or a sequence of picks ending in "stop"; the last step of
the budget reveals everything) and the revealed positions are filled by the same token rule as every
sampler (:func:`merlin_mdm.mdm.samplers.base.fill_tokens` at ``token_temperature``; 1.0 samples from the
denoiser, 0 takes its argmax). A row whose draw reveals everything is finished and spends no further call.

With ``common_noise`` (common random numbers, :class:`GroupTokenNoise`) the token draws are coupled within a
prompt's group of K rollouts: one Gumbel noise tensor G (L, V) is drawn per group and every revealed position i
of every rollout of the group takes argmax(logits_i / temperature + G_i). Each row's tokens keep exactly the
distribution of independent sampling (each position is revealed once, and its G_i is unseen until then), but two
rollouts that reveal a position in the same state now draw the same token, so the return differences within a
group mostly come from the order choices the gradient credits, not from token luck. Given (prompt, G) the K
rollouts are still i.i.d., so the leave-one-out baseline keeps the estimate unbiased. Groups get independent G.
The return is

    R = task.score(answer) - nfe_penalty * NFE,

and the gradient estimate is (R - b) grad sum_t log p_theta(r_t), with b the mean return of the other K-1
rollouts of the same prompt (leave-one-out, as in :func:`merlin_mdm.mdm.order.elbo.leave_one_out_advantages`).
The policy never sees the reference answer: only ``x0``'s prompt is used. See docs/mdm-order-learning.md.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
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
from merlin_mdm.mdm.samplers.base import fill_tokens, gumbel_fill, gumbel_noise

__all__ = ["GroupTokenNoise", "RewardObjective", "RewardTrace", "reward_rollout", "token_rule"]


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
    common_noise: bool = False,
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
        common_noise: share one Gumbel noise tensor per group of ``rollouts`` rows (:class:`GroupTokenNoise`).

    Returns:
        The :class:`RewardTrace`.
    """
    kind = kind or BernoulliPolicy()
    draw_tokens = token_rule(temperature, generator, rollouts, common_noise)
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
        x = torch.where(reveal, draw_tokens(logits), x)
        masked = masked & ~reveal
    return RewardTrace(tokens=x, log_prob=log_prob, nfe=nfe, first_reveals=first)


class GroupTokenNoise:
    """Common random numbers for a rollout's token draws: one Gumbel noise tensor per group of K rows.

    Rows come in groups of ``rollouts`` identical prompts. The noise, (N, L, V) with the K rows of a group equal
    and groups independent, is drawn from ``generator`` on the first call (when V is known) and reused at every
    step: each position is revealed once per row, so each row's tokens are still exact draws at ``temperature``.
    """

    def __init__(self, temperature: float, generator: torch.Generator, rollouts: int) -> None:
        self.temperature = temperature
        self.generator = generator
        self.rollouts = rollouts
        self.noise: Tensor | None = None  # (N, L, V), drawn on the first call

    def __call__(self, logits: Tensor) -> Tensor:
        """The tokens (N, L) for (N, L, V) logits under the group's noise."""
        if self.noise is None:
            n, length, vocab = logits.shape
            groups = gumbel_noise((n // self.rollouts, length, vocab), self.generator)  # (N / K, L, V)
            self.noise = groups.repeat_interleave(self.rollouts, 0)
        return gumbel_fill(logits, self.temperature, self.noise)


def token_rule(temperature: float, generator: torch.Generator, rollouts: int,
               common_noise: bool) -> Callable[[Tensor], Tensor]:
    """How a rollout fills revealed positions: (N, L, V) logits -> (N, L) tokens.

    Independent draws per row and step (:func:`fill_tokens`, the evaluation's rule), or with ``common_noise`` one
    noise per group of ``rollouts`` rows (:class:`GroupTokenNoise`). Temperature 0 is argmax and draws no noise.
    """
    if common_noise and temperature > 0:
        return GroupTokenNoise(temperature, generator, rollouts)
    return partial(fill_tokens, temperature=temperature, generator=generator)


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
                               make_reveal_policy(cfg.policy_kind), cfg.common_token_noise)
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
