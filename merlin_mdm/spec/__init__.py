"""Study specs: load YAML with positions, build frozen dataclasses, validate everything at once. Pure.

The YAML loader, the builder and the checks are imported when a spec is first loaded, so that importing
the model (or a module that only needs it, like `status`) does not pay for them.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merlin_mdm.errors import SpecIssue, UsageError
from merlin_mdm.spec.exitcodes import EXIT_CODE_TOKENS, ExitCode
from merlin_mdm.spec.model import (
    BatchConfig,
    Dependency,
    Description,
    Environment,
    Parameter,
    Resources,
    SamplesConfig,
    Spec,
    Step,
    StepRun,
    Worker,
)
from merlin_mdm.spec.tokens import RESERVED_NAMES
from merlin_mdm.spec.variables import (
    expand_shell_variables,
    fill_load_time_variables,
    fill_raw_fields,
    load_time_values,
    shell_expanded,
)

if TYPE_CHECKING:
    from merlin_mdm.spec.checks import known_tokens, parent_name

_LAZY = {"known_tokens": "merlin_mdm.spec.checks", "parent_name": "merlin_mdm.spec.checks"}

__all__ = [
    "EXIT_CODE_TOKENS",
    "BatchConfig",
    "Dependency",
    "Description",
    "Environment",
    "ExitCode",
    "LoadedSpec",
    "Parameter",
    "Resources",
    "SamplesConfig",
    "Spec",
    "Step",
    "StepRun",
    "Worker",
    "known_tokens",
    "load_spec",
    "load_spec_text",
    "parent_name",
    "parse_vars",
    "with_samples_file",
]


@dataclass(frozen=True)
class LoadedSpec:
    """A valid spec and the warnings found while loading it."""

    spec: Spec
    warnings: tuple[SpecIssue, ...]
    text: str  # the original file contents, kept for provenance
    notes: tuple[SpecIssue, ...] = ()  # what runs here but Merlin 1.13 refuses (`validate` shows them)


def parse_vars(items: Iterable[str]) -> dict[str, str]:
    """Parse ``--vars K=V`` items into a mapping (UsageError on a malformed item)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--vars expects KEY=VALUE, got '{item}'")
        if key.strip() in RESERVED_NAMES:
            raise UsageError(f"--vars {key.strip()}: a reserved token cannot be overridden (merlin-mdm fills "
                             f"$({key.strip()}) in itself, as Merlin does)")
        out[key.strip()] = value
    return out


def with_samples_file(spec: Spec, path: Path | str) -> Spec:
    """``--samplesfile``: the spec with ``merlin.samples.file`` replaced (and no generate command to run).

    Meant as ``load_spec(..., transform=lambda s: with_samples_file(s, path))`` so that validation checks
    the given file instead of the spec's own, which may not exist yet.
    """
    if spec.samples is None:
        raise UsageError("--samplesfile given, but the spec has no merlin.samples block (column_labels)")
    samples = dataclasses.replace(spec.samples, file=str(Path(path).resolve()), generate_cmd=None)
    return dataclasses.replace(spec, samples=samples)


