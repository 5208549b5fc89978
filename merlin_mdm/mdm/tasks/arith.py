"""The ``arith`` task: templated multi-step arithmetic word problems with a short chain of thought (GSM8K style).

Character-level. Prompt, e.g. ``tom has 7 pens. tom buys 5 more. tom loses 3. how many pens now?``; answer
``7+5=12. 12-3=9. #### 9``. Both are right-padded with ``PAD`` to fixed lengths computed from the knobs.
Scoring is exact match of the number after ``####`` against the value recomputed from the prompt.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.tasks.base import Task, register_task

__all__ = ["CHARS", "ArithTask"]

CHARS = " abcdefghijklmnopqrstuvwxyz0123456789.,?+-*=#"
NAMES = ("tom", "ann", "bob", "eva", "sam", "mia", "leo", "zoe")
ITEMS = ("apples", "pens", "cards", "coins", "books", "shells")
TEMPLATES = {"+": ("{n} buys {b} more.", "{n} finds {b} more."), "-": ("{n} gives away {b}.", "{n} loses {b}."),
             "*": ("{n} gets {b} times as many.",)}
_STEP = re.compile(r"(buys|finds|gives away|loses|gets) (\d+)")
_VERB_OP = {"buys": "+", "finds": "+", "gives away": "-", "loses": "-", "gets": "*"}
_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _solve(prompt: str) -> int | None:
    """The answer of a rendered problem, or None when it does not parse."""
    start = re.search(r" has (\d+) ", prompt)
    if start is None:
        return None
    value = int(start.group(1))
    for verb, number in _STEP.findall(prompt):
        value = _APPLY[_VERB_OP[verb]](value, int(number))
    return value


@register_task
class ArithTask(Task):
    """Multi-step arithmetic word problems.

    Args:
        n_ops: operations per problem (>= 1).
        max_value: largest start value and largest added amount (>= 1).
        ops: the operations to draw from, a subset of ``+-*`` (``*`` multiplies by 2 or 3).
    """

    name = "arith"

    def __init__(self, n_ops: int = 2, max_value: int = 20, ops: str = "+-") -> None:
        self.n_ops, self.max_value, self.ops = int(n_ops), int(max_value), str(ops)
        if self.n_ops < 1 or self.max_value < 1 or not self.ops or set(self.ops) - set("+-*"):
            raise MdmError(f"arith: need n_ops >= 1, max_value >= 1, ops a subset of '+-*'; got {n_ops}, "
                           f"{max_value}, {ops!r}")
        self.pad_id = len(CHARS)
        self.mask_id = len(CHARS) + 1
        self.vocab_size = len(CHARS) + 2
        bound = self.max_value
        for _ in range(self.n_ops):
            bound = max(bound * 3 if "*" in self.ops else bound, bound + self.max_value)
        digits = len(str(bound))
        widest = max(len(t) for op in self.ops for t in TEMPLATES[op]) - 6 + 3 + digits  # {n} -> 3, {b} -> digits
        self.prompt_len = len(f"xxx has {'9' * digits} {'x' * 6}.") + self.n_ops * (1 + widest) + len(
            " how many shells now?")
        self.answer_len = self.n_ops * (3 * digits + 4) + 5 + digits

    def _problem(self, u: list[float]) -> tuple[str, str]:
        """Render one problem from uniform draws ``u`` (3 + 2 * n_ops of them)."""
        name, item = NAMES[int(u[0] * len(NAMES))], ITEMS[int(u[1] * len(ITEMS))]
        value = 1 + int(u[2] * self.max_value)
        text, steps = f"{name} has {value} {item}.", []
        for i in range(self.n_ops):
            op = self.ops[int(u[3 + 2 * i] * len(self.ops))]
            b = {"+": 1 + int(u[4 + 2 * i] * self.max_value), "-": int(u[4 + 2 * i] * (value + 1)),
                 "*": 2 + int(u[4 + 2 * i] * 2)}[op]
            templates = TEMPLATES[op]
            text += " " + templates[int(u[4 + 2 * i] * 7919) % len(templates)].format(n=name, b=b)
            new = _APPLY[op](value, b)
            steps.append(f"{value}{op}{b}={new}.")
            value = new
        return f"{text} how many {item} now?", " ".join([*steps, f"#### {value}"])

    def _encode(self, text: str, length: int) -> list[int]:
        return [CHARS.index(ch) for ch in text] + [self.pad_id] * (length - len(text))

    def encode_char(self, ch: str) -> int:
        """The id of one character of :data:`CHARS`."""
        return CHARS.index(ch)

    def decode(self, tokens: Tensor) -> str:
        """Token ids -> text (``_`` for a mask, pads dropped)."""
        return "".join(CHARS[t] if t < len(CHARS) else ("_" if t == self.mask_id else "") for t in tokens.tolist())

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` problems with their worked answers. (N, prompt_len + answer_len)."""
        draws = torch.rand(n, 3 + 2 * self.n_ops, generator=generator, dtype=torch.float64).tolist()
        rows = []
        for u in draws:
            prompt, answer = self._problem(u)
            rows.append(self._encode(prompt, self.prompt_len) + self._encode(answer, self.answer_len))
        return torch.tensor(rows, dtype=torch.long)

    def score(self, x: Tensor) -> Tensor:
        """Exact match of the final answer after ``####``. (N,) bool."""
        out = []
        for row in x:
            truth = _solve(self.decode(row[: self.prompt_len]))
            found = re.search(r"#### (\d+)$", self.decode(row[self.prompt_len :]).rstrip())
            out.append(found is not None and truth is not None and int(found.group(1)) == truth)
        return torch.tensor(out, dtype=torch.bool)

    def render(self, x: Tensor) -> str:
        """``prompt => answer`` as text."""
        return f"{self.decode(x[: self.prompt_len])} => {self.decode(x[self.prompt_len :])}"
