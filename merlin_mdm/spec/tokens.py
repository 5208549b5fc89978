"""``$(TOKEN)`` substitution, Maestro style: unknown tokens are left in place for a later stage."""

from __future__ import annotations

import graphlib
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "LATE_TOKENS",
    "MAX_VALUE_CHARS",
    "STUDY_TOKENS",
    "TOKEN_NAME_RE",
    "TOKEN_RE",
    "expanded_sizes",
    "inlined_tokens",
    "is_token_name",
    "plain_names_in",
    "resolve_ordered",
    "substitute",
    "substitute_task",
    "tokens_in",
    "undefined_token_hint",
]

TOKEN_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # what may stand between $( and )
TOKEN_RE = re.compile(rf"\$\(({TOKEN_NAME_RE.pattern})\)")

# Known once the workspace exists (filled by the study layer).
STUDY_TOKENS = frozenset({
    "SPECROOT", "OUTPUT_PATH", "MERLIN_WORKSPACE", "MERLIN_INFO", "MERLIN_TIMESTAMP", "MERLIN_SPEC_ORIGINAL_TEMPLATE",
    "MERLIN_SPEC_EXECUTED_RUN", "MERLIN_SPEC_ARCHIVED_COPY", "LAUNCHER", "VLAUNCHER", "MERLIN_GLOB_PATH",
    "MERLIN_PATHS_ALL", "MERLIN_SAMPLE_NAMES", "MERLIN_SAMPLE_FILE",
})  # fmt: skip
# Known only when a task runs (filled by the executor).
LATE_TOKENS = frozenset({"WORKSPACE", "MERLIN_SAMPLE_ID", "MERLIN_SAMPLE_PATH", "MERLIN_SAMPLE_VECTOR"})
# The names no env variable, label or --vars may take (Merlin 1.13's reserved words: it refuses them too); one
# set silently took $(WORKSPACE) over, or turned `exit $(MERLIN_SOFT_FAIL)` into a success.
RESERVED_NAMES = frozenset({
    "SPECROOT", "WORKSPACE", "LAUNCHER", "MERLIN_GLOB_PATH", "MERLIN_PATHS_ALL", "MERLIN_SAMPLE_ID",
    "MERLIN_SAMPLE_PATH", "MERLIN_WORKSPACE", "MERLIN_TIMESTAMP", "MERLIN_INFO", "MERLIN_SUCCESS", "MERLIN_RESTART",
    "MERLIN_SOFT_FAIL", "MERLIN_HARD_FAIL", "MERLIN_RETRY", "MERLIN_STOP_WORKERS", "MERLIN_RAISE_ERROR",
})  # fmt: skip


MAX_VALUE_CHARS = 1 << 24
"""The longest a variable's value may grow once the variables it uses are filled in (16 Mi characters): ten
variables each using the one before ten times make 10**10 characters from a line each, a MemoryError after
13 GB (an outside probe's spec); one this long is left unfilled and reported at its line instead."""


def is_token_name(name: str) -> bool:
    """Whether ``$(name)`` is read as a token by :data:`TOKEN_RE` (a sample column may be named otherwise)."""
    return TOKEN_NAME_RE.fullmatch(name) is not None


def plain_names_in(text: str, names: Iterable[str]) -> list[str]:
    """The ``names`` that are no token name (a sample column Merlin takes: `my col`, `1st`) and that ``text``
    writes as ``$(NAME)``: Merlin finds and replaces a column as plain text."""
    return [name for name in names if not is_token_name(name) and f"$({name})" in text]


def tokens_in(text: str) -> list[str]:
    """Every token name used in ``text``, in order of appearance (with repeats)."""
    return TOKEN_RE.findall(text)


