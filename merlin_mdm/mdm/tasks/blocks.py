"""The ``blocks`` task: NB answer blocks of BL digits, each independent (iid digits) or coupled (one digit repeated).

Layout (ids): digits 0-9 are 0..9, ``IND`` = 10, ``COUP`` = 11, ``MASK`` = 12, and with ``layout="random"`` the
coupled-block labels ``13 + b`` for b < NB.

* ``layout="fixed"``: the prompt is NB type tokens (IND/COUP); block b is the answer positions
  ``b*BL .. b*BL + BL - 1``.
* ``layout="random"``: every sequence scatters the blocks over the answer positions by a random permutation.
  The prompt has one token per answer position, aligned with it (prompt position i describes answer position
  i): ``13 + b`` when the position belongs to coupled block b, ``IND`` when its block is independent. The
  denoiser reads its own position's label at a fixed offset and finds the positions carrying the same label;
  a fixed position schedule cannot know which positions belong together.

A sequence is valid when every coupled block is constant. Revealing several positions of an unrevealed coupled
block in one step samples them independently and usually breaks it, which is what makes the generation order
matter; with a random layout no fixed position schedule avoids that, the order has to read the prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.tasks.base import Task, register_task

__all__ = ["COUP_ID", "IND_ID", "LABEL0_ID", "LAYOUTS", "BlocksTask", "coupled_blocks"]

N_DIGITS = 10
IND_ID = 10
COUP_ID = 11
LABEL0_ID = 13  # coupled block b is labelled LABEL0_ID + b (random layout only)
LAYOUTS = ("fixed", "random")


def coupled_blocks(prompt: Tensor, answer_len: int) -> Tensor:
    """The coupled block of every answer position, read from ``blocks`` prompts of either layout.

    Args:
        prompt: (N, P) long; NB type tokens (fixed layout) or one label per answer position (random layout).
        answer_len: A, the number of answer positions.

    Returns:
        (N, A) long: the block index b for a position of coupled block b, -1 for a position of an independent
        block.

    Raises:
        MdmError: the prompt is not a ``blocks`` prompt.
    """
    n, p = prompt.shape
    if p == answer_len and bool(((prompt == IND_ID) | (prompt >= LABEL0_ID)).all()):
        return torch.where(prompt >= LABEL0_ID, prompt - LABEL0_ID, -1)
    if p == 0 or answer_len % p or not bool(((prompt == COUP_ID) | (prompt == IND_ID)).all()):
        raise MdmError("not a blocks prompt (block types, or one block label per answer position)")
    ids = (torch.arange(answer_len) // (answer_len // p)).expand(n, -1)  # (N, A)
    return torch.where(prompt.gather(1, ids) == COUP_ID, ids, -1)


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
        self.prompt_len = self.answer_len if random else self.nb
        self.prompt_aligned = random

    def block_ids(self, x: Tensor) -> Tensor:
        """The coupled block of every answer position of ``x`` (N, L): (N, NB*BL) long, -1 where independent."""
        return coupled_blocks(x[:, : self.prompt_len], self.answer_len)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` sequences (N, prompt_len + NB*BL)."""
        coupled = torch.rand(n, self.nb, generator=generator) < self.p_coupled  # (N, NB)
        free = torch.randint(0, N_DIGITS, (n, self.nb, self.bl), generator=generator)  # (N, NB, BL)
        const = torch.randint(0, N_DIGITS, (n, self.nb, 1), generator=generator).expand(-1, -1, self.bl)
        answer = torch.where(coupled[..., None], const, free).reshape(n, -1)  # (N, NB*BL) in block order
        if self.layout == "fixed":
            return torch.cat([torch.where(coupled, COUP_ID, IND_ID), answer], dim=1)
        perm = torch.rand(n, self.answer_len, generator=generator).argsort(-1)  # answer position -> slot
        block = perm // self.bl  # (N, A) the block of every answer position
        labels = torch.where(coupled.gather(1, block), LABEL0_ID + block, IND_ID)  # (N, A)
        return torch.cat([labels, answer.gather(1, perm)], dim=1)

    def split_key(self, x: Tensor) -> Tensor:
        """Fixed layout: the whole sequence (there are only 2**NB prompts); random layout: the prompt."""
        return x if self.layout == "fixed" else x[:, : self.prompt_len]

    def score(self, x: Tensor) -> Tensor:
        """Valid when every coupled block is constant and the answer holds digits only."""
        answer = x[:, self.prompt_len :]
        ids = self.block_ids(x)  # (N, A)
        ok = (answer < N_DIGITS).all(-1)  # (N,)
        for b in range(self.nb):
            inside = ids == b  # (N, A)
            high = answer.masked_fill(~inside, -1).amax(-1)
            low = answer.masked_fill(~inside, N_DIGITS + 99).amin(-1)
            ok &= (high == low) | ~inside.any(-1)
        return ok.cpu()

    def render(self, x: Tensor) -> str:
        """E.g. ``C I | 7777 0193`` (fixed) or ``C | 7777 | 0193`` (random: coupled blocks, then the free digits)."""
        ids = self.block_ids(x[None])[0].tolist()
        ans = x[self.prompt_len :].tolist()
        chars = ["_" if t == self.mask_id else (str(t) if t < N_DIGITS else "?") for t in ans]
        if self.layout == "fixed":
            types = " ".join("C" if int(t) == COUP_ID else "I" for t in x[: self.nb])
            groups = ["".join(chars[b * self.bl : (b + 1) * self.bl]) for b in range(self.nb)]
            return f"{types} | {' '.join(groups)}"
        blocks = sorted({i for i in ids if i >= 0})
        coupled = ["".join(c for c, i in zip(chars, ids, strict=True) if i == b) for b in blocks]
        free = "".join(c for c, i in zip(chars, ids, strict=True) if i < 0)
        return f"{' '.join('C' * len(blocks))} | {' '.join(coupled)} | {free}"
