"""The spec's variables filled in where they are read before any study exists. Pure.

Merlin 1.13 replaces every ``$(VAR)`` of `env.variables` and `env.labels` (after ``--vars``) throughout the spec's
text as it loads it, for `run-workers`, `queue-info` and `purge` (``get_spec_with_expansion``) as for `run`
(``MerlinStudy.get_expanded_spec``). Most fields are filled in later here, with the study's own tokens (commands,
paths); these are the ones read before a study exists, so they are filled in once, when the spec is loaded, and
every command (run's plan, run-workers, launch, stop-workers, queue-info, purge, validate) sees the same values:

- ``description.name`` (the workspace's name),
- each step's ``run.task_queue`` (the queue its tasks are sent to, recorded in the plan),
- each worker of ``merlin.resources.workers``: its name (the mapping key), ``args``, ``steps`` and ``machines``;
- the fields read as numbers or checked as they are read (:func:`fill_raw_fields`, on the YAML itself, before
  the spec is built): the `batch` blocks, a step's run keys other than its commands, a worker's `nodes` and
  `merlin.samples.level_max_dirs`; a value that becomes a number is read as one (``procs: $(P)`` with ``P: 4``
  is the number 4), as Merlin, which fills the spec's text and parses it again.

A token left in one of them after this is reported by the checks, at its spec line.

Before all that, as Merlin's ``expand_env_vars`` and ``determine_user_variables``, the shell's own variables
(``$HOME``, ``${SCRATCH}``) and a leading ``~`` are filled into every text of the spec but the commands (`cmd`
and `restart` keys, which the shell reads), from the environment of the command that loads it
(:func:`expand_shell_variables`): ``OUTPUT_PATH: $SCRATCH/studies`` is a folder under $SCRATCH, not a folder
named ``$SCRATCH``. A name the environment lacks stays as written.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from merlin_mdm.spec.loader import MarkedDict, load_scalar
from merlin_mdm.spec.model import Spec, Step, Worker
from merlin_mdm.spec.tokens import resolve_ordered, substitute

__all__ = [
    "expand_shell_variables",
    "fill_load_time_variables",
    "fill_raw_fields",
    "load_time_values",
    "shell_expanded",
]

RUN_TEXT_KEYS = frozenset({"cmd", "restart", "pre", "post", "task_queue"})
"""Run keys filled later: with the study's own tokens (commands) or with the workers' fields (the queue)."""


def load_time_values(spec: Spec) -> dict[str, str]:
    """The tokens with a value when the spec is loaded: SPECROOT, the env variables (with ``--vars``) and labels.

    A value that still holds a token after resolution (a label built from a parameter) keeps it, as in Merlin.
    """
    known = {"SPECROOT": str(spec.root)}
    return {**known, **resolve_ordered((*spec.env.variables, *spec.env.labels), known)}


def fill_load_time_variables(spec: Spec) -> Spec:
    """``spec`` with the load-time values filled into its study name, task queues and workers."""
    values = load_time_values(spec)
    description = dataclasses.replace(spec.description, name=substitute(spec.description.name, values))
    steps = tuple(_step(step, values) for step in spec.steps)
    workers = tuple(_worker(worker, values) for worker in spec.resources.workers)
    resources = dataclasses.replace(spec.resources, workers=workers)
    return dataclasses.replace(spec, description=description, steps=steps, resources=resources)


def _step(step: Step, values: Mapping[str, str]) -> Step:
    queue = substitute(step.run.task_queue, values)
    return (
        step
        if queue == step.run.task_queue
        else dataclasses.replace(step, run=dataclasses.replace(step.run, task_queue=queue))
    )


def _worker(worker: Worker, values: Mapping[str, str]) -> Worker:
    return dataclasses.replace(
        worker,
        name=substitute(worker.name, values),
        args=substitute(worker.args, values),
        steps=tuple(substitute(s, values) for s in worker.steps),
        machines=tuple(substitute(m, values) for m in worker.machines),
        key=worker.spec_key,
    )


def fill_raw_fields(data: MarkedDict, values: Mapping[str, str]) -> bool:
    """Fill ``values`` into the YAML fields that are read before any other filling (see the module); True when
    one changed. The YAML is changed in place: the spec built from it again sees the values, at the same lines."""
    changed = _fill(data, "batch", values)
    study = data.get("study")
    for entry in study if isinstance(study, list) else ():
        run = entry.get("run") if isinstance(entry, dict) else None
        if isinstance(run, dict):
            changed |= any([_fill(run, key, values) for key in list(run) if key not in RUN_TEXT_KEYS])
    merlin = data.get("merlin")
    resources = merlin.get("resources") if isinstance(merlin, dict) else None
    workers = resources.get("workers") if isinstance(resources, dict) else None
    for worker in workers.values() if isinstance(workers, dict) else ():
        if isinstance(worker, dict):
            changed |= _fill(worker, "nodes", values) | _fill(worker, "batch", values)
    samples = merlin.get("samples") if isinstance(merlin, dict) else None
    if isinstance(samples, dict):
        changed |= _fill(samples, "level_max_dirs", values)
    return changed


def _fill(parent: dict[str, Any] | list[Any], key: Any, values: Mapping[str, str]) -> bool:
    """Fill ``values`` into ``parent[key]`` in place; a text that becomes a number or a boolean is read as one,
    as Merlin's second parse of the filled text does. True when something changed."""

    def filled(text: str) -> Any:
        new = substitute(text, values)
        return text if new == text else load_scalar(new)

    return _replace_texts(parent, key, filled, frozenset(), set())


