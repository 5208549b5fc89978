"""The two small order networks: the policy p_theta(r | x_t) and the posterior q_phi(r | x_t, x_0).

Both are the same shape: embed every position's features (token, position, projected denoiser hidden state,
scalars), mix positions with a small pre-norm transformer encoder, and read one number per position. The policy
reads a Bernoulli logit; the posterior reads a score s_i that :mod:`.bernoulli` turns into
q_i = exp((s_i - max_j s_j) / tau). The posterior's only extra input is log p_denoiser(x0_i | x_t).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.order.features import N_SCALARS, OrderInputs

__all__ = ["OrderNet", "OrderNetConfig"]


@dataclass(frozen=True)
class OrderNetConfig:
    """Shape of an order network; stored next to its weights."""

    vocab_size: int  # the denoiser's vocabulary, mask token included
    seq_len: int  # L, prompt plus answer
    hidden_dim: int  # D, width of the denoiser's final hidden state
    d_model: int = 32  # width of the order network
    n_layers: int = 1  # transformer encoder layers mixing positions
    n_heads: int = 2  # attention heads per layer
    extra_dim: int = 0  # extra per-position inputs: 0 for the policy, 1 for the posterior (log p(x0_i))
    init_scale: float = 0.05  # std of the output layer's weights: small, so first decisions are nearly uniform
    stop_head: bool = False  # also read one "stop" logit per sequence (the sequential policy's stop decision)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "hidden_dim", "d_model", "n_heads"):
            if getattr(self, name) < 1:
                raise MdmError(f"order network: {name} must be >= 1, got {getattr(self, name)}")
        if self.n_layers < 0 or self.extra_dim < 0:
            raise MdmError("order network: n_layers and extra_dim must be >= 0")
        if self.d_model % self.n_heads:
            raise MdmError(f"order network: d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return asdict(self)


class OrderNet(nn.Module):
    """Per-position logits (policy) or scores (posterior) from :class:`OrderInputs`."""

    def __init__(self, config: OrderNetConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.tok = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(config.seq_len, d)
        self.hid = nn.Linear(config.hidden_dim, d)
        self.sca = nn.Linear(N_SCALARS + config.extra_dim, d)
        layer = nn.TransformerEncoderLayer(
            d, config.n_heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True, norm_first=True
        )
        self.mix = (
            nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False) if config.n_layers else None
        )
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, 1)
        nn.init.normal_(self.out.weight, std=config.init_scale)
        nn.init.zeros_(self.out.bias)
        self.stop = nn.Linear(d, 1) if config.stop_head else None
        if self.stop is not None:
            nn.init.normal_(self.stop.weight, std=config.init_scale)
            nn.init.zeros_(self.stop.bias)

    def forward(self, inputs: OrderInputs, extra: Tensor | None = None) -> Tensor:
        """One number per position.

        Args:
            inputs: the step's features.
            extra: (B, L, extra_dim) extra inputs (the posterior's log p(x0_i), the sequential policy's "already
                chosen" flag), or None when ``extra_dim`` is 0.

        Returns:
            (B, L) float; values at unmasked positions are meaningless.
        """
        return self.scores(inputs, extra)[0]

    def scores(self, inputs: OrderInputs, extra: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Per-position numbers and, with ``stop_head``, the stop logit.

        Returns:
            ((B, L) float, (B,) float stop logit or None): the stop logit reads the mean of the positions' final
            representations, so it can count what is still needed anywhere in the sequence.
        """
        scalars = inputs.scalars if extra is None else torch.cat([inputs.scalars, extra], dim=-1)
        if scalars.shape[-1] != N_SCALARS + self.config.extra_dim:
            raise MdmError(
                f"order network expects {self.config.extra_dim} extra inputs, got {scalars.shape[-1] - N_SCALARS}"
            )
        positions = torch.arange(inputs.tokens.shape[1], device=inputs.tokens.device)
        h = self.tok(inputs.tokens) + self.pos(positions) + self.hid(inputs.hidden) + self.sca(scalars)  # (B, L, d)
        if self.mix is not None:
            h = self.mix(h)
        h = self.norm(h)
        out: Tensor = self.out(h).squeeze(-1)  # (B, L)
        stop = None if self.stop is None else self.stop(h.mean(1)).squeeze(-1)  # (B,)
        return out, stop
