"""Worker launch lines and broker inspection for the distributed CLI commands.

Pure where it can be (``worker_commands``), and otherwise thin calls into Celery's own control API.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from merlin_mdm.backends.celery.broker import QUEUE_SUFFIXES, queue_keys
from merlin_mdm.backends.celery.liveness import SPEC_ENV
from merlin_mdm.config import AppConfig
from merlin_mdm.errors import UsageError
from merlin_mdm.spec import Spec
from merlin_mdm.spec.worker_args import split_worker_args

__all__ = ["COLD_STOP_SIGNAL", "SPEC_ENV", "WORKER_MODULE", "WorkerCommand", "active_queues", "check_study_queues",
           "group_matches", "queue_sizes", "shutdown_workers", "spec_queues", "spec_workers", "worker_commands"]

WORKER_MODULE = "merlin_mdm.backends.celery.worker"
PIDBOX_BINDINGS = "_kombu.binding.celery.pidbox"  # kombu's set of the workers' control queues (Celery's default)
# Asks a worker for Celery's cold shutdown (its running units given back), as SIGQUIT does. A launcher passes it
# on to the worker, where srun (Slurm 22.05, measured) takes SIGQUIT and SIGTERM to SIGKILL its whole step at
# once: the units in hand would stay held by the broker until the visibility timeout.
COLD_STOP_SIGNAL = signal.SIGUSR2
DEFAULT_WORKER = "default_worker"


@dataclass(frozen=True)
class WorkerCommand:
    """One `celery worker` to start."""

    name: str  # the worker group: its key in merlin.resources.workers
    queues: tuple[str, ...]
    argv: tuple[str, ...]
    node: str = ""  # the Celery node name given with -n, e.g. ``sim.12345@%h``

    def shell(self) -> str:
        """The command as one shell line (no secret is ever part of it)."""
        return shlex.join(self.argv)


def spec_queues(spec: Spec, steps: Sequence[str] = ()) -> dict[str, str]:
    """Step name -> its task_queue (only ``steps`` when given)."""
    wanted = set(steps)
    unknown = wanted - {s.name for s in spec.steps}
    if unknown:
        raise UsageError(f"no step(s) {', '.join(sorted(unknown))} in {spec.path} "
                         f"(steps: {', '.join(s.name for s in spec.steps)})")
    return {s.name: s.run.task_queue for s in spec.steps if not wanted or s.name in wanted}


def check_study_queues(spec: Spec, plan_queues: Sequence[str], workspace: str) -> None:
    """The study's tasks go to the queues its plan recorded when it was run; the spec as loaded now must name the
    same, or its workers would wait on other queues (a study run with `--vars Q=alt`, workers started without).

    Raises:
        UsageError: a queue of the study that no step of the spec has now.
    """
    known = {s.run.task_queue for s in spec.steps}
    missing = sorted(set(plan_queues) - known)
    if missing:
        raise UsageError(f"the study in {workspace} sends its tasks to queue(s) {', '.join(missing)}, which no step "
                         f"of {spec.path} has as loaded now ({', '.join(sorted(known))}): was it run with --vars? "
                         f"Give the same --vars here (the first line of {workspace}/merlin_info/*.partial.yaml "
                         "names them)")


def worker_commands(spec: Spec, steps: Sequence[str] = (), extra_args: str = "",
                    warn: Any = None, only: Sequence[str] = (), suffix: str = "") -> list[WorkerCommand]:
    """The workers `merlin.resources.workers` describes, plus a default one for steps no worker claims.

    ``only`` keeps the named worker groups (a UsageError names the known ones when one is unknown). ``suffix``
    makes the node names unique (``GROUP.SUFFIX@%h``; `run-workers` gives its pid): two studies' groups of one
    name on one machine were one Celery node (``default_worker@host``), and each command reached both.
    """
    try:
        split_worker_args(extra_args)
    except ValueError as exc:
        raise UsageError(f"--worker-args: {exc}") from None
    every = _all_worker_commands(spec, steps, extra_args, warn, suffix)
    if not only:
        return every
    unknown = sorted(set(only) - {c.name for c in every})
    if unknown:
        raise UsageError(f"no worker(s) {', '.join(unknown)} for {spec.path} "
                         f"(workers: {', '.join(c.name for c in every)})")
    return [c for c in every if c.name in only]


def _all_worker_commands(spec: Spec, steps: Sequence[str], extra_args: str, warn: Any,
                         suffix: str) -> list[WorkerCommand]:
    queues = spec_queues(spec, steps)
    claimed: set[str] = set()
    out: list[WorkerCommand] = []
    seen_queues: dict[str, str] = {}
    for worker in spec.resources.workers:
        names = list(queues) if "all" in worker.steps else [s for s in worker.steps if s in queues]
        if not names:
            continue
        claimed.update(names)
        mine = tuple(dict.fromkeys(queues[s] for s in names))
        for q in mine:
            if q in seen_queues and not spec.resources.overlap:
                raise UsageError(f"workers {seen_queues[q]} and {worker.name} both consume queue '{q}' "
                                 "but merlin.resources.overlap is false")
            seen_queues.setdefault(q, worker.name)
        out.append(_command(worker.name, mine, worker.args, extra_args, suffix))
    rest = [s for s in queues if s not in claimed]
    if rest:
        if warn is not None:
            warn(f"warning: no worker in merlin.resources.workers claims step(s) {', '.join(rest)}; "
                 f"starting '{DEFAULT_WORKER}' for them")
        out.append(_command(DEFAULT_WORKER, tuple(dict.fromkeys(queues[s] for s in rest)), "", extra_args, suffix))
    return out


def _command(name: str, queues: tuple[str, ...], args: str, extra: str, suffix: str) -> WorkerCommand:
    node = f"{name}.{suffix}@%h" if suffix else f"{name}@%h"
    argv = [sys.executable, "-m", "celery", "-A", WORKER_MODULE, "worker", "-n", node,
            "-Q", ",".join(queues), "--without-gossip", "--without-mingle", "-O", "fair",
            *_tilde(split_worker_args(args)), *_tilde(split_worker_args(extra))]  # checked before (validate, above)
    return WorkerCommand(name, queues, tuple(argv), node)


def spec_workers(config: AppConfig, spec: Spec, spec_path: str, workers: Iterable[str]) -> list[str]:
    """Those of ``workers`` (answering node names) that are of ``spec``'s worker groups (GROUP.PID@host, or
    GROUP.JOBID.PID@host in an allocation): those whose beat names the spec file ``spec_path`` (absolute), and those
    of its group names whose beat names no spec (started by hand from `run-workers --echo`). A group of the same
    name that another spec's `run-workers` started is not the spec's."""
    from merlin_mdm.backends.celery.liveness import live_worker_entries

    groups = [cmd.name for cmd in worker_commands(spec)]
    beats = live_worker_entries(config)
    return [w for w in workers if any(group_matches(g, w) for g in groups)
            and beats.get(w, {}).get("spec") in (None, spec_path)]


def group_matches(pattern: str, worker: str) -> bool:
    """Whether the worker (Celery node name) ``worker`` matches the glob ``pattern``: its full name, or its group
    name (``default_worker`` for ``default_worker.12345@host``, as Merlin's users select workers by the name their
    spec gives them)."""
    return any(fnmatch.fnmatchcase(worker, p) for p in (pattern, f"{pattern}@*", f"{pattern}.*@*"))


def _tilde(words: Sequence[str]) -> list[str]:
    """A word that starts with ``~`` names a home folder, as the shell through which Merlin starts its workers
    reads it (``--logfile ~/w.log``); no shell stands between the spec and Celery here."""
    return [os.path.expanduser(w) if w.startswith("~") else w for w in words]


def active_queues(config: AppConfig, timeout: float = 1.0, quick: bool = False) -> dict[str, list[str]]:
    """Worker name -> the queues it consumes, from every worker that answers within ``timeout``.

    The question is broadcast, and the answers are gathered for the whole ``timeout``. ``quick`` stops as soon
    as every worker that ever declared its control queue on this broker (kombu's bindings: a worker stopped
    cleanly removes its own, one killed leaves it) has answered, and asks nobody when there is none: a few
    milliseconds instead of the timeout while every such worker lives. For what `status` shows; the checks that
    keep a study from running twice wait the whole timeout, in case a worker is missing from the bindings.
    """
    from merlin_mdm.backends.celery.app import make_app

    expected = len(_declared_workers(config)) if quick else None
    if expected == 0:
        return {}
    app = make_app(config)
    try:
        replies = app.control.inspect(timeout=timeout, limit=expected).active_queues() or {}
    finally:
        app.close()
    return {worker: sorted(q["name"] for q in queues) for worker, queues in replies.items()}


def _declared_workers(config: AppConfig) -> set[bytes]:
    """The control queues (``<worker>.celery.pidbox``) bound on the broker: live workers and killed ones."""
    client = config.broker.client(timeout=3.0, retry=False)
    try:
        return set(client.smembers(PIDBOX_BINDINGS))
    finally:
        client.close()


def queue_sizes(config: AppConfig, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each queue (all priority levels)."""
    client = config.broker.client(timeout=3.0, retry=False)
    try:
        pipe = client.pipeline(transaction=False)
        for key in queue_keys(queues):
            pipe.llen(key)
        sizes = pipe.execute()
    finally:
        client.close()
    n = len(QUEUE_SUFFIXES)
    return {q: sum(sizes[n * i: n * i + n]) for i, q in enumerate(queues)}


def shutdown_workers(config: AppConfig, names: Sequence[str]) -> None:
    """Ask the named workers (full names, e.g. ``w1@host``) to finish their current task and exit: the units they
    run stop before their next task and go back to the queue."""
    from merlin_mdm.backends.celery.app import make_app
    from merlin_mdm.backends.celery.liveness import mark_stopping

    client = config.status.client()
    try:
        mark_stopping(client, names)
    finally:
        client.close()
    app = make_app(config)
    try:
        app.control.shutdown(destination=list(names))
    finally:
        app.close()
