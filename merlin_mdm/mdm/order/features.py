"""Per-position features the order networks read, computed identically at training and sampling time.

The policy and the posterior see, for every position of the sequence (prompt included, so attention can read
the prompt's tokens): the current token, the position, the frozen denoiser's final hidden state, and a few
scalars: whether the position is masked, the denoiser's confidence, margin and normalised entropy there, the
step as a fraction of the budget, the reciprocal of the steps left, and the fraction of the sequence still
masked. Scalars of unmasked positions are zero, because the denoiser's prediction there is meaningless.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CONFIDENCE_COLUMN", "ENTROPY_COLUMN", "N_SCALARS", "OrderInputs", "confidence_features", "order_inputs",
           "true_token_feature"]

N_SCALARS = 7  # masked, confidence, margin, entropy, step/T, 1/(T-step), fraction masked
CONFIDENCE_COLUMN = 1  # the scalar holding the denoiser's top-1 probability (0 at unmasked positions)
ENTROPY_COLUMN = 3  # the scalar holding the entropy divided by log V (0 at unmasked positions)
_LOGP_FLOOR = -20.0  # log-probabilities below this carry no extra information for the posterior


class OrderInputs(NamedTuple):
    """What an order network is given at one step.

    Attributes:
        tokens: (B, L) long, the current tokens (mask id where masked).
        hidden: (B, L, D) float, the denoiser's final hidden state (no gradient).
        scalars: (B, L, N_SCALARS) float, see the module docstring.
        masked: (B, L) bool, the positions still to reveal.
    """

    tokens: Tensor
    hidden: Tensor
    scalars: Tensor
    masked: Tensor


def confidence_features(logits: Tensor) -> Tensor:
    """Confidence (top-1 probability), margin (top-1 minus top-2) and entropy / log V per position.

    Args:
        logits: (B, L, V) denoiser logits; ``-inf`` entries (the mask token) are allowed.

    Returns:
        (B, L, 3) float tensor.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, L, V)
    probs = log_probs.exp()
    top2 = probs.topk(2, dim=-1).values  # (B, L, 2)
    entropy = -(probs * log_probs.clamp_min(-1e4)).sum(-1) / math.log(logits.shape[-1])  # (B, L)
    return torch.stack([top2[..., 0], top2[..., 0] - top2[..., 1], entropy], dim=-1)


def order_inputs(x: Tensor, masked: Tensor, logits: Tensor, hidden: Tensor, step: int, budget: int) -> OrderInputs:
    """Assemble the inputs of the policy (and, with :func:`true_token_feature`, of the posterior).

    Args:
        x: (B, L) current tokens.
        masked: (B, L) bool, positions still masked.
        logits: (B, L, V) the denoiser's logits for ``x``.
        hidden: (B, L, D) the denoiser's final hidden state for ``x``.
        step: 0-based step index.
        budget: the number of steps T (the last step, T-1, reveals everything left).

    Returns:
        The :class:`OrderInputs`; nothing in it requires a gradient.
    """
    maskf = masked.float()  # (B, L)
    conf = confidence_features(logits) * maskf[..., None]  # (B, L, 3)
    batch, length = masked.shape
    n_masked = maskf.sum(-1, keepdim=True)  # (B, 1)
    step_feats = torch.tensor([step / budget, 1.0 / max(budget - step, 1)], dtype=torch.float32)
    scalars = torch.cat(
        [
            maskf[..., None],
            conf,
            step_feats.to(x.device).expand(batch, length, 2),
            (n_masked / length).expand(batch, length)[..., None],
        ],
        dim=-1,
    )  # (B, L, N_SCALARS)
    return OrderInputs(tokens=x, hidden=hidden.detach().float(), scalars=scalars.detach(), masked=masked)


def true_token_feature(log_p_x0: Tensor, masked: Tensor) -> Tensor:
    """The posterior's extra input: log p_denoiser(x0_i | x_t), floored, scaled, zero where unmasked.

    Args:
        log_p_x0: (B, L) log-probability the denoiser gives the clean token.
        masked: (B, L) bool.

    Returns:
        (B, L, 1) float tensor.
    """
    feat = log_p_x0.float().clamp_min(_LOGP_FLOOR) / 5.0
    return torch.where(masked, feat, torch.zeros_like(feat))[..., None].detach()
