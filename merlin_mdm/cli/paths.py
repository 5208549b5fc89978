"""Paths on the command line: an empty value (`--out ''`, or `--out "$DIR"` with DIR unset) reads as `.` to
:class:`pathlib.Path`, and a command then wrote its checkpoint, policy or dump into the current folder."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["GivenPath"]


class GivenPath(click.Path):
    """A :class:`click.Path` that refuses an empty value (a folder option takes `.` for the current folder)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            here = "'.' for the current folder; " if not self.file_okay else ""
            self.fail(f"{value!r} is empty: name a path ({here}is a shell variable unset?)", param, ctx)
        return super().convert(value, param, ctx)
