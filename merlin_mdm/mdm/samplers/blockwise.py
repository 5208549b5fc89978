"""Semi-autoregressive generation (LLaDA) for any sampler: the knob ``blocks=N`` of :func:`make_sampler`.

The answer is cut into N contiguous blocks of near-equal length and the budget T into N near-equal step
ranges (T=8, N=3 gives 3, 3, 2 steps). The wrapped sampler only sees the masks of each row's leftmost
unfinished block and, as ``step``/``budget``, the position within the current block's step range, so a
fixed-budget sampler spreads each block evenly over its steps. For non-adaptive samplers the wrapper reveals
the whole current block at its last step; adaptive samplers simply move on when a block is done.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.samplers.base import Sampler, StepState

__all__ = ["BlockwiseSampler", "even_split"]


def even_split(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` integers differing by at most one, larger ones first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class BlockwiseSampler(Sampler):
    """Restrict ``inner`` to the leftmost unfinished answer block.

    Args:
        inner: the sampler to wrap.
        blocks: number of answer blocks N >= 1.
    """

    name = "blockwise"

    def __init__(self, inner: Sampler, blocks: int) -> None:
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise MdmError(f"knob blocks expects an integer >= 1 (answer blocks, left to right), got {blocks!r}")
        self.inner = inner
        self.blocks = int(blocks)

    @property
    def is_adaptive(self) -> bool:
        """Whether the wrapped sampler is adaptive."""
        return self.inner.adaptive

    def to(self, device: torch.device) -> None:
        """Run the inner sampler's networks on ``device``."""
        self.inner.to(device)

    def knobs(self) -> dict[str, Any]:
        """The inner sampler's knobs plus ``blocks``."""
        return {**self.inner.knobs(), "blocks": self.blocks}

    def _block_ids(self, length: int, prompt_len: int) -> Tensor:
        """(L,) block index of every position, -1 in the prompt."""
        sizes = even_split(length - prompt_len, self.blocks)
        ids = torch.repeat_interleave(torch.arange(self.blocks), torch.tensor(sizes))
        return torch.cat([torch.full((prompt_len,), -1), ids])

    def _schedule(self, step: int, budget: int) -> tuple[int, int]:
        """(local step, local budget) of the block scheduled at global ``step``."""
        if budget < self.blocks and not self.inner.adaptive:
            raise MdmError(f"a budget of {budget} steps cannot cover {self.blocks} blocks; use budget >= blocks")
        start = 0
        for size in even_split(max(budget, self.blocks), self.blocks):
            if step < start + size:
                return step - start, size
            start += size
        return 0, 1

    def select(self, state: StepState) -> Tensor:
        """The inner sampler's choice within each row's current block."""
        ids = self._block_ids(state.masked.shape[1], state.prompt_len)  # (L,)
        current = torch.where(state.masked, ids, self.blocks).min(-1).values  # (B,)
        in_block = state.masked & (ids[None] == current[:, None])  # (B, L)
        local_step, local_budget = self._schedule(state.step, state.budget)
        inner_state = dataclasses.replace(state, masked=in_block, step=local_step, budget=local_budget)
        reveal = self.inner.select(inner_state) & in_block
        if not self.inner.adaptive and local_step == local_budget - 1:
            reveal = in_block
        return reveal
