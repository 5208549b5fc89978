"""Questions a command asks before it deletes: yes, no, or a refusal where nobody can answer."""

from __future__ import annotations

import sys

import click

from merlin_mdm.errors import UsageError

__all__ = ["confirmed"]


def confirmed(question: str, command: str) -> bool:
    """Ask ``question`` (default no); a closed stdin (a batch script, `< /dev/null`) is refused, naming ``command``
    and its -f/--force, rather than taken as yes or no."""
    try:
        return click.confirm(question, default=False)
    except click.exceptions.Abort:
        if sys.stdin is None or sys.stdin.isatty():
            raise  # Ctrl-C or Ctrl-D at the prompt: the user stopped it
        raise UsageError(f"{command} asks before deleting and stdin gave no answer: pass -f/--force to {command} "
                         "without asking") from None
