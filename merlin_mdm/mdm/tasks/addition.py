"""The ``addition`` task: add two D-digit numbers; the sum is written least or most significant digit first.

Layout (ids): digits 0-9 are 0..9, ``LSB`` = 10, ``MSB`` = 11, ``MASK`` = 12. The prompt is a direction token,
then the D digits of ``a`` and the D digits of ``b``, most significant first (2D + 1 tokens). The answer is the
D + 1 digits of ``a + b`` in the order the direction token says: ``MSB`` as written, ``LSB`` units digit first.

Columns are drawn to make long carry chains: with probability ``p_chain`` a column's two digits sum to 9, so
whether it carries is decided by the column below it; otherwise both digits are uniform. A digit of the sum is
its column's sum plus the carry into it, and that carry can hang on a long run of columns below, so the order
that follows the carries is the low digits first. With ``direction="mixed"`` every prompt draws its direction, so
the low digits are at the start of the answer for half the prompts and at its end for the others: no fixed
position schedule follows the carries on every prompt. (Measured in docs/mdm-order-learning.md, section 28: a
denoiser's confidence already follows the carries, so on this task confidence orders match the carry order.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.tasks.base import Task, register_task

__all__ = ["DIRECTIONS", "LSB_ID", "MSB_ID", "AdditionTask", "column_sum"]

N_DIGITS = 10
LSB_ID = 10
MSB_ID = 11
DIRECTIONS = ("lsb", "msb", "mixed")


def column_sum(a: Tensor, b: Tensor) -> Tensor:
    """The digits of ``a + b``, most significant first.

    Args:
        a: (N, D) long digits, most significant first.
        b: (N, D) long digits, most significant first.

    Returns:
        (N, D + 1) long: the final carry, then the D column digits.
    """
    carry = torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
    digits = []
    for i in range(a.shape[1] - 1, -1, -1):
        total = a[:, i] + b[:, i] + carry
        digits.append(total % N_DIGITS)
        carry = total // N_DIGITS
    digits.append(carry)
    return torch.stack(digits[::-1], dim=1)


@register_task
class AdditionTask(Task):
    """Long addition with carry chains, the answer's direction given per prompt.

    Args:
        digits: D, the digits of each operand (>= 1).
        p_chain: probability that a column's digits sum to 9 (a carry passes through it), in [0, 1].
        direction: ``lsb`` (units digit first), ``msb`` (as written) or ``mixed`` (each prompt draws one).
    """

    name = "addition"

    def __init__(self, digits: int = 8, p_chain: float = 0.5, direction: str = "mixed") -> None:
        if int(digits) < 1:
            raise MdmError(f"addition: digits must be >= 1, got {digits}")
        if not 0.0 <= float(p_chain) <= 1.0:
            raise MdmError(f"addition: p_chain must be in [0, 1], got {p_chain}")
        if direction not in DIRECTIONS:
            raise MdmError(f"addition: direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        self.digits, self.p_chain, self.direction = int(digits), float(p_chain), str(direction)
        self.mask_id = MSB_ID + 1
        self.vocab_size = MSB_ID + 2
        self.prompt_len = 2 * self.digits + 1
        self.answer_len = self.digits + 1

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` sums with their answers. (N, 3D + 2)."""
        d = self.digits
        a = torch.randint(0, N_DIGITS, (n, d), generator=generator)
        chain = torch.rand(n, d, generator=generator) < self.p_chain
        b = torch.where(chain, N_DIGITS - 1 - a, torch.randint(0, N_DIGITS, (n, d), generator=generator))
        lsb = torch.rand(n, generator=generator) < 0.5 if self.direction == "mixed" else torch.full(
            (n,), self.direction == "lsb")
        flag = torch.where(lsb, LSB_ID, MSB_ID)[:, None]
        return torch.cat([flag, a, b, self._written(column_sum(a, b), lsb)], dim=1)

    @staticmethod
    def _written(total: Tensor, lsb: Tensor) -> Tensor:
        """The sum's digits (most significant first) in each row's answer order."""
        return torch.where(lsb[:, None], total.flip(1), total)

    def score(self, x: Tensor) -> Tensor:
        """Exact match of the whole answer with the sum, in the prompt's direction. (N,) bool."""
        d = self.digits
        lsb = x[:, 0] == LSB_ID
        truth = self._written(column_sum(x[:, 1 : 1 + d], x[:, 1 + d : 1 + 2 * d]), lsb)
        return (x[:, self.prompt_len :] == truth).all(-1).cpu()

    def render(self, x: Tensor) -> str:
        """E.g. ``lsb 12345678+87654329 = 700000001`` (the answer as generated, ``_`` for a mask)."""
        d = self.digits
        text = ["_" if t == self.mask_id else (str(t) if t < N_DIGITS else "?") for t in x.tolist()]
        head = "lsb" if int(x[0]) == LSB_ID else "msb"
        return f"{head} {''.join(text[1 : 1 + d])}+{''.join(text[1 + d : 1 + 2 * d])} = {''.join(text[1 + 2 * d :])}"
