"""Maestro parameter generators (`--pgen file.py --pargs KEY:VALUE`): maestrowf loads the user's file."""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from merlin_mdm.errors import UsageError
from merlin_mdm.spec import Parameter, Spec
from merlin_mdm.spec.tokens import tokens_in

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


def _study_environment(spec: Spec) -> object:
    """What Maestro passes as ``env``: a StudyEnvironment with the spec's variables (None without maestrowf)."""
    try:
        with warnings.catch_warnings():  # maestrowf 1.2 imports with the deprecated load_module()
            warnings.simplefilter("ignore", DeprecationWarning)
            from maestrowf.datastructures.core import StudyEnvironment
            from maestrowf.datastructures.environment import Variable
    except ImportError:
        return None
    env = StudyEnvironment()
    for name, value in (("SPECROOT", str(spec.root)), *spec.env.variables):
        if env.find(name) is None:
            env.add(Variable(name, value))
    return env


def _load_generator(spec: Spec, pgen: Path, pargs: dict[str, str]) -> Any:
    module_spec = importlib.util.spec_from_file_location("merlin_mdm_user_pgen", pgen)
    if module_spec is None or module_spec.loader is None or not pgen.is_file():
        raise UsageError(f"--pgen {pgen}: no such Python file")
    module = importlib.util.module_from_spec(module_spec)
    kwargs = {"SPECROOT": str(spec.root), **pargs}  # Maestro adds SPECROOT to the pargs
    try:
        module_spec.loader.exec_module(module)
        make = module.get_custom_generator
    except AttributeError:
        raise UsageError(f"--pgen {pgen}: define get_custom_generator(env, **kwargs) returning a "
                         "maestrowf ParameterGenerator") from None
    except (Exception, SystemExit) as exc:  # the user's code: report, never a traceback or its exit code
        raise UsageError(f"--pgen {pgen} raised {type(exc).__name__}: {exc}") from None
    try:
        return make(_study_environment(spec), **kwargs)
    except (Exception, SystemExit) as exc:
        raise UsageError(f"--pgen {pgen}: get_custom_generator raised {type(exc).__name__}: {exc}") from None


def apply_pgen(spec: Spec, pgen: Path, pargs: dict[str, str]) -> Spec:
    """Replace the spec's parameters by those of the generator ``get_custom_generator(env, **pargs)`` builds."""
    generator = _load_generator(spec, pgen, pargs)
    values = getattr(generator, "parameters", None)
    labels = getattr(generator, "labels", None)
    if not isinstance(values, Mapping) or not isinstance(labels, Mapping):
        raise UsageError(f"--pgen {pgen}: get_custom_generator must return a maestrowf ParameterGenerator, "
                         f"not {type(generator).__name__}")
    params = []
    for name, vals in values.items():
        label = str(labels.get(name) or f"{name}.%%")
        if not isinstance(vals, (list, tuple)) or not vals or "%%" not in label:
            raise UsageError(f"--pgen {pgen}: parameter '{name}' needs a non-empty list of values and a label "
                             f"with %% (got {vals!r}, '{label}')")
        params.append(Parameter(str(name), tuple(vals), label))
    lengths = {p.name: len(p.values) for p in params}
    if len(set(lengths.values())) > 1:
        raise UsageError(f"--pgen {pgen}: a ParameterGenerator's parameters are zipped and must have equally "
                         f"long value lists ({', '.join(f'{k}: {n}' for k, n in lengths.items())})")
    _check_nothing_dropped(spec, pgen, {p.name for p in params})
    return dataclasses.replace(spec, parameters=tuple(params))


def _check_nothing_dropped(spec: Spec, pgen: Path, generated: set[str]) -> None:
    """A parameter of the spec that its steps use must come from the generator too.

    Otherwise its ``$(NAME)`` would reach the shell, which runs it as a command substitution.
    """
    users: dict[str, list[str]] = {}
    for step in spec.steps:
        for token in tokens_in(f"{step.run.cmd} {step.run.restart or ''}"):
            users.setdefault(token.split(".")[0], []).append(step.name)
    dropped = [p.name for p in spec.parameters if p.name not in generated and p.name in users]
    if dropped:
        where = "; ".join(f"{name} (used by {', '.join(dict.fromkeys(users[name]))})" for name in dropped)
        raise UsageError(f"--pgen {pgen} does not set the spec's parameter(s) {where}: the generator replaces "
                         "global.parameters, so it must give every parameter the steps use (with "
                         "specs/seed_sets.py: one --pargs NAME:V1,V2,... each)")
