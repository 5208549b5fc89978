"""The sampler interface, its registry and the generation loop.

A sampler decides *which* masked positions to reveal at each step; the loop (:func:`generate`) calls the
denoiser once per step, asks the sampler, enforces the invariants (at least one reveal per unfinished row,
everything revealed at the last step of the budget) and fills revealed positions by sampling the denoiser.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.registry import build, knob_names

__all__ = [
    "SAMPLERS",
    "FixedBudgetSampler",
    "GenerationResult",
    "Sampler",
    "StepState",
    "at_least_one",
    "fill_tokens",
    "generate",
    "gumbel_fill",
    "gumbel_noise",
    "make_sampler",
    "register_sampler",
    "reveal_counts",
    "select_top_k",
]


@dataclass
class StepState:
    """What a sampler sees at one step (rows are the still-unfinished sequences of the batch).

    Attributes:
        x: (B, L) current tokens, ``mask_id`` where masked.
        masked: (B, L) bool, True where still masked (never True in the prompt).
        logits: (B, L, V) denoiser logits for x (``-inf`` at the mask id).
        hidden: (B, L, D) denoiser final hidden state.
        step: 0-based step index.
        budget: the step budget T (the last step is T-1).
        generator: the RNG a stochastic sampler must draw from.
        prompt_len: number of prompt tokens at the start of each row (0 when unknown).
        rows: (B,) long, the indices of these rows in the batch given to :func:`generate` (None when unknown).
    """

    x: Tensor
    masked: Tensor
    logits: Tensor
    hidden: Tensor
    step: int
    budget: int
    generator: torch.Generator
    prompt_len: int = 0
    rows: Tensor | None = None


class Sampler(ABC):
    """An unmasking strategy: which masked positions to reveal this step.

    Subclasses take their knobs as keyword arguments of ``__init__`` and keep each under the same attribute
    name (that is what :meth:`knobs` reads back). ``adaptive`` samplers treat the budget as a maximum.
    """

    name: ClassVar[str]
    adaptive: ClassVar[bool] = False

    def knobs(self) -> dict[str, Any]:
        """Return the sampler's knobs as a JSON-able dict."""
        return {k: getattr(self, k) for k in knob_names(type(self))}

    @abstractmethod
    def select(self, state: StepState) -> Tensor:
        """Return a (B, L) bool subset of ``state.masked``: the positions to reveal now."""

    def to(self, device: torch.device) -> None:
        """Run any network the sampler holds on ``device`` (it still takes and returns CPU tensors); the
        heuristics hold none."""
        return None


SAMPLERS: dict[str, type[Sampler]] = {}

_S = TypeVar("_S", bound=type[Sampler])


def register_sampler(cls: _S) -> _S:
    """Class decorator adding ``cls`` to :data:`SAMPLERS` under ``cls.name``."""
    SAMPLERS[cls.name] = cls
    return cls


def make_sampler(name: str, **knobs: Any) -> Sampler:
    """Build a registered sampler from its knobs.

    Every sampler also accepts ``blocks=N`` (N >= 1): semi-autoregressive generation in N answer blocks, left to
    right (LLaDA); see :class:`merlin_mdm.mdm.samplers.blockwise.BlockwiseSampler`.

    Args:
        name: registered sampler name.
        **knobs: the sampler's keyword knobs.

    Returns:
        The sampler (wrapped when ``blocks`` > 1).

    Raises:
        MdmError: unknown name or knob, or an invalid knob value.
    """
    blocks = knobs.pop("blocks", 1)
    sampler = build("sampler", SAMPLERS, name, knobs)
    if blocks == 1:
        return sampler
    from merlin_mdm.mdm.samplers.blockwise import BlockwiseSampler  # deferred: blockwise imports this module

    return BlockwiseSampler(sampler, blocks=blocks)


def reveal_counts(state: StepState) -> Tensor:
    """How many tokens a fixed-budget sampler reveals per row: the remaining masks split evenly over the steps left.

    ``ceil(masked / (budget - step))`` splits an answer of A tokens over T steps as evenly as possible (A=16, T=3
    gives 6, 5, 5), reveals everything at the last step and at least one token while any mask remains.

    Returns:
        (B,) long.
    """
    left = max(state.budget - state.step, 1)
    n_masked = state.masked.sum(-1)  # (B,)
    return torch.div(n_masked + left - 1, left, rounding_mode="floor").clamp(min=1)


def select_top_k(scores: Tensor, masked: Tensor, k: Tensor) -> Tensor:
    """Pick, per row, the ``k`` masked positions with the highest score (ties go to the leftmost position).

    Args:
        scores: (B, L) float.
        masked: (B, L) bool.
        k: (B,) long.

    Returns:
        (B, L) bool, a subset of ``masked``.
    """
    scores = scores.masked_fill(~masked, float("-inf"))  # (B, L)
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, L)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order))  # (B, L)
    return (ranks < k[:, None]) & masked