def undefined_token_hint(value: object) -> str:
    """For a field read when the spec loads that still holds ``$(NAME)``: what NAME had to be; "" otherwise."""
    names = tokens_in(value) if isinstance(value, str) else []
    if not names:
        return ""
    listed = ", ".join(dict.fromkeys(names))
    return f" ({listed}: no variable of env.variables or env.labels; define it there or pass --vars NAME=VALUE)"


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace each ``$(NAME)`` whose NAME is in ``values``; leave the others untouched."""
    if "$(" not in text:
        return text

    def repl(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return TOKEN_RE.sub(repl, text)


def substitute_task(text: str, tokens: Mapping[str, str]) -> str:
    """:func:`substitute` for a task's few tokens, and ``$(NAME)`` of a sample column that is no token name
    replaced as plain text, as Merlin replaces every column."""
    text = substitute(text, tokens)
    for name in plain_names_in(text, tokens) if "$(" in text else ():
        text = text.replace(f"$({name})", tokens[name])
    return text


def _dependency_order(values: Mapping[str, str]) -> list[str]:
    """The names, each after the variables its value uses; in spec order when they refer to each other in a
    circle (an error reported elsewhere)."""
    graph = {name: {t for t in tokens_in(value) if t in values and t != name} for name, value in values.items()}
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return list(values)


def expanded_sizes(values: Mapping[str, str], known: Mapping[str, str]) -> dict[str, int]:
    """How long each of ``values`` grows once the variables it uses (and ``known``) are filled in, counted without
    building any of them (a value that uses itself, or a cycle, counts the part before it)."""
    sizes: dict[str, int] = {}
    for name in _dependency_order(values):
        text, size = values[name], len(values[name])
        for token in tokens_in(text):
            grown = sizes.get(token) if token != name else None
            if grown is None and token in known and token not in values:
                grown = len(known[token])
            size += 0 if grown is None else grown - len(token) - 3  # "$(" + token + ")"
        sizes[name] = size
    return sizes


def resolve_ordered(pairs: tuple[tuple[str, str], ...], known: Mapping[str, str]) -> dict[str, str]:
    """Resolve variables that may use each other and ``known`` tokens; nested references resolve in a few passes.

    Returns the resolved values; a value that still holds tokens refers to something undefined, to a cycle, or
    would grow beyond :data:`MAX_VALUE_CHARS` (left as written).
    """
    values = dict(pairs)
    too_long = {k for k, size in expanded_sizes(values, known).items() if size > MAX_VALUE_CHARS}
    resolved = {**known, **{k: v for k, v in values.items() if "$(" not in v}}
    pending = [n for n in _dependency_order(values) if "$(" in values[n] and n not in too_long]
    for _ in range(len(values) + 1):  # in dependency order one pass resolves all; more only around a cycle
        changed = False
        for name in pending:
            new = substitute(values[name], resolved)
            if new != values[name]:
                values[name] = new
                changed = True
            if "$(" not in new:
                resolved[name] = new
        pending = [name for name in pending if "$(" in values[name]]
        if not changed:
            break
    return values


def inlined_tokens(text: str, variables: Mapping[str, str], plain: Iterable[str] = ()) -> list[str]:
    """The tokens ``text`` holds once the env variables it uses are written out (nested ones too), in order of
    first appearance; found by walking the variables, each once, never by writing them out (a variable used ten
    times in each of ten others is 10**10 characters). Names of ``plain`` that are no token name count where a
    walked text writes them as ``$(NAME)`` (:func:`plain_names_in`)."""
    plain = tuple(name for name in plain if not is_token_name(name))
    found: dict[str, None] = dict.fromkeys(plain_names_in(text, plain))
    walked: set[str] = set()
    todo = [iter(tokens_in(text))]
    while todo:
        token = next(todo[-1], None)
        if token is None:
            todo.pop()
        elif token not in variables:
            found[token] = None
        elif token not in walked:
            walked.add(token)
            found.update(dict.fromkeys(plain_names_in(variables[token], plain)))
            todo.append(iter(tokens_in(variables[token])))
    return list(found)