def __getattr__(name: str) -> Any:
    """The names re-exported from the checks module, imported on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_spec(
    path: Path | str,
    overrides: Mapping[str, str] | None = None,
    batch_types: Iterable[str] | None = None,
    transform: Callable[[Spec], Spec] | None = None,
    strict: bool = False,
    to_run: bool = False,
) -> LoadedSpec:
    """Load and validate the spec at ``path``; raises SpecError listing every problem.

    ``transform`` rewrites the built spec before the semantic checks, e.g. to take the parameters from a
    Maestro parameter generator (so commands may use parameters the YAML does not define). ``strict``
    turns warnings (such as an unknown ``$(TOKEN)`` close to a known one) into errors. ``batch_types``:
    the batch types to accept (default: every registered one). ``to_run``: the spec is loaded to make a
    workspace (`run`, `validate`), so OUTPUT_PATH must be a folder one can be made in; commands that only find
    or read a study (`status SPEC`, `dag`, `run-workers`) work with a spec in a folder they may not write.
    """
    from merlin_mdm.spec.loader import load_marked

    path = Path(path)
    data = load_marked(path)
    return _finish(data, path, path.read_text(encoding="utf-8"), overrides, batch_types, transform,
                   (strict, to_run))


def load_spec_text(
    text: str,
    path: Path | str = "spec.yaml",
    overrides: Mapping[str, str] | None = None,
    batch_types: Iterable[str] | None = None,
    transform: Callable[[Spec], Spec] | None = None,
    strict: bool = False,
    to_run: bool = False,
) -> LoadedSpec:
    """Like :func:`load_spec` for text already in memory (``path`` names it and sets SPECROOT)."""
    from merlin_mdm.spec.loader import load_marked_text

    path = Path(path)
    return _finish(load_marked_text(text, str(path)), path, text, overrides, batch_types, transform,
                   (strict, to_run))


def _finish(data, path, text, overrides, batch_types, transform, modes) -> LoadedSpec:  # type: ignore[no-untyped-def]
    from merlin_mdm.spec.build import build_spec
    from merlin_mdm.spec.checks import DEFAULT_BATCH_TYPES, check_spec
    from merlin_mdm.spec.issues import IssueCollector

    issues = IssueCollector(str(path))
    expand_shell_variables(data, os.environ)
    overrides = {key: shell_expanded(value, os.environ) for key, value in (overrides or {}).items()}
    spec = _apply_overrides(build_spec(data, path, issues), overrides, text)
    if fill_raw_fields(data, load_time_values(spec)):  # numbers and batch fields given as $(VAR): build again
        issues = IssueCollector(str(path))
        spec = _apply_overrides(build_spec(data, path, issues), overrides, text)
    spec = fill_load_time_variables(spec)
    if transform is not None:
        spec = transform(spec)
    strict, to_run = modes
    check_spec(spec, issues, DEFAULT_BATCH_TYPES if batch_types is None else batch_types, to_run)
    if strict:
        issues.promote_warnings()
    issues.raise_if_errors()
    return LoadedSpec(spec, tuple(issues.warnings), text, tuple(issues.notes))


def _apply_overrides(spec: Spec, overrides: Mapping[str, str], text: str) -> Spec:
    """``--vars``: each name replaces the value of the env variable or label of that name (both, when it is
    both), as Merlin's ``replace_override_vars``; a name the spec (or another --vars value) only uses as
    ``$(NAME)`` becomes a variable.

    Raises:
        UsageError: a name the spec neither defines nor uses (Merlin: "Command line override variable 'NAME' not
            found in spec file"): a misspelt --vars would run the study with the file's value.
    """
    if not overrides:
        return spec
    _check_override_names(spec, overrides, text)
    variables, labels = dict(spec.env.variables), dict(spec.env.labels)
    for key, value in overrides.items():
        if key in labels:
            labels[key] = value
        if key in variables or key not in labels:
            variables[key] = value
    env = dataclasses.replace(spec.env, variables=tuple(variables.items()), labels=tuple(labels.items()),
                              from_vars=tuple(overrides))
    return dataclasses.replace(spec, env=env)


def _check_override_names(spec: Spec, overrides: Mapping[str, str], text: str) -> None:
    from merlin_mdm.spec.issues import did_you_mean
    from merlin_mdm.spec.tokens import tokens_in

    defined = [*dict(spec.env.variables), *(name for name, _ in spec.env.labels)]
    parameters = {p.name for p in spec.parameters}
    # the spec's own $(NAME)s, and those of the other --vars values (`--vars A='$(B)' B=1`)
    used = {name for name in tokens_in("\n".join([text, *overrides.values()])) if name not in parameters}
    unknown = [key for key in overrides if key not in defined and key not in used]
    if not unknown:
        return
    given = [key for key in unknown if key in parameters]
    if given:
        raise UsageError(f"--vars {given[0]}={overrides[given[0]]}: {given[0]} is a parameter of global.parameters "
                         f"in {spec.path}, and --vars sets env.variables and env.labels only: edit the parameter's "
                         "values, or give them with --pgen")
    listed = ", ".join(dict.fromkeys(defined)) or "none"
    names = " ".join(shlex.quote(f"{key}={overrides[key]}") for key in unknown)
    hint = did_you_mean(unknown[0], defined) if len(unknown) == 1 else ""
    what = "is no variable or label" if len(unknown) == 1 else "are no variables or labels"
    raise UsageError(f"--vars {names}: {', '.join(unknown)} {what} of {spec.path} and no $(...) it uses{hint}; "
                     f"its env.variables and env.labels: {listed}. Add it under env.variables to set it from the "
                     "command line")