class FixedBudgetSampler(Sampler):
    """A sampler revealing :func:`reveal_counts` tokens per step, the ones with the highest :meth:`score`."""

    @abstractmethod
    def score(self, state: StepState) -> Tensor:
        """Return (B, L) float priorities; higher is revealed earlier."""

    def select(self, state: StepState) -> Tensor:
        """Reveal the top-``k`` masked positions by score."""
        return select_top_k(self.score(state), state.masked, reveal_counts(state))


class GenerationResult(NamedTuple):
    """What :func:`generate` returns."""

    tokens: Tensor  # (B, L) long, prompt + generated answer, no mask left
    nfe: Tensor  # (B,) long, denoiser calls spent on each row
    reveal_step: Tensor  # (B, L) long, the 0-based step that revealed each position (-1 in the prompt)


class _Model(Protocol):
    def __call__(self, x: Tensor) -> Any: ...


def fill_tokens(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """Sample a token per position from softmax(logits / temperature) (Gumbel-max); 0 means argmax. (B, L)."""
    if temperature == 0:
        return logits.argmax(-1)
    return gumbel_fill(logits, temperature, gumbel_noise(logits.shape, generator))


def gumbel_noise(shape: tuple[int, ...] | torch.Size, generator: torch.Generator) -> Tensor:
    """Standard Gumbel noise -log(-log U) of ``shape``, U uniform on (0, 1] (clamped away from 0)."""
    u = torch.rand(shape, generator=generator).clamp_(1e-20, 1.0)
    return -torch.log(-torch.log(u))


def gumbel_fill(logits: Tensor, temperature: float, noise: Tensor) -> Tensor:
    """argmax(logits / temperature + noise) per position: (B, L) from (B, L, V) logits and Gumbel noise.

    With fresh standard Gumbel ``noise`` this is a draw from softmax(logits / temperature) (Gumbel-max); passing
    the same noise to several rows couples their draws (common random numbers). Temperature 0: argmax(logits).
    """
    if temperature == 0:
        return logits.argmax(-1)
    return (logits / temperature + noise).argmax(-1)


def at_least_one(reveal: Tensor, masked: Tensor, logits: Tensor) -> Tensor:
    """Add the most confident masked position to rows where the sampler chose nothing. (B, L) bool."""
    empty = ~(reveal.any(-1))  # (B,)
    if not empty.any():
        return reveal
    conf = logits.max(-1).values.masked_fill(~masked, float("-inf"))  # (B, L)
    best = torch.zeros_like(masked).scatter_(-1, conf.argmax(-1, keepdim=True), True)  # (B, L)
    return reveal | (best & empty[:, None])


@torch.no_grad()
def generate(
    model: _Model,
    prompts: Tensor,
    answer_len: int,
    sampler: Sampler,
    budget: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    mask_id: int | None = None,
) -> GenerationResult:
    """Generate answers for ``prompts`` in at most ``budget`` denoiser calls per row.

    Args:
        model: the denoiser (returns an object with ``logits`` (B, L, V) and ``hidden`` (B, L, D)).
        prompts: (B, P) long prompt tokens.
        answer_len: number of answer tokens A to generate.
        sampler: the unmasking strategy.
        budget: the step budget T >= 1 (a maximum for adaptive samplers).
        generator: RNG for the sampler and the token draws.
        temperature: softmax temperature for the token draws; 0 is greedy.
        mask_id: the mask id; defaults to ``model.config.mask_id``.

    Returns:
        :class:`GenerationResult` with tokens (B, P + A), nfe (B,) and reveal_step (B, P + A).

    Raises:
        MdmError: budget < 1 or a negative temperature.
    """
    if budget < 1 or temperature < 0:
        raise MdmError(f"generate needs budget >= 1 and temperature >= 0, got {budget} and {temperature}")
    mask = int(model.config.mask_id if mask_id is None else mask_id)  # type: ignore[attr-defined]
    b, p = prompts.shape
    x = torch.cat([prompts, torch.full((b, answer_len), mask, dtype=torch.long)], dim=1)  # (B, L)
    masked = x == mask  # (B, L)
    masked[:, :p] = False
    nfe = torch.zeros(b, dtype=torch.long)
    reveal_step = torch.full((b, p + answer_len), -1, dtype=torch.long)
    for step in range(budget):
        rows = masked.any(-1).nonzero().squeeze(-1)  # (R,) unfinished rows
        if rows.numel() == 0:
            break
        out = model(x[rows])
        nfe[rows] += 1
        state = StepState(x[rows], masked[rows], out.logits, out.hidden, step, budget, generator, p, rows)
        reveal = at_least_one(sampler.select(state) & state.masked, state.masked, out.logits)  # (R, L)
        if step == budget - 1:
            reveal = state.masked
        tokens = fill_tokens(out.logits, temperature, generator)  # (R, L)
        x[rows] = torch.where(reveal, tokens, state.x)
        masked[rows] = state.masked & ~reveal
        reveal_step[rows] = torch.where(reveal, step, reveal_step[rows])
    return GenerationResult(tokens=x, nfe=nfe, reveal_step=reveal_step)
