"""The ``blocks`` task: NB answer blocks of BL digits, each independent (iid digits) or coupled (one digit repeated).

Layout (ids): digits 0-9 are 0..9, ``IND`` = 10, ``COUP`` = 11, ``MASK`` = 12, and with ``layout="random"`` the
block labels ``13 + b`` for b < NB. The prompt starts with NB type tokens. With ``layout="fixed"`` block b is the
answer positions ``b*BL .. b*BL + BL - 1``; with ``layout="random"`` every sequence scatters the blocks over the
answer positions by a random permutation and the prompt goes on with NB*BL block labels, the block of each
answer position. A sequence is valid when every coupled block is constant. Revealing several positions of an
unrevealed coupled block in one step samples them independently and usually breaks it, which is what makes the
generation order matter; with a random layout no fixed position schedule avoids that, the order has to read
the prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.tasks.base import Task, register_task

__all__ = ["COUP_ID", "IND_ID", "LABEL0_ID", "LAYOUTS", "BlocksTask"]

N_DIGITS = 10
IND_ID = 10
COUP_ID = 11
LABEL0_ID = 13  # block label b is LABEL0_ID + b (random layout only)
LAYOUTS = ("fixed", "random")


@register_task
class BlocksTask(Task):
    """Independent and coupled digit blocks.

    Args:
        nb: number of blocks.
        bl: digits per block.
        p_coupled: probability that a block is coupled.
        layout: ``fixed`` (contiguous blocks) or ``random`` (scattered per sequence, given in the prompt).
    """

    name = "blocks"

    def __init__(self, nb: int = 4, bl: int = 4, p_coupled: float = 0.5, layout: str = "fixed") -> None:
        if int(nb) < 1 or int(bl) < 1:
            raise MdmError(f"blocks: nb and bl must be >= 1, got nb={nb}, bl={bl}")
        if not 0.0 <= float(p_coupled) <= 1.0:
            raise MdmError(f"blocks: p_coupled must be in [0, 1], got {p_coupled}")
        if layout not in LAYOUTS:
            raise MdmError(f"blocks: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.nb, self.bl, self.p_coupled, self.layout = int(nb), int(bl), float(p_coupled), str(layout)
        self.mask_id = N_DIGITS + 2
        self.answer_len = self.nb * self.bl
        random = self.layout == "random"
        self.vocab_size = LABEL0_ID + (self.nb if random else 0)
        self.prompt_len = self.nb + (self.answer_len if random else 0)

    def block_ids(self, x: Tensor) -> Tensor:
        """The block of every answer position of ``x`` (N, L): (N, NB*BL) long in [0, NB)."""
        if self.layout == "random":
            return x[:, self.nb : self.prompt_len] - LABEL0_ID
        return (torch.arange(self.answer_len) // self.bl).expand(x.shape[0], -1)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` sequences (N, prompt_len + NB*BL)."""
        coupled = torch.rand(n, self.nb, generator=generator) < self.p_coupled  # (N, NB)
        free = torch.randint(0, N_DIGITS, (n, self.nb, self.bl), generator=generator)  # (N, NB, BL)
        const = torch.randint(0, N_DIGITS, (n, self.nb, 1), generator=generator).expand(-1, -1, self.bl)
        answer = torch.where(coupled[..., None], const, free).reshape(n, -1)  # (N, NB*BL) in block order
        types = torch.where(coupled, COUP_ID, IND_ID)  # (N, NB)
        if self.layout == "fixed":
            return torch.cat([types, answer], dim=1)
        perm = torch.rand(n, self.answer_len, generator=generator).argsort(-1)  # answer position -> slot
        labels = LABEL0_ID + perm // self.bl  # (N, NB*BL)
        return torch.cat([types, labels, answer.gather(1, perm)], dim=1)

    def split_key(self, x: Tensor) -> Tensor:
        """Fixed layout: the whole sequence (there are only 2**NB prompts); random layout: the prompt."""
        return x if self.layout == "fixed" else x[:, : self.prompt_len]

    def score(self, x: Tensor) -> Tensor:
        """Valid when every coupled block is constant and the answer holds digits only."""
        types, answer = x[:, : self.nb], x[:, self.prompt_len :]
        ids = self.block_ids(x)  # (N, A)
        ok = (answer < N_DIGITS).all(-1)  # (N,)
        for b in range(self.nb):
            inside = ids == b  # (N, A)
            high = answer.masked_fill(~inside, -1).amax(-1)
            low = answer.masked_fill(~inside, N_DIGITS + 99).amin(-1)
            ok &= (high == low) | (types[:, b] != COUP_ID)
        return ok.cpu()

    def render(self, x: Tensor) -> str:
        """E.g. ``C I | 7777 0193`` (answer digits grouped by block, in position order within a block)."""
        types = " ".join("C" if int(t) == COUP_ID else "I" for t in x[: self.nb])
        ids = self.block_ids(x[None])[0].tolist()
        ans = x[self.prompt_len :].tolist()
        chars = ["_" if t == self.mask_id else (str(t) if t < N_DIGITS else "?") for t in ans]
        groups = ["".join(c for c, i in zip(chars, ids, strict=True) if i == b) for b in range(self.nb)]
        return f"{types} | {' '.join(groups)}"
