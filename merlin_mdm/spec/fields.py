"""Typed reads of YAML fields that record a located issue instead of raising."""

from __future__ import annotations

import math
from typing import Any

from merlin_mdm.spec.issues import IssueCollector, did_you_mean, key_mark, value_mark
from merlin_mdm.spec.loader import Located, MarkedDict
from merlin_mdm.spec.tokens import undefined_token_hint

__all__ = ["FieldReader"]

_MISSING = object()


class FieldReader:
    """Reads the fields of one mapping at YAML ``path``, reporting problems to ``issues``.

    ``where`` is the position of the node in its parent; a scalar (which carries no position of its own)
    is reported there. When the node is not a mapping, only that one error is reported: its fields are
    neither read nor required.
    """

    def __init__(self, node: Any, path: str, issues: IssueCollector, where: Located | None = None):
        self.path = path
        self.issues = issues
        self.ok = isinstance(node, dict)
        if not self.ok:
            issues.error(getattr(node, "mark", None) or where or (0, 0), path, f"must be a mapping, not {_kind(node)}")
        self.node: MarkedDict = node if isinstance(node, MarkedDict) else MarkedDict()

    def sub(self, key: str) -> str:
        """YAML path of a child key."""
        return f"{self.path}.{key}" if self.path else key

    def only(self, allowed: tuple[str, ...], what: str) -> None:
        """Report every key not in ``allowed`` with a did-you-mean hint."""
        for key in self.node:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f" (allowed: {', '.join(allowed)})"
                self.issues.error(key_mark(self.node, key), self.sub(key), f"unknown key in {what}{hint}")

    def raw(self, key: str, required: bool = False) -> Any:
        """The value under ``key`` (None when absent; an error when required)."""
        if key not in self.node:
            if required and self.ok:
                self.issues.error(self.node.mark, self.sub(key), f"missing required key `{key}`")
            return None
        value = self.node[key]
        if required and (value is None or (isinstance(value, str) and not value.strip())):
            self.issues.error(value_mark(self.node, key), self.sub(key), "must not be empty")
        return value

    def text(self, key: str, required: bool = False, default: str | None = None) -> str | None:
        """A string field; numbers are accepted and turned into text."""
        value = self.raw(key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self._type_error(key, "a string", value)
            return default
        return str(value)

    def integer(self, key: str, default: int | None = None, minimum: int = 0) -> int | None:
        """A whole-number field, at least ``minimum``."""
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._type_error(key, "a whole number", value)
            return default
        if value < minimum:
            self.issues.error(value_mark(self.node, key), self.sub(key), f"must be >= {minimum}, got {value}")
            return default
        return value

    def number(self, key: str, default: float, maximum: float = math.inf) -> float:
        """A finite number field from 0 to ``maximum`` (``.inf`` and ``.nan`` are YAML numbers too)."""
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:  # NaN fails >=
            self._type_error(key, "a non-negative number", value)
            return default
        if not math.isfinite(value) or value > maximum:
            self.issues.error(value_mark(self.node, key), self.sub(key),
                              f"must be a finite number of at most {maximum:g}, got {value:g}")
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        """A true/false field."""
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._type_error(key, "true or false", value)
            return default
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list of strings; a single string is accepted as a one-item list."""
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return (str(value),)
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            self._type_error(key, "a list of strings", value)
            return default
        return tuple(str(v) for v in value)

    def _type_error(self, key: str, wanted: str, value: Any) -> None:
        hint = undefined_token_hint(value)
        self.issues.error(value_mark(self.node, key), self.sub(key), f"must be {wanted}, not {_kind(value)}{hint}")



def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f"the string '{value}'"
