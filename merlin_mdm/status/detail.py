"""`detailed-status`: one row per task, as Merlin's command shows it, built from the plan, the done-markers
on disk (the truth about a finished task) and the failures the status store recorded."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from merlin_mdm.spec.exitcodes import ExitCode
from merlin_mdm.status.model import StudySnapshot, StudyState, TaskFailure
from merlin_mdm.status.states import DRY_RUN_WORD
from merlin_mdm.study.plan import NO_SAMPLE, StudyPlan, UnitKey

__all__ = ["RETURN_CODES", "TASK_STATUSES", "TaskRow", "code_matches", "shows_exit_code", "task_rows", "wanted_codes"]

DONE_MARKER = "MERLIN_FINISHED"
# Merlin's names for the return codes, and for the states (its INITIALIZED is our queued, CANCELLED not run).
# Merlin 1.13 records any other exit code as MERLIN_SOFT_FAIL (its script adapter turns it into one), retries run
# out as `MERLIN_SOFT_FAIL (MAX RETRIES REACHED)`, and $(MERLIN_RAISE_ERROR) as MERLIN_UNRECOGNIZED (its status has
# no name for it): the return code is exactly Merlin's (dumps are read by Merlin users' scripts); the exit code
# itself is kept beside it (the listing shows it, `--return-code 7` selects by it).
RETURN_CODES = {int(code): f"MERLIN_{code.name}" for code in ExitCode if code is not ExitCode.RAISE_ERROR}
MAX_RETRIES = "MERLIN_SOFT_FAIL (MAX RETRIES REACHED)"
TASK_STATUSES = {"FINISHED": "finished", "FAILED": "failed", "NOT_RUN": "not_run", "CANCELLED": "not_run",
                 "QUEUED": "queued", "INITIALIZED": "queued", "RUNNING": "running", "UNKNOWN": "unknown",
                 "DRY_RUN": DRY_RUN_WORD}


@dataclass(frozen=True)
class TaskRow:
    """One task."""

    step: str
    instance: str
    sample: int  # -1 for a task that does not run per sample
    status: str  # finished | failed | not_run | running | queued | unknown | dry_run
    return_code: str  # MERLIN_SUCCESS, MERLIN_SOFT_FAIL, ... ('' when it has not ended)
    workspace: str
    reason: str = ""
    exit_code: int | None = None  # the task's exit code when it failed (return_code is Merlin's name for it)


UNRECOGNIZED = "MERLIN_UNRECOGNIZED"  # $(MERLIN_RAISE_ERROR)


def _code(failure: TaskFailure) -> str:
    if failure.rc is None:
        return ""
    if failure.rc in (ExitCode.RESTART, ExitCode.RETRY):  # a failed task that asked again: retries ran out
        return MAX_RETRIES
    return _name(failure.rc)


def _name(rc: int) -> str:
    if rc == ExitCode.RAISE_ERROR:
        return UNRECOGNIZED
    return RETURN_CODES.get(rc, RETURN_CODES[int(ExitCode.SOFT_FAIL)])


def shows_exit_code(code: str, exit_code: int | None) -> bool:
    """Whether a listing adds the exit code to Merlin's name for it: when the name does not say it (any code
    Merlin calls a soft fail but 101, $(MERLIN_RAISE_ERROR)'s 106)."""
    return exit_code is not None and code in (RETURN_CODES[int(ExitCode.SOFT_FAIL)], UNRECOGNIZED) and \
        exit_code != ExitCode.SOFT_FAIL


def wanted_codes(codes: Iterable[str]) -> set[str]:
    """The return codes asked for, as the rows name them: a name with or without MERLIN_ (SOFT_FAIL,
    MERLIN_SOFT_FAIL), or a number (7, 101; 100 and 104 also take retries run out).

    Raises:
        ValueError: an unknown name, with the known ones.
    """
    known = [*RETURN_CODES.values(), UNRECOGNIZED]
    out = set()
    for code in codes:
        text = code.strip().upper()
        if text.lstrip("-").isdigit():  # a number takes the tasks that exited with it ('=')
            out.add(f"={int(text)}")
            continue
        name = text if text.startswith("MERLIN_") else f"MERLIN_{text}"
        if name not in known:
            raise ValueError(f"{code}: known: {', '.join(c.removeprefix('MERLIN_') for c in known)}, or a number")
        out.add(name)
    return out


def code_matches(code: str, exit_code: int | None, wanted: set[str]) -> bool:
    """Whether a row's return code (or, for a number asked for, its exit code) is one of ``wanted``; a name takes
    its forms with words after it (SOFT_FAIL takes `MERLIN_SOFT_FAIL (MAX RETRIES REACHED)`)."""
    return any(str(exit_code) == name[1:] if name.startswith("=") else code == name or code.startswith(f"{name} (")
               for name in wanted)


def task_rows(plan: StudyPlan, snap: StudySnapshot, in_flight: Collection[UnitKey] = ()) -> Iterator[TaskRow]:
    """Every task of the study, in plan order.

    A task of a unit in flight (a worker took it, its outcome is not recorded) that has no done-marker is
    running, as `status` counts it: a unit's tasks run one after the other in the worker that took it.
    """
    failed = {(name, f.sample): f for step in snap.steps for name, f in step.failures}
    over = snap.state.over
    # an interrupted or stopped study's tasks that did not end are queued again, as `status` counts them; in a
    # study that ended (finished, failed) a task with neither a marker nor a failure is unknown (a lost marker)
    ended = snap.state in (StudyState.FINISHED, StudyState.FAILED)
    left = snap.state.unrun_word  # a task that has not run, as Merlin says
    running = {(key.instance, sample) for key in in_flight for sample in plan.unit_samples(key)}
    for inst in plan.instances:
        base = str(Path(plan.workspace) / inst.workspace)  # paths as text from here: a million tasks
        samples = plan.samples if inst.uses_samples else None
        for index in range(plan.n_tasks(inst.index)):
            sample, where = NO_SAMPLE, base
            if samples is not None:
                sample, below = index, samples.path(index)
                where = f"{base}/{below}" if below else base
            failure = failed.get((inst.name, sample)) or failed.get((inst.name, NO_SAMPLE))
            if os.path.exists(f"{where}/{DONE_MARKER}"):
                yield TaskRow(inst.step, inst.name, sample, "finished", "MERLIN_SUCCESS", where, exit_code=0)
            elif failure is not None:
                yield TaskRow(inst.step, inst.name, sample, failure.state.value, _code(failure), where,
                              failure.reason, failure.rc)
            elif (inst.index, sample) in running and not over:
                yield TaskRow(inst.step, inst.name, sample, "running", "", where)
            else:
                yield TaskRow(inst.step, inst.name, sample, "unknown" if ended else left, "", where)
