"""`merlin-mdm launch`: submit batch allocations whose workers drain a queued study, then end by themselves."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from merlin_mdm.errors import BatchError, MerlinMdmError, UsageError, WorkspaceError

__all__ = ["allocations_json", "launch", "show_allocations"]


@click.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--nodes", type=click.IntRange(1), help="Nodes per allocation [default: the worker's or batch's nodes].")
@click.option("--walltime", help="Walltime per allocation, [[HH:]MM:]SS or D-HH:MM:SS; 0 for none (the "
                   "scheduler's default) [default: batch.walltime].")
@click.option("--queue", help="Queue / partition [default: batch.queue].")
@click.option("--bank", help="Account charged [default: batch.bank].")
@click.option("--cores-per-node", type=click.IntRange(1), envvar="MERLIN_MDM_CORES_PER_NODE",
              help="Cores of each node, for PBS's select=N:ncpus=C (whole nodes) [env MERLIN_MDM_CORES_PER_NODE].")
@click.option("--together", is_flag=True, help="One allocation for every worker group.")
@click.option("--worker", "workers", multiple=True, metavar="GROUP",
              help="Only this worker group (merlin.resources.workers); repeatable [default: every group].")
@click.option("--dry", is_flag=True, help="Print the batch script(s); submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the submitted jobs as JSON.")
@click.option("--vars", "variables", multiple=True, metavar="KEY=VALUE",
              help="The env variables the study was run with (`run --vars`): its workers' names and queues.")
def launch(spec_path: Path, nodes: int | None, walltime: str | None, queue: str | None, bank: str | None,
           cores_per_node: int | None, together: bool, workers: tuple[str, ...], dry: bool, as_json: bool,
           variables: tuple[str, ...]) -> None:
    """Submit one batch allocation per worker group of SPEC (or one for all with --together).

    Each allocation runs `merlin-mdm run-workers` on its nodes for the newest queued study of SPEC
    (queue it first with `merlin-mdm run SPEC`) and ends when the study is over or its walltime nears.
    Prints the job ids.

    \b
    Examples:
      merlin-mdm launch study.yaml --dry                          print the batch script(s), submit nothing
      merlin-mdm launch study.yaml                                one allocation per worker group
      merlin-mdm launch study.yaml --nodes 8 --walltime 2:00:00   override the spec's batch block
      merlin-mdm launch study.yaml --worker simworkers            another allocation for one group only
    """
    from merlin_mdm.backends.celery.allocations import (
        LaunchOptions,
        allocation_requests,
        batch_origin,
        ensure_queued,
        scheduler_name,
        submit_all,
    )
    from merlin_mdm.batch import get_batch_system
    from merlin_mdm.config import load_config
    from merlin_mdm.spec import load_spec, parse_vars
    from merlin_mdm.studies import find_workspace

    spec = load_spec(spec_path, parse_vars(variables)).spec
    try:
        workspace: Path | None = find_workspace(spec_path, backend="celery").root.resolve()
    except WorkspaceError:
        workspace = None
    target = workspace if dry else ensure_queued(workspace, spec_path)
    _check_walltime_option(walltime)
    if target is not None:
        from merlin_mdm.backends.celery.workers import check_study_queues
        from merlin_mdm.study.layout import Workspace

        check_study_queues(spec, [i.task_queue for i in Workspace(target).load_plan().instances], str(target))
    if target is not None and not dry:
        _refuse_when_over(target)
    source = load_config(spec_path).source
    opts = LaunchOptions(nodes, walltime, queue, bank, together, None if source == "defaults" else source, variables,
                         cores_per_node, workers)
    planned = allocation_requests(spec, spec_path, target or Path("WORKSPACE"), opts)
    given = [f"--{name} {value}" for name, value in (("nodes", nodes), ("walltime", walltime), ("queue", queue),
                                                     ("bank", bank)) if value is not None]
    scripts = []
    for names, req in planned:  # each script first: a setting a batch system cannot honour is refused before any submit
        system = get_batch_system(req.system or scheduler_name(spec.batch.type))
        try:
            scripts.append((names, req, system.name, system.script(req)))
        except BatchError as exc:
            raise type(exc)(f"{exc} (the request comes from {batch_origin(spec, names, given)})") from None
    if dry:
        if target is None:
            click.echo(f"no queued study of {spec_path} yet: WORKSPACE stands for its workspace", err=True)
        for names, req, name, script in scripts:
            click.echo(f"# --- {req.name}: {name} batch script for worker(s) {', '.join(names)}")
            click.echo(script)
        return
    _check_allocations_fit(spec, target, planned)
    _note_live_allocations(ensure_queued(target, spec_path), planned)
    _note_shared_queues(ensure_queued(target, spec_path))
    records = submit_all(spec, planned, ensure_queued(target, spec_path), given)
    if as_json:
        click.echo(json.dumps([{"job_id": r.job_id, "system": r.system, "name": r.name, "workers": r.workers}
                               for r in records], indent=1))
    else:
        for r in records:
            click.echo(f"{r.job_id}\t{r.name}\t{r.system}\tworkers: {', '.join(r.workers)}")
    _refuse_stuck(ensure_queued(target, spec_path), {r.job_id for r in records})


def _refuse_stuck(workspace: Path, submitted: set[str]) -> None:
    """Exit 1 when the scheduler says a job just submitted will not start as asked (Slurm's PartitionTimeLimit,
    InvalidAccount, ...), warn where it may never (PartitionNodeLimit for more nodes than there are: also said while
    nodes are down): `launch` said nothing, and the study waited for workers forever."""
    from merlin_mdm.backends.celery.allocations import stuck_allocations

    stuck = stuck_allocations(workspace, submitted)
    for row in (r for r in stuck if not r.sure):  # nodes down or drained would say the same: it may start later
        click.echo(f"warning: job {row.job_id} ({row.name}) is {pending_line(row)}", err=True)
    if any(r.sure for r in stuck):
        raise BatchError("; ".join(f"job {r.job_id} ({r.name}) is {pending_line(r)}" for r in stuck if r.sure))


def _check_walltime_option(walltime: str | None) -> None:
    """``--walltime`` is a time; 0 asks for none, as `walltime: 0` in the spec; an empty one is refused."""
    from merlin_mdm.spec.hazards import parse_walltime

    try:
        if walltime is not None and not walltime.strip():
            raise ValueError("empty")
        parse_walltime(walltime)
    except ValueError:
        raise UsageError(f"--walltime {walltime!r} is not a time: use [[HH:]MM:]SS or D-HH:MM:SS, e.g. 01:30:00, "
                         "or 0 to ask for none (the queue's default limit)") from None


def _note_shared_queues(workspace: Path, glance: int = 1000) -> None:
    """Say when the study's queues also hold other studies' waiting tasks: the allocations' workers take them
    too (Merlin's way; the default queue `merlin` is every study's that names none), which a probe found only
    from the other study's progress. Reads the first ``glance`` messages of each queue, no more."""
    from redis.exceptions import RedisError

    from merlin_mdm.backends.celery.backend import CeleryBackend
    from merlin_mdm.backends.celery.broker import waiting_by_study
    from merlin_mdm.study.layout import Workspace

    plan = Workspace(workspace).load_plan()
    queues = sorted({i.task_queue for i in plan.instances})
    try:
        total, read, studies = waiting_by_study(CeleryBackend().config(Workspace(workspace)), queues, glance)
    except (MerlinMdmError, OSError, RedisError):  # the workers will say more: this is a note
        return
    others = sorted(ws for ws in studies if ws != plan.workspace)
    if read > sum(studies.values()):  # Merlin's own tasks, or unreadable ones: the workers take those too
        others.append("messages of no merlin-mdm study")
    if others:
        named = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        click.echo(f"note: queue(s) {', '.join(queues)} also hold waiting tasks of other studies ({named}; "
                   f"{total} message(s) wait there in all): these allocations' workers run them too, as Merlin's "
                   "do; give this study's steps a task_queue of their own to keep studies apart", err=True)


