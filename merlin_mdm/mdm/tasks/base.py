"""The task interface and registry: seeded synthetic data for masked diffusion, prompt first then answer.

Every task has two disjoint splits. An example belongs to the evaluation split when a fixed hash of its
*split key* (by default the prompt; :meth:`Task.split_key`) falls in one bucket out of :data:`EVAL_BUCKETS`,
and to the training split otherwise. Training draws only ``train`` examples and evaluation only ``eval`` ones
(:meth:`Task.sample_split`), so no evaluated prompt was ever trained on, whatever the seeds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.registry import build, knob_names

__all__ = ["EVAL_BUCKETS", "SPLITS", "TASKS", "Task", "eval_mask", "make_task", "register_task"]

SPLITS = ("train", "eval")
EVAL_BUCKETS = 8  # one hash bucket in this many is the evaluation split
_PRIME = 2_147_483_647  # 2**31 - 1: products of two residues stay below 2**62, no int64 overflow


def eval_mask(keys: Tensor) -> Tensor:
    """Which rows of ``keys`` (N, K) long belong to the evaluation split: a polynomial hash mod 2**31 - 1.

    Returns:
        (N,) bool, the same on every platform and torch version (integer arithmetic only).
    """
    h = torch.zeros(keys.shape[0], dtype=torch.long)
    for column in keys.long().T:
        h = (h * 1_000_003 + column + 1) % _PRIME
    return (h * 48_271 % _PRIME) % EVAL_BUCKETS == 0


class Task(ABC):
    """A data task: a vocabulary, fixed prompt/answer lengths, a seeded sampler of clean sequences and a scorer.

    Subclasses set the instance attributes below in ``__init__`` (taking their knobs as keyword arguments stored
    under the same names, which is what :meth:`knobs` reads back) and register with :func:`register_task`.

    Attributes:
        name: the registered name, the word a spec uses.
        vocab_size: number of token ids including the mask token.
        mask_id: the id of the mask token (never produced by :meth:`sample`).
        prompt_len: number of prompt tokens (never masked).
        answer_len: number of answer tokens (the part generated).
        prompt_aligned: the prompt describes the answer position by position (prompt token i is about answer
            position i, so prompt_len == answer_len); the denoiser then embeds prompt token i at answer position i.
    """

    name: ClassVar[str]
    vocab_size: int
    mask_id: int
    prompt_len: int
    answer_len: int
    prompt_aligned: bool = False

    @property
    def seq_len(self) -> int:
        """Total sequence length ``prompt_len + answer_len``."""
        return self.prompt_len + self.answer_len

    def knobs(self) -> dict[str, Any]:
        """Return the task's knobs (JSON-able), read back from the attributes named like the constructor arguments."""
        return {k: getattr(self, k) for k in knob_names(type(self))}

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` clean sequences.

        Args:
            n: number of sequences.
            generator: the torch RNG to draw from (CPU).

        Returns:
            (N, L) long tensor, prompt first then answer.
        """

    @abstractmethod
    def score(self, x: Tensor) -> Tensor:
        """Judge full sequences (prompt + generated answer).

        Args:
            x: (N, L) long tensor.

        Returns:
            (N,) bool tensor, True where the answer is valid/correct.
        """

    def split_key(self, x: Tensor) -> Tensor:
        """What decides an example's split: (N, K) long; the prompt unless a task overrides it."""
        return x[:, : self.prompt_len]

    def sample_split(self, n: int, generator: torch.Generator, split: str) -> Tensor:
        """Draw ``n`` sequences of one split (rejection sampling from :meth:`sample`).

        Args:
            n: number of sequences.
            generator: the torch RNG to draw from.
            split: ``train`` or ``eval``.

        Returns:
            (N, L) long tensor.

        Raises:
            MdmError: an unknown split.
        """
        if split not in SPLITS:
            raise MdmError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        want_eval, kept, have = split == "eval", [], 0
        while have < n:
            x = self.sample(EVAL_BUCKETS * n + 64 if want_eval else n + n // 4 + 8, generator)
            x = x[eval_mask(self.split_key(x)) == want_eval]
            kept.append(x)
            have += x.shape[0]
        return torch.cat(kept)[:n]

    def render(self, x: Tensor) -> str:
        """Return a human-readable form of one sequence (L,); subclasses may override."""
        return " ".join(str(int(t)) for t in x)


TASKS: dict[str, type[Task]] = {}

_T = TypeVar("_T", bound=type[Task])


def register_task(cls: _T) -> _T:
    """Class decorator adding ``cls`` to :data:`TASKS` under ``cls.name``."""
    TASKS[cls.name] = cls
    return cls


def make_task(name: str, **knobs: Any) -> Task:
    """Build a registered task from its knobs.

    Args:
        name: registered task name (``blocks``, ``sudoku``, ``arith``).
        **knobs: the task's keyword knobs.

    Returns:
        The task.

    Raises:
        MdmError: unknown name or knob, or an invalid knob value.
    """
    return build("task", TASKS, name, knobs)
