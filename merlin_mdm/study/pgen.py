"""Maestro parameter generators (`--pgen file.py --pargs KEY:VALUE`): maestrowf loads the user's file."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from merlin_mdm.errors import UsageError
from merlin_mdm.spec import Parameter, Spec

__all__ = ["apply_pgen", "parse_pargs"]


def parse_pargs(items: Iterable[str]) -> dict[str, str]:
    """``KEY:VALUE`` items (Maestro's --pargs format) to a dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise UsageError(f"--pargs expects KEY:VALUE, got '{item}'")
        out[key] = value
    return out


def apply_pgen(spec: Spec, pgen: Path, pargs: dict[str, str]) -> Spec:
    """Replace the spec's parameters by those of the generator ``get_custom_generator(env, **pargs)`` builds."""
    module_spec = importlib.util.spec_from_file_location("merlin_mdm_user_pgen", pgen)
    if module_spec is None or module_spec.loader is None or not pgen.exists():
        raise UsageError(f"--pgen {pgen}: no such Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        generator = module.get_custom_generator(None, **pargs)
    except AttributeError:
        raise UsageError(f"--pgen {pgen}: define get_custom_generator(env, **kwargs) returning a "
                         "maestrowf ParameterGenerator") from None
    except Exception as exc:  # the user's code: report, never a traceback
        raise UsageError(f"--pgen {pgen} raised {type(exc).__name__}: {exc}") from None
    params = []
    for name, values in generator.parameters.items():
        label = generator.labels.get(name, f"{name}.%%")
        params.append(Parameter(name, tuple(values), label))
    return dataclasses.replace(spec, parameters=tuple(params))
