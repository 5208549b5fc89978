"""The denoiser: a small bidirectional (non-causal) pre-norm transformer over token ids.

It predicts the clean token at every position from a partially masked sequence. It takes no time input:
as in MDLM the number of masks carries that information. The mask token is never predicted
(its logit is -inf), so sampling can never emit it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from merlin_mdm.errors import MdmError

__all__ = ["Denoiser", "DenoiserConfig", "DenoiserOutput"]


@dataclass(frozen=True)
class DenoiserConfig:
    """Shape of a :class:`Denoiser`. Validated on construction (raises :class:`MdmError`)."""

    vocab_size: int  # number of token ids, the mask token included
    seq_len: int  # maximum sequence length L (prompt + answer); sizes the position table
    mask_id: int  # id of the mask token; its logit is always -inf
    d_model: int = 64  # width D of the residual stream
    n_layers: int = 2  # number of transformer blocks
    n_heads: int = 4  # attention heads; must divide d_model
    d_ff: int = 256  # hidden width of each block's MLP
    dropout: float = 0.0  # dropout on attention weights and residual branches during training
    prompt_aligned: bool = False  # the prompt describes the answer position by position: answer position i also
    # embeds prompt token i (needs prompt length == answer length, so the answer starts at L // 2)

    def __post_init__(self) -> None:
        for field in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "d_ff"):
            if getattr(self, field) < 1:
                raise MdmError(f"DenoiserConfig.{field} must be >= 1, got {getattr(self, field)}")
        if not 0 <= self.mask_id < self.vocab_size:
            raise MdmError(f"DenoiserConfig.mask_id {self.mask_id} is outside the vocabulary [0, {self.vocab_size})")
        if self.d_model % self.n_heads:
            raise MdmError(f"DenoiserConfig.n_heads {self.n_heads} must divide d_model {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            raise MdmError(f"DenoiserConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.prompt_aligned and self.seq_len % 2:
            raise MdmError(f"DenoiserConfig.prompt_aligned needs an even seq_len (prompt = answer), got {self.seq_len}")


class DenoiserOutput(NamedTuple):
    """What :meth:`Denoiser.forward` returns."""

    logits: Tensor  # (B, L, V), logits[..., mask_id] == -inf
    hidden: Tensor  # (B, L, D), final hidden state after the last norm


class SelfAttention(nn.Module):
    """Multi-head bidirectional self-attention."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape  # (B, L, D)
        q, k, v = self.qkv(h).split(d, dim=2)  # 3 x (B, L, D)
        q, k, v = (t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, L, Dh)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=False)  # (B, H, L, Dh)
        out: Tensor = self.proj(y.transpose(1, 2).reshape(b, n, d))  # (B, L, D)
        return out


class Block(nn.Module):
    """Pre-norm transformer block: attention then MLP, each with a residual connection."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.drop(self.attn(self.ln1(h)))  # (B, L, D)
        out: Tensor = h + self.drop(self.mlp(self.ln2(h)))  # (B, L, D)
        return out


class Denoiser(nn.Module):
    """Bidirectional transformer mapping a partially masked sequence to clean-token logits.

    Args:
        config: the model's shape.
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.seq_len, config.d_model)
        self.aligned = nn.Embedding(config.vocab_size, config.d_model) if config.prompt_aligned else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style scaling of residual projections
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def n_params(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: Tensor) -> DenoiserOutput:
        """Predict clean tokens.

        The network runs on the device of its weights; the outputs come back on the device of ``x``, so callers
        that keep their tensors on the CPU use a denoiser moved to a GPU unchanged (:mod:`merlin_mdm.mdm.devices`).

        Args:
            x: (B, L) long token ids, ``mask_id`` where masked; L <= config.seq_len.

        Returns:
            :class:`DenoiserOutput` with logits (B, L, V) and hidden (B, L, D).
        """
        home, device = x.device, self.head.weight.device
        if device == home:
            return self._forward(x)
        out = self._forward(x.to(device, non_blocking=True))
        return DenoiserOutput(logits=out.logits.to(home), hidden=out.hidden.to(home))

    def _forward(self, x: Tensor) -> DenoiserOutput:
        n = x.shape[1]
        if n > self.config.seq_len:
            raise MdmError(f"sequence length {n} exceeds the denoiser's seq_len {self.config.seq_len}")
        positions = torch.arange(n, device=x.device)  # (L,)
        h = self.tok(x) + self.pos(positions)[None]  # (B, L, D)
        if self.aligned is not None:  # answer position i also sees prompt token i, the description of its slot
            if n % 2:
                raise MdmError(f"a prompt-aligned denoiser needs prompt length == answer length, got length {n}")
            half = n // 2
            h = torch.cat([h[:, :half], h[:, half:] + self.aligned(x[:, :half])], dim=1)  # (B, L, D)
        for block in self.blocks:
            h = block(h)  # (B, L, D)
        hidden = self.ln_f(h)  # (B, L, D)
        logits = self.head(hidden)  # (B, L, V)
        logits[..., self.config.mask_id] = float("-inf")
        return DenoiserOutput(logits=logits, hidden=hidden)
