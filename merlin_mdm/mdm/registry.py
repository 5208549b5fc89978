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
        every = " (and blocks=N, semi-autoregressive, which every sampler takes)" if kind == "sampler" else ""
        raise MdmError(f"{kind} {name!r} has no knob {', '.join(unknown)}; valid knobs: {listed}{every}")
    for knob, value in knobs.items():
        _check_type(kind, name, knob, value, _defaults(cls).get(knob))
    try:
        return cls(**knobs)
    except (TypeError, ValueError) as err:  # a value of a type no default tells
        raise MdmError(f"{kind} {name!r}: bad knobs {dict(knobs)}: {err}") from err


def _defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    return {p.name: p.default for p in params if p.default is not p.empty}


def _check_type(kind: str, name: str, knob: str, value: Any, default: Any) -> None:
    """A knob's value must have its default's type: a number for a number (an integer for an integer), a
    boolean for a boolean; knobs without a default, or defaulting to None or text, take what they are given."""
    if default is None or isinstance(default, str):
        return
    if isinstance(default, bool):
        ok, wanted = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, wanted = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    else:
        return
    if not ok:
        raise MdmError(f"{kind} {name!r}: knob {knob} expects {wanted} (default {default!r}), got {value!r}")
