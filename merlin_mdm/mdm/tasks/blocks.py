"""The ``blocks`` task: NB answer blocks of BL digits, each independent (iid digits) or coupled (one digit repeated).

Layout (ids): digits 0-9 are 0..9, ``IND`` = 10, ``COUP`` = 11, ``MASK`` = 12. The prompt is NB type tokens;
the answer is NB * BL digits. A sequence is valid when every coupled block is constant. Revealing several
positions of an unrevealed coupled block in one step samples them independently and usually breaks it, which
is what makes the generation order matter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.tasks.base import Task, register_task

__all__ = ["BlocksTask"]

N_DIGITS = 10
IND_ID = 10
COUP_ID = 11


@register_task
class BlocksTask(Task):
    """Independent and coupled digit blocks.

    Args:
        nb: number of blocks.
        bl: digits per block.
        p_coupled: probability that a block is coupled.
    """

    name = "blocks"

    def __init__(self, nb: int = 4, bl: int = 4, p_coupled: float = 0.5) -> None:
        if int(nb) < 1 or int(bl) < 1:
            raise MdmError(f"blocks: nb and bl must be >= 1, got nb={nb}, bl={bl}")
        if not 0.0 <= float(p_coupled) <= 1.0:
            raise MdmError(f"blocks: p_coupled must be in [0, 1], got {p_coupled}")
        self.nb, self.bl, self.p_coupled = int(nb), int(bl), float(p_coupled)
        self.vocab_size = N_DIGITS + 3
        self.mask_id = N_DIGITS + 2
        self.prompt_len = self.nb
        self.answer_len = self.nb * self.bl

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` sequences (N, NB + NB*BL)."""
        coupled = torch.rand(n, self.nb, generator=generator) < self.p_coupled  # (N, NB)
        free = torch.randint(0, N_DIGITS, (n, self.nb, self.bl), generator=generator)  # (N, NB, BL)
        const = torch.randint(0, N_DIGITS, (n, self.nb, 1), generator=generator).expand(-1, -1, self.bl)
        answer = torch.where(coupled[..., None], const, free).reshape(n, -1)  # (N, NB*BL)
        prompt = torch.where(coupled, COUP_ID, IND_ID)  # (N, NB)
        return torch.cat([prompt, answer], dim=1)

    def score(self, x: Tensor) -> Tensor:
        """Valid when every coupled block is constant and the answer holds digits only."""
        prompt, answer = x[:, : self.prompt_len], x[:, self.prompt_len :]
        blocks = answer.reshape(-1, self.nb, self.bl)  # (N, NB, BL)
        constant = (blocks == blocks[..., :1]).all(-1)  # (N, NB)
        digits = (answer < N_DIGITS).all(-1)  # (N,)
        return ((constant | (prompt != COUP_ID)).all(-1) & digits).cpu()

    def render(self, x: Tensor) -> str:
        """E.g. ``C I | 7777 0193``."""
        types = " ".join("C" if int(t) == COUP_ID else "I" for t in x[: self.prompt_len])
        ans = x[self.prompt_len :].tolist()
        chars = ["_" if t == self.mask_id else (str(t) if t < N_DIGITS else "?") for t in ans]
        groups = ["".join(chars[i : i + self.bl]) for i in range(0, len(chars), self.bl)]
        return f"{types} | {' '.join(groups)}"