def _note_live_allocations(workspace: Path, planned: Sequence[tuple[tuple[str, ...], object]]) -> None:
    """Say when a worker group gets another allocation beside a live one (more of the same workers: allowed)."""
    from merlin_mdm.backends.celery.allocations import allocation_states, read_records
    from merlin_mdm.batch import JobState

    records = read_records(workspace)
    states = allocation_states(workspace, records) if records else {}
    live = {name: r.job_id for r in records if states.get(r.job_id) in (JobState.PENDING, JobState.RUNNING)
            for name in r.workers}
    for names, _ in planned:
        for name in names:
            if name in live:
                click.echo(f"note: worker group {name} already has allocation {live[name]} "
                           f"({states[live[name]].value}); this one adds more of its workers", err=True)


def _check_allocations_fit(spec: object, workspace: Path | None, planned: Sequence[Any]) -> None:
    """Refuse allocations that could run nothing (a walltime inside the margin, a step wanting more nodes than
    they have); warn of units that may outlast them."""
    import os

    from merlin_mdm.backends.celery.allocations import steps_beyond_nodes, units_beyond_walltime
    from merlin_mdm.backends.celery.in_allocation import walltime_margin
    from merlin_mdm.study.layout import Workspace

    margin = walltime_margin(os.environ)
    for _, req in planned:
        if req.walltime is not None and req.walltime <= margin:  # its workers would stop as they start
            raise UsageError(f"allocation {req.name}: a walltime of {req.walltime:g} s leaves no time after the "
                             f"{margin:g} s margin the workers stop at (MERLIN_MDM_WALLTIME_MARGIN): ask for more "
                             "(--walltime, or the spec's batch walltime), or lower the margin")
        lead = _signal_lead(req.options)
        if req.walltime is not None and lead is not None and lead >= req.walltime / 2:
            click.echo(f"warning: allocation {req.name}: its early-warning signal comes {lead} s before the end of "
                       f"a {req.walltime:g} s walltime, so the workers wind down "
                       f"{'as they start' if lead >= req.walltime else 'before half of it is used'}: lower the @ "
                       "time of --signal, or ask for more walltime", err=True)
    if workspace is None:
        return
    plan = Workspace(workspace).load_plan()
    too_big = steps_beyond_nodes(spec, plan, planned)  # type: ignore[arg-type]
    if too_big:
        raise UsageError("; ".join(too_big))
    for line in units_beyond_walltime(spec, plan, planned, margin):  # type: ignore[arg-type]
        click.echo(f"warning: {line}", err=True)


