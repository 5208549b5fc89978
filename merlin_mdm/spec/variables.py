"""The spec's variables filled in where they are read before any study exists. Pure.

Merlin 1.13 replaces every ``$(VAR)`` of `env.variables` and `env.labels` (after ``--vars``) throughout the spec's
text as it loads it, for `run-workers`, `queue-info` and `purge` (``get_spec_with_expansion``) as for `run`
(``MerlinStudy.get_expanded_spec``). Most fields are filled in later here, with the study's own tokens (commands,
paths); these are the ones read before a study exists, so they are filled in once, when the spec is loaded, and
every command (run's plan, run-workers, launch, stop-workers, queue-info, purge, validate) sees the same values:

- ``description.name`` (the workspace's name),
- each step's ``run.task_queue`` (the queue its tasks are sent to, recorded in the plan),
- each worker of ``merlin.resources.workers``: its name (the mapping key), ``args``, ``steps`` and ``machines``.

A token left in one of them after this is reported by the checks, at its spec line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from merlin_mdm.spec.model import Spec, Step, Worker
from merlin_mdm.spec.tokens import resolve_ordered, substitute

__all__ = ["fill_load_time_variables", "load_time_values"]


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
