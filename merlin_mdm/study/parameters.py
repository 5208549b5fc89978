"""Parameter combinations with Maestro semantics, plus crossed groups.

Parameters in one group are zipped (Maestro: the i-th values go together); groups are crossed. The default
group holds every parameter without a ``product`` key, so a plain Maestro spec expands exactly as Maestro does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from merlin_mdm.spec.model import Parameter

__all__ = ["Combo", "combinations", "format_value", "project"]


def format_value(value: object) -> str:
    """The text a value becomes in commands and labels (YAML true -> 'True', like Maestro)."""
    return str(value)


@dataclass(frozen=True)
class Combo:
    """One parameter combination, restricted to some parameters. ``items`` are sorted by name."""

    items: tuple[tuple[str, str, str], ...]  # (name, value text, label text)

    @property
    def names(self) -> frozenset[str]:
        """The parameter names in this combination."""
        return frozenset(name for name, _, _ in self.items)

    @property
    def label_string(self) -> str:
        """Maestro's combination string: labels sorted by parameter name, joined by '.'."""
        return ".".join(label for _, _, label in self.items)

    def tokens(self) -> dict[str, str]:
        """Token values: ``NAME`` -> value and ``NAME.label`` -> label."""
        out: dict[str, str] = {}
        for name, value, label in self.items:
            out[name] = value
            out[f"{name}.label"] = label
        return out


def _full_combo(params: Sequence[Parameter], indices: Sequence[int]) -> Combo:
    items = []
    for param, index in zip(params, indices, strict=True):
        value = format_value(param.values[index])
        items.append((param.name, value, param.label.replace("%%", value)))
    return Combo(tuple(sorted(items)))


def combinations(params: Sequence[Parameter], used: frozenset[str] | None = None) -> Iterator[Combo]:
    """Every combination: zip within a product group, cross product across groups (in spec order).

    ``used``: only the parameters a step uses, each of their combinations once, in the order their first full
    combination comes (the full product is never walked: 8 crossed parameters of 20 values are 25.6 billion
    combinations, a step using one of them has 20); one empty combination when it uses none."""
    if not params and used is None:
        return
    groups: dict[str, list[int]] = {}
    for i, param in enumerate(params):
        if used is None or param.name in used:
            groups.setdefault(param.product, []).append(i)
    members = [params[i] for group in groups.values() for i in group]
    axes = [range(len(params[group[0]].values)) for group in groups.values()]
    for choice in itertools.product(*axes):
        picks = dict(zip(groups, choice, strict=True))
        yield _full_combo(members, [picks[p.product] for p in members])


def project(combo: Combo, used: frozenset[str]) -> Combo:
    """The part of ``combo`` that a step uses."""
    return Combo(tuple(item for item in combo.items if item[0] in used))