def _signal_lead(options: tuple[tuple[str, str], ...]) -> int | None:
    """Seconds before the end that Slurm's ``--signal=[B:]SIG@T`` comes (None without one, or without ``@T``)."""
    for key, value in options:
        if key == "signal" and "@" in value:
            with contextlib.suppress(ValueError):
                return int(value.rsplit("@", 1)[1].strip("'\""))
    return None


def _refuse_when_over(workspace: Path) -> None:
    """An allocation for a study with nothing left to run would start workers only to stop them."""
    from merlin_mdm.errors import MerlinMdmError
    from merlin_mdm.studies import study_status

    try:
        snap = study_status(workspace, patient=False)  # a refused server is an answer: the allocation finds out
    except MerlinMdmError:
        return  # its store cannot be read from here: let the allocation find out
    if snap.state.over:
        raise UsageError(f"study {snap.name} is {snap.state.value} ({snap.message or 'nothing left to run'}): no "
                         f"allocation is needed; `merlin-mdm restart {workspace}` queues its unfinished work again")


def _rows(target: Path, notes: list[str] | None = None):  # type: ignore[no-untyped-def]
    from merlin_mdm.backends.celery.allocations import allocation_rows
    from merlin_mdm.config import load_config
    from merlin_mdm.studies import find_workspace

    ws = find_workspace(target)
    spec_path = target if target.is_file() else None
    return allocation_rows(ws.root, load_config(spec_path), notes)


def allocations_json(target: Path) -> list[dict[str, object]]:
    """The allocations of TARGET's study as JSON-ready rows (empty when `launch` submitted none)."""
    return [{"job_id": r.job_id, "system": r.system, "name": r.name, "state": r.state.value,
             "workers": list(r.workers), "reason": r.reason} for r in _rows(target)]


def show_allocations(target: Path) -> None:
    """Print a table of the allocations of TARGET's study (nothing when `launch` submitted none), and where a
    failed one's output is."""
    from merlin_mdm.studies import find_workspace

    notes: list[str] = []
    rows = _rows(target, notes)
    if not rows:
        return
    click.echo("\nallocations:")
    for note in notes:  # a scheduler that cannot be asked (slurmctld down) is said, not shown as `unknown` alone
        click.echo(f"  {note}")
    click.echo(f"  {'job id':<12} {'system':<6} {'state':<10} {'name':<28} workers")
    for r in rows:
        click.echo(f"  {r.job_id:<12} {r.system:<6} {r.state.value:<10} {r.name:<28} {', '.join(r.workers) or '-'}")
    batch = find_workspace(target).root / "merlin_info" / "batch"
    for r in rows:
        if r.state.value in ("failed", "cancelled", "unknown"):  # where to look: the job's own output says why
            click.echo(f"  job {r.job_id} {r.state.value}: its output is {batch}/{r.name}.{r.job_id}.out")
        elif r.reason:  # a pending job's reason: the study's "or `merlin-mdm launch`" hint is not for it
            click.echo(f"  job {r.job_id} {pending_line(r)}")


def pending_line(row: Any) -> str:
    """Why allocation ``row`` waits: a stuck one with what to do, another as needing no second `launch`."""
    from merlin_mdm.batch import get_batch_system

    if row.stuck:
        system = get_batch_system(row.system)
        cancel = shlex.join(system.cancel_command([row.job_id]))
        will, cancel_it = ("will not", "cancel it") if row.sure else ("may never", "unless nodes are down for a "
                                                                                    "while, cancel it")
        return (f"pending ({row.reason}): {system.title or system.name.upper()} {will} start it as asked "
                f"({row.stuck}); {cancel_it} "
                f"(`{cancel}`), change the request (`merlin-mdm launch SPEC --dry` prints it) and launch again")
    return f"pending ({row.reason}): it starts when the scheduler can place it; no other `launch` is needed"
