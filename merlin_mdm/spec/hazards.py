"""Checks against specs that would write outside their workspace, never end, or loop: parameter labels that
make no plain directory name (:func:`directory_label` keeps Maestro's path-safe characters; :func:`label_problem`
refuses what is left when it is still no directory, applied by the expansion to the labels a step uses),
walltimes that are not a positive time, and env variables that refer to each other in a circle. Pure."""

from __future__ import annotations

import math
import shlex
import string

from merlin_mdm.spec.issues import IssueCollector, key_mark, value_mark
from merlin_mdm.spec.loader import MarkedDict
from merlin_mdm.spec.model import MAX_WALLTIME, Spec
from merlin_mdm.spec.tokens import MAX_VALUE_CHARS, expanded_sizes, tokens_in, undefined_token_hint

__all__ = ["NAME_MAX", "check_hazards", "directory_label", "label_problem", "parse_walltime"]

NAME_MAX = 255  # bytes in one file name (Linux file systems: ext4, xfs, tmpfs, Lustre, GPFS)
# Maestro's make_safe_path keeps these characters of a combination's labels when it names the task's folder
# and files (Merlin 1.13: the label `X.a b` is the folder `X.a_b`, `X.c=d` is `X.cd`); the label itself, as
# $(X.label), stays as written.
_PATH_SAFE = frozenset("-_.() " + string.ascii_letters + string.digits)


def directory_label(labels: str) -> str:
    """The folder (and file) name Maestro makes of a combination's labels: other characters dropped, spaces
    made underscores."""
    if all(c in _PATH_SAFE and c != " " for c in labels):
        return labels
    return "".join(c for c in labels if c in _PATH_SAFE).replace(" ", "_")


def parse_walltime(text: str | None) -> float | None:
    """A walltime in seconds (None when unset or zero); ValueError when it is not a time.

    ``[[HH:]MM:]SS``; Merlin's ``DD:HH:MM:SS``; and Slurm's ``D-HH[:MM[:SS]]`` (`1-00:00:00`, `2-12`), which
    Slurm users type."""
    if text is None or str(text).strip() == "":
        return None
    days, dash, rest = str(text).strip().partition("-")
    if dash and days.isdigit():  # Slurm's days-hours[:minutes[:seconds]]
        parts = rest.split(":")
        if len(parts) > 3 or not rest:
            raise ValueError("days-hours takes at most hours:minutes:seconds after the '-'")
        parts += ["0"] * (3 - len(parts))
        return _seconds([days, *parts])
    parts = str(text).strip().split(":")
    if len(parts) > 4:
        raise ValueError("more than four fields")
    return _seconds(parts)


def _seconds(parts: list[str]) -> float | None:
    """``parts`` (days, hours, minutes, seconds; the leading ones optional) in seconds; None for zero."""
    seconds = 0.0
    for i, part in enumerate(parts):
        value = float(part)  # ValueError for 'abc'
        if not math.isfinite(value) or value < 0:
            raise ValueError("each field must be a finite number >= 0")
        seconds = seconds * (24 if len(parts) == 4 and i == 1 else 60) + value
    if seconds > MAX_WALLTIME:
        raise ValueError(f"more than {MAX_WALLTIME / 86_400:g} days")
    return seconds or None


def label_problem(folder: str) -> str | None:
    """Why ``folder``, a combination's :func:`directory_label`, names no directory of its own (None when it
    does)."""
    if folder in ("", ".", ".."):
        return f"makes the folder name '{folder}', which is not a directory of its own"
    return None


def check_hazards(spec: Spec, issues: IssueCollector) -> None:
    """Record walltimes and variable cycles that cannot work (labels are checked where they are used, in
    the expansion, with :func:`label_problem`)."""
    _check_walltimes(spec, issues)
    _check_variable_cycles(spec, issues)
    _check_variable_sizes(spec, issues)


def _check_walltimes(spec: Spec, issues: IssueCollector) -> None:
    batch = spec.raw.get("batch")
    places = [(spec.batch.walltime, value_mark(batch, "walltime"), "batch.walltime")]
    study = spec.raw.get("study")
    for i, step in enumerate(spec.steps):
        entry = study[i] if isinstance(study, list) and i < len(study) else None
        run = entry.get("run") if isinstance(entry, MarkedDict) else None
        places.append((step.run.walltime, value_mark(run, "walltime"), f"study[{i}].run.walltime"))
    for text, where, path in places:
        try:
            parse_walltime(text)
        except ValueError as exc:
            what = f"is {exc}" if str(exc).startswith("more than") else "is not a positive time"
            issues.error(where, path, f"walltime {text!r} {what}: use [[HH:]MM:]SS, e.g. '01:30:00', D-HH:MM:SS or "
                                      f"'90'{undefined_token_hint(text)}")


