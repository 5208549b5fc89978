"""`status`: kept apart from the other commands so that it imports little (a status read should be instant)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from merlin_mdm.cli.paths import GivenPath

if TYPE_CHECKING:
    from merlin_mdm.status.detail import TaskRow
    from merlin_mdm.status.model import StudySnapshot
    from merlin_mdm.study.layout import Workspace

__all__ = ["detailed_status", "status"]

_output_opt = click.option(
    "-o", "--output-path", "output", type=GivenPath(file_okay=False, path_type=Path),
    help="Where to look for the workspaces of a spec TARGET instead of its OUTPUT_PATH (Merlin's -o); not used when "
         "TARGET is a workspace.")
_no_prompts_opt = click.option(
    "--no-prompts", is_flag=True,
    help="Accepted for Merlin's scripts; merlin-mdm never prompts: a spec TARGET shows its newest workspace.")


@click.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--dump", type=GivenPath(dir_okay=False, path_type=Path),
              help="Write one entry per task to this .csv or .json file, in Merlin's `status --dump` format, instead "
                   "of showing the table; with --json the JSON is still printed.")
@_output_opt
@_no_prompts_opt
def status(target: Path, as_json: bool, dump: Path | None, output: Path | None, no_prompts: bool) -> None:
    """Show where a study stands: task counts per step and state, elapsed time, failures with log paths.

    TARGET is a workspace directory, or a spec file (its newest workspace is shown).

    A step's elapsed time runs from its first task's start to now while a task of it runs, else to its last
    task's end (so it includes any time the study stood stopped between); "-" when nothing of it has started or
    ended. Its avg run is a task's mean run time, as Merlin's status shows it: over the units (an instance's batch of
    samples, run one after the other) that ran to their end, each unit's time shared among the tasks it ran (a unit
    delivered again skips those already done); a unit queued again drops out until it is recorded anew. --json
    and --dump also give the spread (run_std).

    \b
    Examples:
      merlin-mdm status study.yaml                      the newest study of the spec: a table per step
      merlin-mdm status studies/hello_20260101-120000   one workspace
      merlin-mdm status WS --json                       for scripts; --dump s.csv writes a file
      merlin-mdm status study.yaml -o /scratch/studies  the newest study of the spec under another folder
    """
    from merlin_mdm.status.render import render_table, snapshot_to_dict, to_json
    from merlin_mdm.studies import find_workspace, study_status

    ws = find_workspace(target, output=output)
    if dump is not None:
        written = _dump_tasks(ws, dump, lambda rows: rows)
        if not as_json:
            click.echo(f"wrote the status of {written} task(s) of {ws.root.name} to {dump}")
            return
    snap = _with_idle_queues(ws, study_status(ws.root, patient=False))
    snap = _with_lost_markers(ws, snap)
    if snap.workspace and ws.made_elsewhere(snap.workspace):
        snap = _noted(snap, f"this folder is a copy of {snap.workspace} (or was moved): the counts are those its "
                            "status store holds, and `restart` refuses it")
    launched = ws.batch.is_dir()  # only studies `launch` submitted allocations for have any to show
    if as_json:
        if launched:
            import json

            from merlin_mdm.cli.batch import allocations_json

            click.echo(json.dumps({**snapshot_to_dict(snap), "allocations": allocations_json(target)}, indent=2))
        else:
            click.echo(to_json(snap))
        return
    render_table(snap, sys.stdout)
    if launched:
        from merlin_mdm.cli.batch import show_allocations

        show_allocations(target)


def _with_idle_queues(ws: Workspace, snap: StudySnapshot) -> StudySnapshot:
    """A Celery study that runs nothing while work waits in queues no worker takes says so in its message, and
    so does one whose running units were taken by workers that are gone."""
    from merlin_mdm.status.states import StudyState, TaskState
    from merlin_mdm.studies import backend_of

    if backend_of(ws) != "celery":
        return snap
    if snap.state is StudyState.QUEUED:  # its message says to `launch`: not when `launch` already asked
        said = _allocations_say(ws.root)
        return dataclasses.replace(snap, message=f"waiting for workers: {said}") if said else snap
    from kombu.exceptions import KombuError
    from redis import RedisError

    from merlin_mdm.backends.celery.backend import unserved_queues
    from merlin_mdm.errors import MerlinMdmError

    try:
        found = unserved_queues(ws, snap)
    except (KombuError, RedisError, OSError, MerlinMdmError):
        return snap  # the counts were read; who consumes the queues is a nicety
    if found.orphaned:
        snap = _noted(snap, f"{found.orphaned_tasks} task(s) recorded running ({len(found.orphaned)} unit(s)) have "
                            "stopped beating (their process ended, or six beats were missed): the workers that took "
                            "them are gone (killed, or their node or allocation ended). "
                            f"`merlin-mdm restart {ws.root} --release` "
                            "gives them back now; else the "
                            f"broker does after visibility_timeout {found.visibility_timeout:g} s, to the next "
                            "worker started on them")
    if found.lost:
        snap = _noted(snap, f"nothing runs, yet {found.lost} message(s) of this study are out with workers that took "
                            "them long ago and run none of them: if the broker restarted under the workers, they "
                            "lost them, and the broker gives them back only after visibility_timeout "
                            f"{found.visibility_timeout:g} s. To have them now: `merlin-mdm stop-workers --spec SPEC`, "
                            f"`merlin-mdm restart {ws.root} --release`, then start workers again")
    if found.unsent:
        snap = _noted(snap, f"{found.unsent} unit(s) were released when their parents ended, but no queue holds "
                            "them and no worker has them (their send failed: a server out of memory?), so the "
                            f"study would wait for them forever: `merlin-mdm restart {ws.root}` queues them")
    if found.waiting:
        waiting = snap.count(TaskState.QUEUED)
        snap = _noted(snap, f"nothing runs: {waiting} task(s) wait in queue(s) {', '.join(found.waiting)}, which "
                            "no worker takes; " + (_allocations_say(ws.root) or
                                                   "start workers with `merlin-mdm run-workers SPEC`"))
    return snap


def _allocations_say(workspace: Path) -> str | None:
    """How the allocations `launch` asked for stand, for a study none of whose workers runs: pending (their workers
    start with them: a second `launch` would only queue beside them), running, or ended (`launch` again); None
    where `launch` asked for none or they cannot be read."""
    from merlin_mdm.backends.celery.allocations import allocation_states, read_records
    from merlin_mdm.batch import JobState
    from merlin_mdm.errors import MerlinMdmError

    try:
        records = read_records(workspace)
        states = allocation_states(workspace, records, []) if records else {}
    except (MerlinMdmError, OSError, ValueError):
        return None
    if not records:
        return None
    for state, said in ((JobState.PENDING, "are pending: their workers start when the scheduler starts them"),
                        (JobState.RUNNING, "are running, but none of their workers takes these queues (yet)")):
        jobs = [r.job_id for r in records if states.get(r.job_id) is state]
        if jobs:
            return f"allocation(s) {', '.join(jobs)} {said}"
    return "its allocations have ended: `merlin-mdm launch SPEC` asks for more (or `merlin-mdm run-workers SPEC`)"


def _with_lost_markers(ws: Workspace, snap: StudySnapshot) -> StudySnapshot:
    """An ended study some of whose finished tasks lost their done-markers says so: the counts are the store's,
    and `restart` runs those tasks again."""
    from merlin_mdm.backends.execution import DONE_MARKER
    from merlin_mdm.errors import MerlinMdmError
    from merlin_mdm.studies import finished_without_markers

    if not snap.state.over or ws.made_elsewhere(snap.workspace or str(ws.root)):
        return snap
    try:
        lost, how = finished_without_markers(ws)
    except (MerlinMdmError, OSError, ValueError):
        return snap  # the counts were read; the check is a nicety
    if not lost:
        return snap
    which = f"are {how}" if how else "have"
    return _noted(snap, f"{lost} task(s) counted finished {which} no done-marker ({DONE_MARKER}) on disk any more "
                        "(deleted, or purged from a scratch file system): `merlin-mdm restart "
                        f"{ws.root}` runs them again")


def _noted(snap: StudySnapshot, note: str) -> StudySnapshot:
    return dataclasses.replace(snap, message=f"{snap.message}; {note}" if snap.message else note)


@click.command("detailed-status")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--steps", multiple=True, help="Only these steps; repeatable.")
@click.option("--task-status", "statuses", multiple=True,
              help="Only tasks in this state: FINISHED, FAILED, NOT_RUN (CANCELLED), RUNNING, QUEUED (INITIALIZED), "
                   "DRY_RUN (`run --dry`), UNKNOWN.")
@click.option("--return-code", "codes", multiple=True,
              help="Only tasks that ended with this code: SUCCESS, SOFT_FAIL, HARD_FAIL, RESTART, RETRY, "
                   "STOP_WORKERS, UNRECOGNIZED (with or without MERLIN_), or a number such as 7. As in Merlin, a "
                   "task that failed with another code is a SOFT_FAIL (shown with its number), one whose "
                   "retries ran out a `SOFT_FAIL (MAX RETRIES REACHED)`, and $(MERLIN_RAISE_ERROR) UNRECOGNIZED.")
@click.option("--task-queues", "queues", multiple=True,
              help="Also the steps whose run.task_queue is this; repeatable (with --steps: the steps of both).")
@click.option("--workers", "workers", multiple=True,
              help="Only the tasks of the steps this worker group (merlin.resources.workers) serves; repeatable.")
@click.option("--max-tasks", type=click.IntRange(1), help="Show at most this many tasks.")
@click.option("--dump", type=GivenPath(dir_okay=False, path_type=Path),
              help="Write the tasks to a .csv or .json file, in Merlin's `--dump` format, instead of printing them.")
@_output_opt
@click.option("--disable-pager", is_flag=True, help="Accepted for Merlin's scripts; merlin-mdm never pages.")
@click.option("--disable-theme", is_flag=True, help="Accepted for Merlin's scripts; the lines are plain text.")
@click.option("--layout", type=click.Choice(["default", "table"]), default="default",
              help="Accepted for Merlin's scripts (its layouts); the lines are the same.")
@_no_prompts_opt
def detailed_status(target: Path, steps: tuple[str, ...], statuses: tuple[str, ...], codes: tuple[str, ...],
                    queues: tuple[str, ...], workers: tuple[str, ...], max_tasks: int | None, dump: Path | None,
                    output: Path | None, **_presentation: object) -> None:
    """One line per task: step, instance, sample, status, return code and folder (Merlin's `detailed-status`).

    \b
    Examples:
      merlin-mdm detailed-status WS                                       every task
      merlin-mdm detailed-status WS --task-status FAILED                  what failed, with its folder
      merlin-mdm detailed-status WS --steps sim --return-code SOFT_FAIL   soft fails of step sim
      merlin-mdm detailed-status WS --task-queues sim_queue               the steps of a queue
      merlin-mdm detailed-status WS --workers sim_worker                  what a worker group serves
      merlin-mdm detailed-status WS --dump tasks.csv                      to a file (.csv or .json)
    """
    import itertools

    from merlin_mdm.errors import UsageError
    from merlin_mdm.status.detail import TASK_STATUSES, code_matches, wanted_codes
    from merlin_mdm.studies import find_workspace
    from merlin_mdm.study.selection import selected_steps

    ws = find_workspace(target, output=output)
    wanted = set()
    for name in statuses:
        if name.upper() not in TASK_STATUSES:
            raise UsageError(f"--task-status {name}: known: {', '.join(TASK_STATUSES)}")
        wanted.add(TASK_STATUSES[name.upper()])
    try:
        want_codes = wanted_codes(codes)
    except ValueError as exc:
        raise UsageError(f"--return-code {exc}") from None
    shown, served_by = selected_steps(ws, ws.load_plan(), steps, queues, workers)

    def matches(r: TaskRow) -> bool:  # Merlin ORs these filters: a task matching any one of them is shown
        if not wanted and not want_codes and served_by is None:
            return True
        return (r.status in wanted or code_matches(r.return_code, r.exit_code, want_codes)
                or (served_by is not None and r.step in served_by))

    def keep(rows: Iterable[TaskRow]) -> Iterable[TaskRow]:
        return itertools.islice((r for r in rows if (shown is None or r.step in shown) and matches(r)), max_tasks)

    if dump is not None:
        written = _dump_tasks(ws, dump, keep)
        click.echo(f"wrote {written} task row(s) to {dump}")
        return
    rows, shown_rows = iter(keep(_task_rows(ws))), 0
    while chunk := list(itertools.islice(rows, 4096)):  # streamed: a million rows, one write a chunk
        click.echo("\n".join(_task_line(r) for r in chunk))
        shown_rows += len(chunk)
    if not shown_rows:
        click.echo("no task matches")


def _task_line(r: TaskRow) -> str:
    from merlin_mdm.status.detail import shows_exit_code

    where = f" sample {r.sample}" if r.sample >= 0 else ""
    code = f"{r.return_code} (exit {r.exit_code})" if shows_exit_code(r.return_code, r.exit_code) else r.return_code
    return f"{r.instance}{where}: {r.status} {code} {r.workspace}".rstrip()


def _task_rows(ws: Workspace) -> Iterator[TaskRow]:
    """Every task of the study in ``ws`` (refused for a copied or moved workspace: its plan names the original)."""
    from merlin_mdm.status.detail import task_rows
    from merlin_mdm.studies import study_tasks

    plan = ws.load_plan()
    ws.check_in_place(plan)
    return task_rows(plan, *study_tasks(ws.root, patient=False, every_failure=True))


def _dump_tasks(ws: Workspace, path: Path, keep: Callable[[Iterator[TaskRow]], Iterable[TaskRow]]) -> int:
    """Merlin's per-task --dump of the tasks ``keep`` keeps; how many were written."""
    from merlin_mdm.errors import UsageError
    from merlin_mdm.status.dump import dump_tasks

    if path.suffix.lower() not in (".csv", ".json"):  # before reading anything, as Merlin
        raise UsageError(f"--dump {path}: the file must end in .csv or .json")
    return dump_tasks(ws.load_plan(), keep(_task_rows(ws)), path)
