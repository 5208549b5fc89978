"""Study specs: load YAML with positions, build frozen dataclasses, validate everything at once. Pure.

The YAML loader, the builder and the checks are imported when a spec is first loaded, so that importing
the model (or a module that only needs it, like `status`) does not pay for them.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
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
from merlin_mdm.spec.variables import (
    expand_shell_variables,
    fill_load_time_variables,
    fill_raw_fields,
    load_time_values,
    shell_expanded,
)

if TYPE_CHECKING:
    from merlin_mdm.spec.checks import known_tokens, parent_name
    from merlin_mdm.spec.issues import IssueCollector

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


def parse_vars(items: Iterable[str]) -> dict[str, str]:
    """Parse ``--vars K=V`` items into a mapping (UsageError on a malformed item)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--vars expects KEY=VALUE, got '{item}'")
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
) -> LoadedSpec:
    """Load and validate the spec at ``path``; raises SpecError listing every problem.

    ``transform`` rewrites the built spec before the semantic checks, e.g. to take the parameters from a
    Maestro parameter generator (so commands may use parameters the YAML does not define). ``strict``
    turns warnings (such as an unknown ``$(TOKEN)`` close to a known one) into errors. ``batch_types``:
    the batch types to accept (default: every registered one).
    """
    from merlin_mdm.spec.loader import load_marked

    path = Path(path)
    data = load_marked(path)
    return _finish(data, path, path.read_text(encoding="utf-8"), overrides, batch_types, transform, strict)


def load_spec_text(
    text: str,
    path: Path | str = "spec.yaml",
    overrides: Mapping[str, str] | None = None,
    batch_types: Iterable[str] | None = None,
    transform: Callable[[Spec], Spec] | None = None,
    strict: bool = False,
) -> LoadedSpec:
    """Like :func:`load_spec` for text already in memory (``path`` names it and sets SPECROOT)."""
    from merlin_mdm.spec.loader import load_marked_text

    path = Path(path)
    return _finish(load_marked_text(text, str(path)), path, text, overrides, batch_types, transform, strict)


def _finish(data, path, text, overrides, batch_types, transform, strict) -> LoadedSpec:  # type: ignore[no-untyped-def]
    from merlin_mdm.spec.build import build_spec
    from merlin_mdm.spec.checks import DEFAULT_BATCH_TYPES, check_spec
    from merlin_mdm.spec.issues import IssueCollector

    issues = IssueCollector(str(path))
    expand_shell_variables(data, os.environ)
    overrides = {key: shell_expanded(value, os.environ) for key, value in (overrides or {}).items()}
    spec = _apply_overrides(build_spec(data, path, issues), overrides, issues)
    if fill_raw_fields(data, load_time_values(spec)):  # numbers and batch fields given as $(VAR): build again
        issues = IssueCollector(str(path))
        spec = _apply_overrides(build_spec(data, path, issues), overrides, issues)
    spec = fill_load_time_variables(spec)
    if transform is not None:
        spec = transform(spec)
    check_spec(spec, issues, DEFAULT_BATCH_TYPES if batch_types is None else batch_types)
    if strict:
        issues.promote_warnings()
    issues.raise_if_errors()
    return LoadedSpec(spec, tuple(issues.warnings), text)


def _apply_overrides(spec: Spec, overrides: Mapping[str, str], issues: IssueCollector) -> Spec:
    if not overrides:
        return spec
    variables = dict(spec.env.variables)
    for key in overrides:
        if key not in variables:
            issues.warn((0, 0), "env.variables", f"--vars {key}=... adds a variable the spec does not define")
    variables.update(overrides)
    env = dataclasses.replace(spec.env, variables=tuple(variables.items()), from_vars=tuple(overrides))
    return dataclasses.replace(spec, env=env)