def _replace_texts(parent: dict[str, Any] | list[Any], key: Any, replace: Callable[[str], Any],
                   skip: frozenset[str], seen: set[int]) -> bool:
    """``parent[key]`` with each text in it replaced by ``replace(text)``, in place, through mappings and lists
    but not under the mapping keys ``skip``; each mapping or list once, however often YAML aliases it (``seen``:
    a billion-laughs spec costs its size, not its expansion). True when something changed."""
    if isinstance(parent, dict) and (key not in parent or key in skip):
        return False
    value = parent[key]
    if isinstance(value, (dict, list)):
        if id(value) in seen:
            return False
        seen.add(id(value))
        keys = list(value) if isinstance(value, dict) else range(len(value))
        return any([_replace_texts(value, k, replace, skip, seen) for k in keys])
    if not isinstance(value, str):
        return False
    new = replace(value)
    if new is value or new == value:
        return False
    parent[key] = new
    return True


SHELL_KEYS = frozenset({"cmd", "restart"})
"""Keys whose text the shell reads when the task runs: their shell variables are the shell's to fill."""
_SHELL_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)  # os.path.expandvars' own pattern


def expand_shell_variables(node: MarkedDict, environ: Mapping[str, str]) -> MarkedDict:
    """``node`` (the spec's YAML, changed in place) with ``environ``'s variables and a leading ``~`` filled into
    every text but those under :data:`SHELL_KEYS`, as Merlin does when it loads a spec."""
    seen = {id(node)}
    for key in list(node):
        _replace_texts(node, key, lambda text: shell_expanded(text, environ), SHELL_KEYS, seen)
    return node


def shell_expanded(text: str, environ: Mapping[str, str]) -> str:
    """``os.path.expandvars(os.path.expanduser(text))`` with ``environ`` for the environment."""
    if text.startswith("~"):
        head, sep, rest = text.partition("/")
        home = environ.get("HOME") if head == "~" else None
        expanded = home if home is not None else os.path.expanduser(head)
        text = ((expanded.rstrip("/") + sep + rest) or "/") if expanded != head else text  # HOME=/: "~" is "/"
    if "$" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        name = match.group(1).removeprefix("{").removesuffix("}")
        return environ.get(name, match.group(0))

    return _SHELL_VARIABLE.sub(value, text)