def _check_variable_cycles(spec: Spec, issues: IssueCollector) -> None:
    refs = {name: {t for t in tokens_in(value)} for name, value in spec.env.variables}
    graph = {name: sorted(r for r in targets if r in refs) for name, targets in refs.items()}
    reported: set[str] = set()
    env = spec.raw.get("env")
    variables = env.get("variables") if isinstance(env, MarkedDict) else None
    for start in _on_or_before_a_cycle(graph):
        cycle = _cycle_from(graph, start)
        if cycle and not reported & set(cycle):
            reported |= set(cycle)
            _report_cycle(spec, cycle, variables, issues)


def _check_variable_sizes(spec: Spec, issues: IssueCollector) -> None:
    """A variable whose value grows beyond MAX_VALUE_CHARS once filled in (left unfilled): reported where it
    starts, at the first variable past the limit whose own variables are all within it."""
    values = dict(spec.env.variables)
    sizes = expanded_sizes(values, {"SPECROOT": str(spec.root)})
    env = spec.raw.get("env")
    variables = env.get("variables") if isinstance(env, MarkedDict) else None
    for name, size in sizes.items():
        if size > MAX_VALUE_CHARS and all(sizes.get(t, 0) <= MAX_VALUE_CHARS for t in tokens_in(values[name])):
            issues.error(key_mark(variables, name), f"env.variables.{name}", _too_long(size, len(values[name])))
    study = spec.raw.get("study")
    for i, step in enumerate(spec.steps):
        entry = study[i] if isinstance(study, list) and i < len(study) else None
        run = entry.get("run") if isinstance(entry, MarkedDict) else None
        for key, text in (("cmd", step.run.cmd), ("restart", step.run.restart or "")):
            size = expanded_sizes({**values, "": text}, {})[""]  # "" is no name a token can have
            if size > MAX_VALUE_CHARS and all(sizes.get(t, 0) <= MAX_VALUE_CHARS for t in tokens_in(text)):
                issues.error(value_mark(run, key), f"study[{i}].run.{key}", _too_long(size, len(text)))


def _too_long(size: int, own: int) -> str:
    """Why a text of ``own`` characters, ``size`` once its variables are filled in, is refused, and the remedy."""
    if own > MAX_VALUE_CHARS:  # long as written: no variable is to blame
        return (f"is {own:,} characters long as written (more than {MAX_VALUE_CHARS:,}): put the long part in a "
                "file (a script the command runs, or data it reads) and keep the spec's text short")
    return (f"grows to {size:,} characters once the variables it uses are filled in (more than "
            f"{MAX_VALUE_CHARS:,}): use each of them fewer times")


def _report_cycle(spec: Spec, cycle: list[str], variables: object, issues: IssueCollector) -> None:
    """One variable cycle: at the line of its first variable from the file, naming the --vars in it (a cycle made
    of --vars alone has no line: the file did not make it)."""
    in_file = [name for name in cycle if name not in spec.env.from_vars]
    if in_file:
        first = cycle.index(in_file[0])
        cycle = [*cycle[first:], *cycle[:first]]  # the circle starts where the error is located
    path = " -> ".join(f"$({n})" for n in [*cycle, cycle[0]])
    values = dict(spec.env.variables)
    given = " ".join(f"{n}={shlex.quote(values[n])}" for n in cycle if n in spec.env.from_vars)
    if in_file:
        through = f" through --vars {given}" if given else ""
        issues.error(key_mark(variables, cycle[0]), f"env.variables.{cycle[0]}",
                     f"variables refer to each other in a circle ({path}){through}, so none has a value")
    elif len(cycle) == 1:
        issues.error((0, 0), "env.variables", f"--vars {given} refers to itself ({path}), so it has no value")
    else:
        issues.error((0, 0), "env.variables",
                     f"--vars {given} refer to each other in a circle ({path}), so none has a value")


def _on_or_before_a_cycle(graph: dict[str, list[str]]) -> list[str]:
    """The names from which a cycle can be reached, in spec order: the others are peeled off first, leaves up,
    so that thousands of variables without a cycle cost one pass, not a search from each."""
    left = {name: len(targets) for name, targets in graph.items()}
    users: dict[str, list[str]] = {name: [] for name in graph}
    for name, targets in graph.items():
        for target in targets:
            users[target].append(name)
    ready = [name for name, n in left.items() if n == 0]
    while ready:
        done = ready.pop()
        for user in users[done]:
            left[user] -= 1
            if left[user] == 0:
                ready.append(user)
    return [name for name in graph if left[name] > 0]


def _cycle_from(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """A cycle through ``start`` (names in order), if any."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for nxt in graph.get(name, ()):
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None
