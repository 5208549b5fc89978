"""Collecting every problem of a spec before reporting them together."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from merlin_mdm.errors import SpecError, SpecIssue
from merlin_mdm.spec.loader import Located, MarkedDict, MarkedList

__all__ = ["IssueCollector", "did_you_mean", "key_mark", "value_mark"]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else ``''``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def key_mark(node: Any, key: str) -> Located:
    """Position of ``key`` in a MarkedDict (falls back to the mapping's own position)."""
    if isinstance(node, MarkedDict):
        return node.key_marks.get(key, node.mark)
    return (0, 0)


def value_mark(node: Any, key: str | int) -> Located:
    """Position of the value under ``key`` (a mapping key or a list index)."""
    if isinstance(node, MarkedDict) and isinstance(key, str):
        return node.value_marks.get(key, node.mark)
    if isinstance(node, MarkedList) and isinstance(key, int) and key < len(node.item_marks):
        return node.item_marks[key]
    return getattr(node, "mark", (0, 0))


class IssueCollector:
    """Accumulates errors and warnings for one spec file."""

    def __init__(self, filename: str):
        self.filename = filename
        self.issues: list[SpecIssue] = []

    def error(self, where: Located, path: str, message: str) -> None:
        """Record an error at ``where`` (line, column) for the YAML ``path``."""
        self.issues.append(SpecIssue(self.filename, where[0], where[1], path, message))

    def warn(self, where: Located, path: str, message: str) -> None:
        """Record a warning (reported, does not stop a run)."""
        self.issues.append(SpecIssue(self.filename, where[0], where[1], path, message, "warning"))

    def note(self, where: Located, path: str, message: str) -> None:
        """Record a portability note: what runs here but not under Merlin 1.13 (shown by `validate` only, and never
        made an error: `run` of such a spec is not wrong)."""
        self.issues.append(SpecIssue(self.filename, where[0], where[1], path, message, "note"))

    def promote_warnings(self) -> None:
        """Strict mode: every warning counts as an error (notes stay notes)."""
        self.issues = [i if i.severity == "note" else SpecIssue(i.file, i.line, i.column, i.path, i.message)
                       for i in self.issues]

    @property
    def errors(self) -> list[SpecIssue]:
        """Only the errors."""
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> list[SpecIssue]:
        """Only the warnings."""
        return [issue for issue in self.issues if issue.severity == "warning"]

    @property
    def notes(self) -> list[SpecIssue]:
        """Only the portability notes."""
        return [issue for issue in self.issues if issue.severity == "note"]

    def raise_if_errors(self) -> None:
        """Raise a SpecError listing every error (sorted by position) when there is any."""
        errors = sorted(self.errors, key=lambda i: (i.line, i.column, i.path))
        if errors:
            raise SpecError(errors)
