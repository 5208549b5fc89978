"""Fixed position schedules that ignore the state: the dilated unmasking schedule (DUS, arXiv 2506.19037).

DUS reveals the answer positions in bit-reversal order (0, 8, 4, 12, 2, 10, ... for 16 positions), the
:func:`reveal_counts` split per step: each step's positions are spread as far apart as possible, so tokens
revealed together are rarely neighbours. It needs no model confidence and is the same for every prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.samplers.base import FixedBudgetSampler, Sampler, StepState, register_sampler

__all__ = ["DilatedSampler", "ScheduleSampler", "bit_reversal_ranks"]


def bit_reversal_ranks(length: int) -> Tensor:
    """Rank of every index 0..length-1 in bit-reversal order (padded to a power of two, then filtered). (length,)."""
    bits = max(1, (length - 1).bit_length())
    order = [int(format(i, f"0{bits}b")[::-1], 2) for i in range(1 << bits)]
    kept = [i for i in order if i < length]
    ranks = torch.empty(length, dtype=torch.long)
    ranks[torch.tensor(kept)] = torch.arange(length)
    return ranks


@register_sampler
class DilatedSampler(FixedBudgetSampler):
    """DUS: reveal answer positions in bit-reversal order, k per step (the same schedule for every prompt)."""

    name = "dus"

    def score(self, state: StepState) -> Tensor:
        """Minus the bit-reversal rank of each answer position. (B, L)."""
        length = state.masked.shape[1]
        ranks = torch.zeros(length, dtype=torch.long)
        ranks[state.prompt_len :] = bit_reversal_ranks(length - state.prompt_len)
        return (-ranks.float()).expand(state.masked.shape[0], -1)


class ScheduleSampler(Sampler):
    """Replay given reveal schedules: row i reveals at step t the positions with ``schedule[i] == t``.

    Not registered (it is built from a tensor, not from knobs); the state-dependence diagnostic replays one
    prompt's learned schedule on another prompt with it.

    Args:
        schedule: (N, L) long, the step revealing each position (as :attr:`GenerationResult.reveal_step`).
    """

    name = "schedule"
    adaptive = True  # a schedule may finish before the budget

    def __init__(self, schedule: Tensor) -> None:
        self.schedule = schedule

    def knobs(self) -> dict[str, Any]:
        """None: a schedule is data, not a knob."""
        return {}

    def select(self, state: StepState) -> Tensor:
        """The positions scheduled for this step (the generation loop adds one if a row has none)."""
        if state.rows is None:
            raise MdmError("a schedule sampler needs the row indices of the batch (generate passes them)")
        return (self.schedule[state.rows] == state.step) & state.masked
