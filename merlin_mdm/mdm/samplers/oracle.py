"""Reference orders that read the prompt (``blocks``, ``addition``): the ceilings a learned order should approach."""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.samplers.base import FixedBudgetSampler, Sampler, StepState, register_sampler
from merlin_mdm.mdm.tasks.addition import LSB_ID, MSB_ID
from merlin_mdm.mdm.tasks.blocks import coupled_blocks

__all__ = ["AdditionOracleSampler", "BlocksOracleSampler"]


@register_sampler
class BlocksOracleSampler(Sampler):
    """``blocks`` only: first every independent digit and one digit of each coupled block, then everything else.

    Valid whenever the denoiser copies a revealed digit into the rest of its block, in 2 steps.
    """

    name = "blocks_oracle"
    task = "blocks"  # the one task it knows the answer structure of (checked against the denoiser's task)

    def select(self, state: StepState) -> Tensor:
        """Step 0: independent blocks + the first position of each coupled block; later steps: the rest."""
        if state.step > 0:
            return state.masked
        p = state.prompt_len
        try:
            ids = coupled_blocks(state.x[:, :p], state.x.shape[1] - p)  # (B, A), -1 where independent
        except MdmError as exc:
            raise MdmError(f"blocks_oracle needs the blocks task: {exc}") from None
        index = torch.arange(ids.shape[1]).expand_as(ids)
        slot = ids.clamp_min(0)
        first_of_block = torch.full_like(ids, ids.shape[1]).scatter_reduce(
            1, slot, index.masked_fill(ids < 0, ids.shape[1]), reduce="amin")  # (B, A): first position of block b at b
        answer = (ids < 0) | (index == first_of_block.gather(1, slot))  # (B, A)
        return torch.cat([torch.zeros_like(state.masked[:, :p]), answer], dim=1) & state.masked


@register_sampler
class AdditionOracleSampler(FixedBudgetSampler):
    """``addition`` only: the units digit first, then up the columns, k per step (the direction read from the prompt).

    Follows the carries: when a step starts, every column below the ones it reveals is known.
    """

    name = "addition_oracle"
    task = "addition"

    def score(self, state: StepState) -> Tensor:
        """Answer position j scores -j where the answer is written units first, +j where it is written as read."""
        p = state.prompt_len
        flag = state.x[:, 0]
        if p < 1 or not bool(((flag == LSB_ID) | (flag == MSB_ID)).all()):
            raise MdmError("addition_oracle needs the addition task (a direction token opens every prompt)")
        j = torch.arange(state.x.shape[1] - p, dtype=torch.float32)
        answer = torch.where((flag == LSB_ID)[:, None], -j, j)  # (B, A)
        return torch.cat([torch.full((state.x.shape[0], p), float("-inf")), answer], dim=1)
