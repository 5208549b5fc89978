"""A reference order for the ``blocks`` task that reads the prompt: the ceiling a learned order should approach."""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.samplers.base import Sampler, StepState, register_sampler
from merlin_mdm.mdm.tasks.blocks import COUP_ID, IND_ID, LABEL0_ID

__all__ = ["BlocksOracleSampler", "blocks_layout"]


def blocks_layout(x: Tensor, prompt_len: int) -> tuple[Tensor, Tensor]:
    """(block of every answer position (B, A), coupled flag per block (B, NB)) read from ``blocks`` prompts.

    Fixed layout: the prompt is NB type tokens. Random layout: NB type tokens, then A block labels.

    Raises:
        MdmError: the prompt is neither.
    """
    answer = x.shape[1] - prompt_len
    nb = prompt_len - answer
    if nb >= 1 and bool((x[:, nb:prompt_len] >= LABEL0_ID).all()):
        return x[:, nb:prompt_len] - LABEL0_ID, x[:, :nb] == COUP_ID
    types = x[:, :prompt_len]
    if prompt_len == 0 or answer % prompt_len or not bool(((types == COUP_ID) | (types == IND_ID)).all()):
        raise MdmError("blocks_oracle needs the blocks task (a prompt of block types, and block labels if random)")
    ids = (torch.arange(answer) // (answer // prompt_len)).expand(x.shape[0], -1)
    return ids, x[:, :prompt_len] == COUP_ID


@register_sampler
class BlocksOracleSampler(Sampler):
    """``blocks`` only: first every independent digit and one digit of each coupled block, then everything else.

    Valid whenever the denoiser copies a revealed digit into the rest of its block, in 2 steps.
    """

    name = "blocks_oracle"

    def select(self, state: StepState) -> Tensor:
        """Step 0: independent blocks + the first position of each coupled block; later steps: the rest."""
        if state.step > 0:
            return state.masked
        p = state.prompt_len
        ids, coupled = blocks_layout(state.x, p)  # (B, A), (B, NB)
        in_coupled = coupled.gather(1, ids)  # (B, A)
        index = torch.arange(ids.shape[1]).expand_as(ids)
        first_of_block = torch.full_like(coupled, ids.shape[1], dtype=torch.long).scatter_reduce(
            1, ids, index, reduce="amin")  # (B, NB) first position of each block
        first = index == first_of_block.gather(1, ids)  # (B, A)
        answer = ~in_coupled | first
        return torch.cat([torch.zeros_like(state.masked[:, :p]), answer], dim=1) & state.masked
