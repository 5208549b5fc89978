"""A batch block's scheduler options (`slurm_args`, `lsf_args`) read as (option, value) pairs. Pure."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

__all__ = ["OPTION_KEYS", "owned_option", "parse_batch_options"]

OPTION_KEYS = ("slurm_args", "lsf_args")  # passed to the scheduler as written


def parse_batch_options(raw: object) -> tuple[tuple[str, str], ...]:
    """Options given as text such as ``--mem=0 --exclusive -p big``, or a mapping, as (option, value) pairs: a
    long option without its dashes (``("mem", "0")``, a flag with ``""``), a short one with its dash (``("-p",
    "big")``). Nothing is dropped.

    Raises:
        ValueError: a token that is no option and follows none, or text shlex cannot split (an open quote).
    """
    if isinstance(raw, Mapping):
        return tuple((str(k).lstrip("-") if str(k).startswith("--") or len(str(k)) > 2 else str(k),
                      "" if v is None or v is True else str(v)) for k, v in raw.items())
    try:
        tokens = shlex.split(str(raw or ""))
    except ValueError as exc:  # "No closing quotation"
        raise ValueError(f"{raw!r} cannot be split into options: {str(exc).lower()}") from None
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-"):
            raise ValueError(f"{raw!r}: {token!r} is no option and follows none")
        has_value = "=" not in token and i + 1 < len(tokens) and not tokens[i + 1].startswith("-")
        value = tokens[i + 1] if has_value else ""
        if token.startswith("--"):
            key, _, inline = token[2:].partition("=")
            out.append((key, inline or value))
        else:
            out.append((token, value))
        i += 2 if has_value else 1
    return tuple(out)


# options the batch block's own fields set: given again in `*_args`, the scheduler takes the last one written,
# and the workers plan against the field's (a `--time=1:00` beside `walltime: 5:00` was killed at one minute
# by Slurm while the workers planned their stop for five)
_OWNED = {
    "slurm_args": {"time": "walltime", "-t": "walltime", "nodes": "nodes", "-N": "nodes"},
    "lsf_args": {"-W": "walltime", "-nnodes": "nodes"},
}


def owned_option(key: str, options: tuple[tuple[str, str], ...], walltime: bool = True) -> str | None:
    """A line refusing the first of ``options`` (of the batch block's ``key``) that a field of the block sets
    (``nodes``, always written; ``walltime`` when ``walltime``: without one no time directive is written, and the
    workers read the job's end from the scheduler); None when there is none. ``-t2:00:00`` and ``-N2`` count."""
    for option, _ in options:
        field = _owner(_OWNED.get(key, {}), option)
        if field is None or (field == "walltime" and not walltime):
            continue
        written = option if option.startswith("-") else f"--{option}"
        return (f"{written} sets what `{field}:` sets (the workers plan against the {field} given there): give "
                f"it as `{field}:` of the batch block (or `merlin-mdm launch --{field}`), not in {key}")
    return None


def _owner(owned: Mapping[str, str], option: str) -> str | None:
    """The field ``option`` sets: by its name, or a short option with its value attached (``-N2``)."""
    if option in owned:
        return owned[option]
    short = option[:2]
    if len(short) == 2 and short[0] == "-" and short[1] != "-" and option[2:3].isdigit():
        return owned.get(short)
    return None
