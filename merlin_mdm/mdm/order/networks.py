"""The two small order networks: the policy p_theta(r | x_t) and the posterior q_phi(r | x_t, x_0).

Both are the same shape: embed every position's features (token, position, projected denoiser hidden state,
scalars), mix positions with a small pre-norm transformer encoder, and read one number per position. The policy
reads a Bernoulli logit; the posterior reads a score s_i that :mod:`.bernoulli` turns into
q_i = exp((s_i - max_j s_j) / tau). The posterior's only extra input is log p_denoiser(x0_i | x_t).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.order.features import N_SCALARS, OrderInputs
from merlin_mdm.mdm.order.priors import OrderPrior, make_order_prior

__all__ = ["LateHead", "OrderNet", "OrderNetConfig", "StepEncoding", "relative_hidden"]


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
    pair_dim: int = 0  # width of the interaction of a position with the positions already chosen (0: none)
    relative_hidden: bool = False  # also read the hidden state relative to the other masked positions' (scaled)
    chosen_late: bool = False  # "already chosen" enters after the transformer (one pass per step, see pick_scores)
    prior: str = ""  # a registered heuristic prior the picks add to the network's logits (.priors; "": none)
    prior_knobs: tuple[tuple[str, float], ...] = ()  # the prior's knobs, e.g. (("tau", 0.9),)
    prior_scale: float = 1.0  # the prior's logits are multiplied by this (how sharp sampled picks are)
    prior_stop_scale: float | None = None  # the prior's stop margin is multiplied by this (None: prior_scale)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "hidden_dim", "d_model", "n_heads"):
            if getattr(self, name) < 1:
                raise MdmError(f"order network: {name} must be >= 1, got {getattr(self, name)}")
        if self.n_layers < 0 or self.extra_dim < 0 or self.pair_dim < 0:
            raise MdmError("order network: n_layers, extra_dim and pair_dim must be >= 0")
        if self.d_model % self.n_heads:
            raise MdmError(f"order network: d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.chosen_late and not (self.stop_head and self.pair_dim > 0 and self.extra_dim == 0):
            raise MdmError("order network: chosen_late needs stop_head, pair_dim > 0 and no extra input (the chosen "
                           "flags reach it through the pairwise term and the stop head only)")
        object.__setattr__(self, "prior_knobs", tuple((str(k), float(v)) for k, v in self.prior_knobs))
        if self.prior:
            if not self.stop_head:
                raise MdmError("order network: a prior needs a stop head (a sequential policy kind)")
            if not self.prior_scale > 0 or not self.stop_scale > 0:
                raise MdmError(f"order network: prior_scale and prior_stop_scale must be > 0, got "
                               f"{self.prior_scale}, {self.prior_stop_scale}")
            make_order_prior(self.prior, dict(self.prior_knobs))  # unknown prior or knob: raises, listing them

    @property
    def stop_scale(self) -> float:
        """What the prior's stop margin is multiplied by: ``prior_stop_scale``, or ``prior_scale``."""
        return self.prior_scale if self.prior_stop_scale is None else self.prior_stop_scale

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return asdict(self)


def relative_hidden(hidden: Tensor, masked: Tensor) -> Tensor:
    """The denoiser's hidden state of each masked position relative to the masked positions' mean, scaled to unit
    root-mean-square per sequence; zero at unmasked positions.

    Why: in a trained denoiser the hidden states of the masked positions share one large component (on the
    random-layout blocks denoiser, norm 9.9) and differ by a small one (norm 0.04) that carries what tells them
    apart (there: each position's block, linearly readable without error). Read raw, that difference is
    about 0.4% of the input, and the order network has to grow its weights a hundredfold before it can compare
    positions; relative and rescaled, it is of order one from the start.

    Args:
        hidden: (B, L, D) the denoiser's final hidden state.
        masked: (B, L) bool.

    Returns:
        (B, L, D) float.
    """
    weight = masked.float()[..., None]  # (B, L, 1)
    count = weight.sum(1, keepdim=True).clamp_min(1.0)
    centred = (hidden - (hidden * weight).sum(1, keepdim=True) / count) * weight  # (B, L, D)
    rms = (centred.pow(2).sum((1, 2), keepdim=True) / (count * hidden.shape[-1])).sqrt()  # (B, 1, 1)
    return centred / (rms + 1e-6)


