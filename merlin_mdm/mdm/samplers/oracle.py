"""A reference order for the ``blocks`` task that reads the prompt: the ceiling a learned order should approach."""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.samplers.base import Sampler, StepState, register_sampler
from merlin_mdm.mdm.tasks.blocks import COUP_ID

__all__ = ["BlocksOracleSampler"]


@register_sampler
class BlocksOracleSampler(Sampler):
    """``blocks`` only: first every independent digit and one digit of each coupled block, then everything else.

    Valid whenever the denoiser copies a revealed digit into the rest of its block, in 2 steps.
    """

    name = "blocks_oracle"

    def select(self, state: StepState) -> Tensor:
        """Step 0: independent blocks + the first position of each coupled block; later steps: the rest."""
        p = state.prompt_len
        if p == 0 or (state.masked.shape[1] - p) % p:
            raise MdmError("blocks_oracle needs the blocks task (prompt of NB type tokens, NB*BL answer digits)")
        if state.step > 0:
            return state.masked
        bl = (state.masked.shape[1] - p) // p
        coupled = (state.x[:, :p] == COUP_ID).repeat_interleave(bl, dim=1)  # (B, NB*BL)
        first = (torch.arange(p * bl) % bl == 0)[None]  # (1, NB*BL)
        answer = ~coupled | first  # (B, NB*BL)
        return torch.cat([torch.zeros_like(answer[:, :p]), answer], dim=1) & state.masked
