"""Which steps of a study `detailed-status` shows: Merlin's `--steps`, `--task-queues` and `--workers`."""

from __future__ import annotations

from collections.abc import Sequence

from merlin_mdm.errors import MerlinMdmError, UsageError
from merlin_mdm.study.layout import Workspace
from merlin_mdm.study.plan import StudyPlan

__all__ = ["DEFAULT_WORKER", "selected_steps", "worker_steps"]

DEFAULT_WORKER = "default_worker"  # takes the steps no worker group claims, as `run-workers` starts it


def selected_steps(ws: Workspace, plan: StudyPlan, steps: Sequence[str], queues: Sequence[str],
                   workers: Sequence[str] = ()) -> tuple[set[str] | None, set[str] | None]:
    """The steps to show (None: every one), and the steps the ``workers`` groups serve (None: no --workers).

    As in Merlin, ``queues`` adds the steps whose task queue it names to ``steps``. ``workers`` is one of the
    task filters Merlin ORs together (with --task-status and --return-code): a task of a step those worker groups
    consume matches it. A name that matches nothing is refused with the known ones (Merlin drops it with a
    warning, and shows every task when nothing is left).

    Raises:
        UsageError: an unknown step, queue or worker group.
    """
    known = list(dict.fromkeys(inst.step for inst in plan.instances))
    queue_of = {inst.step: inst.task_queue for inst in plan.instances}
    _refuse_unknown("--steps", "step", steps, known)
    _refuse_unknown("--task-queues", "task queue", queues, list(dict.fromkeys(queue_of.values())))
    shown: set[str] | None = None
    if steps or queues:
        shown = set(steps) | {step for step, queue in queue_of.items() if queue in queues}
    served_by: set[str] | None = None
    if workers:
        served = worker_steps(ws, plan)
        _refuse_unknown("--workers", "worker group", workers, list(served))
        served_by = {step for name in workers for step in served[name]}
    return shown, served_by


def worker_steps(ws: Workspace, plan: StudyPlan) -> dict[str, tuple[str, ...]]:
    """Each worker group of the study's spec (as it ran: the workspace's copy) and the steps whose queues it
    consumes: those of its `steps` (`all`: every step), and any step sharing one of their queues."""
    queue_of = {inst.step: inst.task_queue for inst in plan.instances}
    out: dict[str, tuple[str, ...]] = {}
    claimed: set[str] = set()
    for name, names in _spec_workers(ws):
        mine = set(queue_of) if "all" in names else {s for s in names if s in queue_of}
        queues = {queue_of[s] for s in mine}
        out[name] = tuple(s for s in queue_of if queue_of[s] in queues)
        claimed |= mine
    rest = tuple(s for s in queue_of if s not in claimed)
    if rest or not out:
        out[DEFAULT_WORKER] = rest
    return out


def _spec_workers(ws: Workspace) -> list[tuple[str, tuple[str, ...]]]:
    """(name, steps) of merlin.resources.workers in the workspace's copy of the spec, read without validation
    (it was validated at `run`); [] when there is no copy."""
    from merlin_mdm.spec.build import build_spec
    from merlin_mdm.spec.issues import IssueCollector
    from merlin_mdm.spec.loader import load_marked

    copy = ws.spec_copy("partial")  # its tokens filled in, --vars included: the names `run-workers` gave
    if copy is None:
        return []
    try:
        spec = build_spec(load_marked(copy), copy, IssueCollector(str(copy)))
    except (OSError, MerlinMdmError):
        return []
    return [(worker.name, worker.steps) for worker in spec.resources.workers]


def _refuse_unknown(option: str, what: str, given: Sequence[str], known: list[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:  # a misspelt name matched nothing and said so, as if no task of it were there
        raise UsageError(f"{option}: no {what}(s) {', '.join(unknown)} in this study ({what}s: {', '.join(known)})")
