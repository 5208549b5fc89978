"""The ``sudoku`` task: N x N boards (4x4, 6x6, 9x9, ...) with a given number of blanks; generate the full board.

Layout (ids): digit d (1..N) is d-1, ``BLANK`` = N, ``MASK`` = N+1. The prompt is the puzzle (N*N cells, BLANK
where blank), the answer the solved board (N*N digits) in reading order. A generated answer is valid when
every row, column and box holds each digit once and it agrees with every given. Puzzles come from a seeded
generator (a pattern solution shuffled by bands, rows in bands, stacks, columns in stacks and a digit
relabelling), so they need not have a unique solution; any valid completion counts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.tasks.base import Task, register_task

__all__ = ["SudokuTask", "box_shape"]


def box_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a box for an N x N board: the most square factorisation with rows <= cols (6 -> (2, 3))."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def _permutation(n_boards: int, groups: int, size: int, generator: torch.Generator) -> Tensor:
    """Random line order: shuffle the groups, then the lines inside each group. (N, groups * size)."""
    group_perm = torch.rand(n_boards, groups, generator=generator).argsort(-1)  # (N, G)
    inner = torch.rand(n_boards, groups, size, generator=generator).argsort(-1)  # (N, G, S)
    return (group_perm[..., None] * size + inner).reshape(n_boards, -1)


@register_task
class SudokuTask(Task):
    """N x N Sudoku completion.

    Args:
        n: board side (box shape from :func:`box_shape`; 4, 6 and 9 are the usual ones).
        blanks: number of blank cells per puzzle, 0 <= blanks <= N*N.
    """

    name = "sudoku"

    def __init__(self, n: int = 4, blanks: int = 8) -> None:
        self.n, self.blanks = int(n), int(blanks)
        self.box = box_shape(self.n)
        if self.n < 4 or self.box[0] < 2:
            raise MdmError(f"sudoku: n must be >= 4 with a box of at least 2 rows (4, 6, 8, 9, ...), got {n}")
        if not 0 <= self.blanks <= self.n * self.n:
            raise MdmError(f"sudoku: blanks must be in [0, {self.n * self.n}], got {blanks}")
        self.blank_id = self.n
        self.mask_id = self.n + 1
        self.vocab_size = self.n + 2
        self.prompt_len = self.answer_len = self.n * self.n

    def _solutions(self, count: int, generator: torch.Generator) -> Tensor:
        n, (br, bc) = self.n, self.box
        r, c = torch.arange(n)[:, None], torch.arange(n)[None, :]
        base = (bc * (r % br) + r // br + c) % n  # (n, n), a valid board
        rows = _permutation(count, n // br, br, generator)  # (N, n)
        cols = _permutation(count, n // bc, bc, generator)  # (N, n)
        boards = base[rows[:, :, None], cols[:, None, :]]  # (N, n, n)
        relabel = torch.rand(count, n, generator=generator).argsort(-1)  # (N, n)
        return relabel.gather(1, boards.reshape(count, -1))  # (N, n*n)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` (puzzle, solution) sequences. (N, 2*n*n)."""
        solution = self._solutions(n, generator)  # (N, n*n)
        ranks = torch.rand(n, self.n * self.n, generator=generator).argsort(-1).argsort(-1)  # (N, n*n)
        puzzle = solution.masked_fill(ranks < self.blanks, self.blank_id)
        return torch.cat([puzzle, solution], dim=1)

    def _groups_ok(self, board: Tensor) -> Tensor:
        """(N, n, n) digit boards -> (N,) every row, column and box is a permutation."""
        n, (br, bc) = self.n, self.box
        boxes = board.reshape(-1, n // br, br, n // bc, bc).permute(0, 1, 3, 2, 4).reshape(-1, n, n)
        want = torch.arange(n)
        return torch.stack([(g.sort(-1).values == want).all(-1).all(-1) for g in (board, board.transpose(1, 2), boxes)]
                           ).all(0)

    def score(self, x: Tensor) -> Tensor:
        """Valid completion consistent with the givens. (N,) bool."""
        puzzle, answer = x[:, : self.prompt_len], x[:, self.prompt_len :]
        digits = (answer < self.n).all(-1)  # (N,)
        givens = ((puzzle == self.blank_id) | (puzzle == answer)).all(-1)  # (N,)
        board = answer.clamp(max=self.n - 1).reshape(-1, self.n, self.n)
        return (digits & givens & self._groups_ok(board)).cpu()

    def render(self, x: Tensor) -> str:
        """Puzzle and answer as rows of digits (``.`` blank, ``_`` mask)."""
        def row_text(cells: list[int]) -> str:
            return "".join("." if t == self.blank_id else "_" if t == self.mask_id else str(t + 1) for t in cells)

        cells = x.tolist()
        half = self.prompt_len
        lines = [f"{row_text(cells[i:i + self.n])}  {row_text(cells[half + i:half + i + self.n])}"
                 for i in range(0, half, self.n)]
        return "\n".join(lines)