class LateHead(NamedTuple):
    """A step's head readings that do not depend on the chosen flags (``chosen_late``), on the network's device.

    Attributes:
        logits: (n, L) each position's number before the pairwise term.
        affinity: (n, L, L) the pairwise term u_i . v_j / sqrt(pair_dim) of position i with a chosen position j.
        stop: (n,) the stop logit with nothing chosen.
        stop_each: (n, L) what choosing position j adds to the stop logit, times L.
    """

    logits: Tensor
    affinity: Tensor
    stop: Tensor
    stop_each: Tensor


class StepEncoding(NamedTuple):
    """What the picks of one step share (:meth:`OrderNet.encode`).

    Attributes:
        masked: (n, L) bool, the positions still to reveal, on the inputs' device.
        inputs: the step's features when every pick re-runs the network; None with ``late``.
        late: the step's head readings when the network reads "already chosen" late (``chosen_late``), else None.
        prior_keys: (n, L) the prior's per-position keys (:mod:`.priors`), on the inputs' device; None without one.
    """

    masked: Tensor
    inputs: OrderInputs | None
    late: LateHead | None
    prior_keys: Tensor | None = None

    def select(self, rows: Tensor) -> StepEncoding:
        """The encoding of the rows ``rows`` (a long index on the inputs' device, increasing, as ``nonzero`` gives)."""
        if rows.numel() == self.masked.shape[0]:  # every row: no copy (the (n, L, L) affinity is the large part)
            return self
        inputs = None if self.inputs is None else OrderInputs(*(field[rows] for field in self.inputs))
        late = None
        if self.late is not None:
            index = rows.to(self.late.logits.device)
            late = LateHead(*(part[index] for part in self.late))
        keys = None if self.prior_keys is None else self.prior_keys[rows]
        return StepEncoding(self.masked[rows], inputs, late, keys)


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
        self.pair = nn.Linear(d, 2 * config.pair_dim) if config.pair_dim else None
        self.rel = nn.Linear(config.hidden_dim, d) if config.relative_hidden else None
        self.stop_chosen = nn.Linear(d, 1, bias=False) if config.chosen_late else None
        if self.stop_chosen is not None:
            nn.init.normal_(self.stop_chosen.weight, std=config.init_scale)
        if self.pair is not None and config.init_scale == 0:  # v = 0: the pairwise term starts at exactly zero
            nn.init.zeros_(self.pair.weight[config.pair_dim:])
            nn.init.zeros_(self.pair.bias[config.pair_dim:])
        self.prior_rule: OrderPrior | None = (
            make_order_prior(config.prior, dict(config.prior_knobs)) if config.prior else None
        )

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

    def scores(
        self, inputs: OrderInputs, extra: Tensor | None = None, chosen: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Per-position numbers and, with ``stop_head``, the stop logit.

        Args:
            inputs: the step's features.
            extra: (B, L, extra_dim) extra inputs, or None when ``extra_dim`` is 0.
            chosen: (B, L) bool, positions already chosen at this step; with ``pair_dim`` each position's number
                gets sum_{j chosen} u_i . v_j / sqrt(pair_dim), a direct comparison with what was chosen (so
                "a position like mine is already chosen" needs no attention to find it among all positions).

        Returns:
            ((B, L) float, (B,) float stop logit or None): the stop logit reads the mean of the positions' final
            representations, so it can count what is still needed anywhere in the sequence. The network runs on
            its weights' device and the outputs come back on the device of ``inputs`` (as the denoiser's do:
            :mod:`merlin_mdm.mdm.devices`), so sampling and training loops keep their tensors on the CPU.
        """
        if self.config.chosen_late and chosen is not None:
            raise MdmError("order network: with chosen_late the chosen flags go through encode and pick_scores")
        home, device = inputs.tokens.device, self.out.weight.device
        if device == home:
            return self._scores(inputs, extra, chosen)
        moved = OrderInputs(*(part.to(device, non_blocking=True) for part in inputs))
        out, stop = self._scores(moved, None if extra is None else extra.to(device),
                                 None if chosen is None else chosen.to(device))
        return out.to(home), None if stop is None else stop.to(home)

    def _scores(
        self, inputs: OrderInputs, extra: Tensor | None, chosen: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        return self._head(self._mixed(inputs, extra), chosen)

    def _mixed(self, inputs: OrderInputs, extra: Tensor | None) -> Tensor:
        """(B, L, d): embed every position's features, mix positions, normalise."""
        scalars = inputs.scalars if extra is None else torch.cat([inputs.scalars, extra], dim=-1)
        if scalars.shape[-1] != N_SCALARS + self.config.extra_dim:
            raise MdmError(
                f"order network expects {self.config.extra_dim} extra inputs, got {scalars.shape[-1] - N_SCALARS}"
            )
        positions = torch.arange(inputs.tokens.shape[1], device=inputs.tokens.device)
        h = self.tok(inputs.tokens) + self.pos(positions) + self.hid(inputs.hidden) + self.sca(scalars)  # (B, L, d)
        if self.rel is not None:
            h = h + self.rel(relative_hidden(inputs.hidden, inputs.masked))
        if self.mix is not None:
            h = self.mix(h)
        mixed: Tensor = self.norm(h)
        return mixed

    def _head(self, h: Tensor, chosen: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Per-position numbers and the stop logit from the mixed state ``h`` (B, L, d) and the chosen flags."""
        out: Tensor = self.out(h).squeeze(-1)  # (B, L)
        if self.pair is not None and chosen is not None:
            u, v = self.pair(h).chunk(2, dim=-1)  # (B, L, pair_dim) each
            affinity = u @ v.transpose(1, 2) / self.config.pair_dim**0.5  # (B, L, L)
            out = out + (affinity * chosen[:, None, :].float()).sum(-1)
        stop = None if self.stop is None else self.stop(h.mean(1)).squeeze(-1)  # (B,)
        return out, stop

    def encode(self, inputs: OrderInputs) -> StepEncoding:
        """Prepare a step's picks: with ``chosen_late`` run the transformer and the flag-free head readings once
        here (:class:`LateHead`), else keep the inputs.

        Returns:
            The :class:`StepEncoding` that :meth:`pick_scores` reads, one pick at a time.
        """
        keys = None if self.prior_rule is None else self.prior_rule.keys(inputs.scalars, self.config.vocab_size)
        if not self.config.chosen_late:
            return StepEncoding(inputs.masked, inputs, None, keys)
        assert self.pair is not None and self.stop is not None and self.stop_chosen is not None  # the config's rule
        device = self.out.weight.device
        moved = inputs if inputs.tokens.device == device else OrderInputs(*(part.to(device) for part in inputs))
        h = self._mixed(moved, None)  # (n, L, d)
        u, v = self.pair(h).chunk(2, dim=-1)  # (n, L, pair_dim) each
        late = LateHead(logits=self.out(h).squeeze(-1), affinity=u @ v.transpose(1, 2) / self.config.pair_dim**0.5,
                        stop=self.stop(h.mean(1)).squeeze(-1), stop_each=self.stop_chosen(h).squeeze(-1))
        return StepEncoding(inputs.masked, None, late, keys)

    def pick_scores(self, encoding: StepEncoding, chosen: Tensor) -> tuple[Tensor, Tensor | None]:
        """:meth:`scores` for one pick of a step, given the positions already ``chosen`` (n, L) bool.

        Without ``chosen_late`` the flags are an input (the network's last extra input, and the pairwise term),
        so every pick re-runs the whole network. With it the transformer and the head ran once in :meth:`encode`,
        and a pick only adds what the chosen positions contribute: each position's pairwise term with them, and
        to the stop logit a learned reading of their mixed states (their mean over the L positions). A pick then
        costs a product with the (n, L, L) affinity instead of a network pass (about ten picks per step on
        arith), at the price of attention never seeing the flags.
        """
        if encoding.late is None:
            assert encoding.inputs is not None  # encode keeps them when the flags are an input
            out, stop = self.scores(encoding.inputs, chosen.float()[..., None], chosen)
        else:
            late, home = encoding.late, chosen.device
            flags = chosen.to(late.logits.device).float()  # (n, L)
            out = (late.logits + (late.affinity @ flags[..., None]).squeeze(-1)).to(home)
            stop = (late.stop + (late.stop_each * flags).sum(-1) / flags.shape[-1]).to(home)
        return self._with_prior(encoding, chosen, out, stop)

    def _with_prior(self, encoding: StepEncoding, chosen: Tensor, out: Tensor,
                    stop: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Add the heuristic prior's logits, if the network has one (:mod:`.priors`): ``scale * key_i`` to each
        position's, ``logsumexp_j(scale * key_j) + stop_scale * margin`` over the available ``j`` to the stop logit."""
        if self.prior_rule is None or encoding.prior_keys is None or stop is None:
            return out, stop
        available = encoding.masked & ~chosen  # (n, L)
        scaled = self.config.prior_scale * encoding.prior_keys  # (n, L)
        norm = torch.logsumexp(scaled.masked_fill(~available, float("-inf")), -1)  # (n,)
        norm = torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))  # nothing left: the step has ended
        margin = self.prior_rule.margin(encoding.prior_keys, available, chosen)
        return out + scaled, stop + norm + self.config.stop_scale * margin
