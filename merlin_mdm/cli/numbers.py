"""Numbers on the command line: click's ranges let `nan` through (every comparison with it is false) and `inf`
past an open upper end, and a NaN learning rate or temperature then trains or decodes nonsense that is saved
and scored as if it were a result."""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["FiniteRange"]


class FiniteRange(click.FloatRange):
    """A :class:`click.FloatRange` that refuses NaN and the infinities."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
