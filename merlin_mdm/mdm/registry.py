"""Construction of registered strategy classes (tasks, samplers) from keyword knobs, with friendly errors."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from merlin_mdm.errors import MdmError

__all__ = ["build", "knob_names"]

T = TypeVar("T")


def knob_names(cls: type) -> list[str]:
    """Return the keyword knobs ``cls`` accepts (its ``__init__`` parameters except ``self``).

    Args:
        cls: a registered class.

    Returns:
        The knob names in declaration order.
    """
    params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def build(kind: str, registry: Mapping[str, type[T]], name: str, knobs: Mapping[str, Any]) -> T:
    """Instantiate ``registry[name](**knobs)``; unknown names or knobs raise :class:`MdmError` listing valid ones.

    Args:
        kind: what is being built, for messages (``task``, ``sampler``).
        registry: name -> class.
        name: the registered name.
        knobs: keyword arguments for the constructor.

    Returns:
        The new instance.

    Raises:
        MdmError: unknown name or knob.
    """
    if name not in registry:
        raise MdmError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(registry))}")
    cls = registry[name]
    valid = knob_names(cls)
    unknown = sorted(set(knobs) - set(valid))
    if unknown:
        listed = ", ".join(valid) if valid else "(none)"
        raise MdmError(f"{kind} {name!r} has no knob {', '.join(unknown)}; valid knobs: {listed}")
    try:
        return cls(**knobs)
    except TypeError as err:  # wrong knob value types reach here
        raise MdmError(f"{kind} {name!r}: bad knobs {dict(knobs)}: {err}") from err
