"""Commands of the distributed backend: workers, queues, the broker, and a local Redis server.

Celery is imported inside the commands only, so `merlin-mdm --help` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from merlin_mdm.cli.paths import GivenPath
from merlin_mdm.cli.prompts import confirmed
from merlin_mdm.errors import MerlinMdmError, UsageError
from merlin_mdm.signals import SignalWatch, parent_death_signal, parse_signal, watch_signals
from merlin_mdm.status.model import TaskState

if TYPE_CHECKING:
    from merlin_mdm.config import AppConfig
    from merlin_mdm.status.model import StudySnapshot
    from merlin_mdm.study.plan import StudyPlan

__all__ = ["info", "monitor", "purge", "query_workers", "queue_info", "run_workers", "server", "stop_workers"]

_spec_arg = click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
# as in Merlin: the values the study was run with give its workers' names, queues and args
_vars_opt = click.option("--vars", "variables", multiple=True, metavar="KEY=VALUE",
                         help="Override (or add) an env variable of the spec, as given to `run`; repeatable.")


def _config(spec: Path | None = None):  # type: ignore[no-untyped-def]
    from merlin_mdm.config import load_config

    return load_config(spec)


def _spec(spec: Path, variables: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    from merlin_mdm.spec import load_spec, parse_vars

    return load_spec(spec, parse_vars(variables)).spec


def _vars_need_spec(spec: Path | None, variables: tuple[str, ...]) -> None:
    if variables and spec is None:
        raise UsageError("--vars sets the variables of a spec: give the spec too")


@click.command("run-workers")
@_spec_arg
@click.option("--echo", is_flag=True, help="Print the worker command(s) instead of running them.")
@click.option("--steps", multiple=True, help="Only the workers of these steps; repeatable.")
@click.option("--worker", "only", multiple=True, help="Only these worker groups; repeatable.")
@click.option("--worker-args", default="", help="Extra Celery worker options, e.g. '-c 4 -l INFO'.")
@_vars_opt
@click.option("--until-done", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Stop the workers and exit once the study in this workspace is over.")
@click.option("--grace", default=30.0, show_default=True, type=click.FloatRange(0), envvar="MERLIN_MDM_GRACE",
              help="After a stop, seconds running tasks get before the workers are stopped cold [env "
                   "MERLIN_MDM_GRACE].")
@click.option("--signal", "early_signal", metavar="SIG", envvar="MERLIN_MDM_SIGNAL",
              help="Also wind down on this signal, e.g. USR1 for Slurm's --signal [env MERLIN_MDM_SIGNAL].")
def run_workers(spec: Path, echo: bool, steps: tuple[str, ...], only: tuple[str, ...], worker_args: str,
                variables: tuple[str, ...], until_done: Path | None, grace: float, early_signal: str | None) -> None:
    """Start the Celery workers that `merlin.resources.workers` of SPEC describes (blocks until they exit).

    Inside a Slurm, LSF, Flux or PBS allocation each worker runs once per node through the launcher,
    with one process per core of the node, and stops before the allocation's walltime runs out.

    On SIGTERM, SIGINT, SIGHUP (or --signal) the workers take no new task; after --grace seconds they stop
    cold, their running units go back to the queue (recorded queued), and the exit code is 128+signal.
    With --until-done the last line says how the study ended; the exit code is 0 once it is over, even when
    tasks failed (the workers did their job, and a failed simulation does not fail the allocation, so an
    `afterok` dependency still fires): `status` says what failed. Workers that end before the study is over
    (the walltime, `stop-workers`) are said so, with where the study stands.
    Unless app.yaml sets visibility_timeout, it is derived from the walltimes of SPEC's newest study.

    \b
    Examples:
      merlin-mdm run-workers study.yaml                                       the spec's worker groups, until stopped
      merlin-mdm run-workers study.yaml --echo                                print the celery commands, start nothing
      merlin-mdm run-workers study.yaml --worker simworkers --until-done WS   in a batch job: end with the study
      merlin-mdm run-workers study.yaml --steps collect                       only the workers of step collect
    """
    with _exit_code_recorded():
        _run_workers(spec, echo, steps, only, worker_args, until_done, grace, early_signal, variables)


def _run_workers(spec: Path, echo: bool, steps: tuple[str, ...], only: tuple[str, ...], worker_args: str,
                 until_done: Path | None, grace: float, early_signal: str | None, variables: tuple[str, ...]) -> None:
    from merlin_mdm.backends.celery.backend import check_server
    from merlin_mdm.backends.celery.in_allocation import allocation_commands
    from merlin_mdm.backends.celery.queue_claims import claim_queues
    from merlin_mdm.backends.celery.workers import worker_commands
    from merlin_mdm.batch import detect_allocation

    parsed = _spec(spec, variables)
    # the pid makes each group's Celery node name unique: two studies' `default_worker` on one machine were one
    commands = worker_commands(parsed, steps, worker_args, warn=lambda m: click.echo(m, err=True), only=only,
                               suffix=str(os.getpid()))
    alloc = detect_allocation(os.environ)
    if alloc is not None:
        commands = allocation_commands(parsed, commands, alloc)
    if echo:
        for cmd in commands:
            click.echo(cmd.shell())
        return
    if until_done is not None:
        from merlin_mdm.backends.celery.workers import check_study_queues
        from merlin_mdm.studies import backend_of
        from merlin_mdm.study.layout import Workspace

        ws = Workspace.find(until_done)
        if backend_of(ws) != "celery":  # its status lives in the workspace: no worker would ever see it end
            raise UsageError(f"--until-done {until_done}: this study ran on the local runner (`run --local`), "
                             "which no worker serves; `merlin-mdm restart` it here, or queue the spec on Redis "
                             "(`merlin-mdm run SPEC`) for workers")
        check_study_queues(parsed, [i.task_queue for i in ws.load_plan().instances], str(until_done))
    config = _config(spec)
    check_server(config)
    give_up = (claim_queues(config, commands, alloc is not None, str(spec.resolve()))
               if not parsed.resources.overlap else None)
    try:
        _supervise(spec, parsed, config, commands, alloc, until_done, grace, early_signal, only)
    finally:
        if give_up is not None:
            give_up()


def _supervise(spec: Path, parsed, config, commands, alloc, until_done: Path | None,  # type: ignore[no-untyped-def]
               grace: float, early_signal: str | None, only: tuple[str, ...]) -> None:
    """Start the workers, wait for them (stopping them when the study is over or the walltime nears), exit."""
    from merlin_mdm.backends.celery.in_allocation import (
        STUDY_OVER,
        Supervisor,
        allocation_deadline,
        broadcast_shutdown,
        study_over_check,
        walltime_margin,
    )
    from merlin_mdm.backends.celery.liveness import SPEC_ENV

    env = {**os.environ, SPEC_ENV: str(spec.resolve())}  # the workers' beats name it, for `stop-workers --spec`
    if config.source != "defaults":
        env["MERLIN_MDM_CONFIG"] = config.source
    if not config.visibility_set:
        env.update(_visibility_env(spec))
    served = {q for cmd in commands for q in cmd.queues}
    mine = [s.name for s in parsed.steps if s.run.task_queue in served]  # an allocation ends with its own work
    is_over = study_over_check(until_done, mine if only else None, lambda m: click.echo(m, err=True)) \
        if until_done else None  # a bad folder: now
    if until_done is not None and is_over is not None and is_over():  # an allocation that started late
        click.echo(f"run-workers: nothing is left for the workers to run, none started: {_outcome(until_done)}",
                   err=True)
        raise SystemExit(0)
    # The workers die with us (even by SIGKILL): a worker left behind would keep the queues, refusing the next.
    # They run in a session of their own, so that the signals of our terminal or process group (a closed window's
    # SIGHUP, which Celery takes for "re-execute yourself"; a group SIGTERM, which killed the pool's tasks at
    # once) reach only this command, which stops them warmly and gives their units back.
    def start(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(commands[i].argv), env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=functools.partial(parent_death_signal, signal.SIGTERM, os.getpid()))

    supervisor = Supervisor([start(i) for i in range(len(commands))], is_over,
                            allocation_deadline(alloc) if alloc else None, walltime_margin(os.environ),
                            log=lambda m: click.echo(m, err=True),
                            shutdown=broadcast_shutdown(config, [c.node.split("@")[0] + "@" for c in commands])
                            if alloc else None, grace=grace, early_signal=parse_signal(early_signal),
                            respawn=start, names=[c.name for c in commands])
    started = time.time() - 30  # the workers' marks: later, give or take another node's clock
    rc = supervisor.run()
    if until_done is not None:
        if supervisor.stopping != STUDY_OVER:  # the walltime, a signal, or `stop-workers` from outside
            signalled = _signalled_from_outside(supervisor, config, commands, (started, early_signal))
            why = supervisor.stopping or (signalled[1] if signalled else _why_ended(supervisor))
            click.echo(f"run-workers: the workers ended before the study was over: {why}", err=True)
            rc = signalled[0] if signalled and not rc else rc  # the job did not complete its work: not 0
        click.echo(f"run-workers: {_outcome(until_done)}", err=True)
    raise SystemExit(rc)


def _signalled_from_outside(supervisor, config, commands,  # type: ignore[no-untyped-def]
                            since: tuple[float, str | None]) -> tuple[int, str] | None:
    """(128+signal, why) when a signal that did not come through this command stopped its workers, every one of
    which ended cleanly: `scancel --signal=TERM JOB` signals a job's steps (the workers' launcher), not its batch
    script. (0, why) for the job's early warning (``since``: when the workers started, and the --signal the job
    winds down on), which Slurm's `--signal=SIG@T` without `B:` sends to the steps. None otherwise: a stop of this
    command's own, or a worker that failed (its exit code says more)."""
    import redis

    from merlin_mdm.backends.celery.liveness import stop_signals

    started, early = since
    if supervisor.stopping or any(p.returncode for p in supervisor.procs):
        return None
    try:
        found = stop_signals(config, [c.node.split("@")[0] + "@" for c in commands if c.node], started)
    except (redis.RedisError, OSError):  # the status server is gone: say what is known
        return None
    planned = f"SIG{early.upper().removeprefix('SIG')}" if early else None
    names = sorted({sig for sig in found.values() if sig.startswith("SIG") and sig != planned},
                   key=lambda sig: (sig != "SIGTERM", sig))
    if not names:
        return (0, f"the job's early warning ({planned}) reached them: its walltime nears; the units they ran went "
                   "back to the queue") if planned in found.values() else None
    try:
        signum = int(signal.Signals[names[0]])
    except KeyError:
        return None
    return 128 + signum, (f"{' and '.join(names)} from outside this command stopped them (`scancel --signal=TERM "
                          "JOB` signals a job's steps, not its batch script: `scancel JOB` ends the job, `scancel "
                          "-b --signal=TERM JOB` stops it warmly); the units they ran went back to the queue")


def _why_ended(supervisor) -> str:  # type: ignore[no-untyped-def]
    """Why the workers ended when nothing here stopped them: from outside (exit code 0), or by failing."""
    from merlin_mdm.backends.celery.in_allocation import MAX_RESPAWNS

    failed = {supervisor.names[i]: p.returncode for i, p in enumerate(supervisor.procs) if p.returncode}
    if not failed:
        return ("they stopped by themselves: a unit that did not fit in the time left was given back (the job's "
                "output says which), or `stop-workers` asked")
    listed = ", ".join(f"{name} (exit code {rc})" for name, rc in failed.items())
    again = f", each started again up to {MAX_RESPAWNS} times" if supervisor.respawn is not None else ""
    return f"worker(s) {listed} ended by themselves{again}: their log says why"


@contextlib.contextmanager
def _exit_code_recorded() -> Iterator[None]:
    """Write the command's exit code to MERLIN_MDM_EXIT_CODE_FILE at its end (a batch script `exec`s run-workers
    and reads it there); the variable is not passed on to the workers."""
    target = os.environ.pop("MERLIN_MDM_EXIT_CODE_FILE", "")
    code = 1
    try:
        yield
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    except MerlinMdmError as exc:
        code = exc.exit_code
        raise
    except KeyboardInterrupt:
        code = 130
        raise
    finally:
        if target:
            with contextlib.suppress(OSError):
                Path(target).write_text(f"{code}\n", encoding="utf-8")


def _outcome(workspace: Path) -> str:
    """Where the study in ``workspace`` stands (how it ended, once over), for the last line of `run-workers
    --until-done`."""
    from merlin_mdm.errors import MerlinMdmError
    from merlin_mdm.status.states import TaskState
    from merlin_mdm.studies import study_status

    try:
        snap = study_status(workspace)
    except MerlinMdmError as exc:
        if not workspace.is_dir():
            return (f"the workspace {workspace} was moved or deleted while the workers served it (they recorded "
                    f"what was left as not run): move it back and `merlin-mdm restart {workspace}`")
        if not (workspace / "merlin_info" / "plan.json").is_file():
            return (f"{workspace}/merlin_info/plan.json was deleted while the workers served the study: no "
                    "command can read it or restart it until the file is put back")
        return f"its status cannot be read: {exc}"
    bad = ", ".join(f"{n} {what}" for n, what in ((snap.count_failed, "failed"), (snap.count_not_run, "did not run"))
                    if n)
    done = f"{snap.count(TaskState.FINISHED)} of {snap.total} task(s) finished"
    if not bad:
        return f"study {snap.name} {snap.state.value}: {done}"
    return f"study {snap.name} {snap.state.value}: {done}, {bad}: `merlin-mdm status {snap.workspace}` lists them"


def _visibility_env(spec: Path) -> dict[str, str]:
    """The visibility timeout derived from the newest workspace of ``spec`` (nothing when it has none)."""
    from merlin_mdm.backends.celery.backend import derived_visibility
    from merlin_mdm.config import VISIBILITY_ENV
    from merlin_mdm.errors import WorkspaceError
    from merlin_mdm.studies import find_workspace

    try:
        seconds = derived_visibility(find_workspace(spec).load_plan())
    except WorkspaceError:
        return {}
    if seconds is None:
        click.echo("visibility_timeout: 86400 s (a step has no walltime; a dead worker's units come back "
                   "after a day: set walltimes, or visibility_timeout in app.yaml)", err=True)
        return {}
    click.echo(f"visibility_timeout: {seconds} s (derived from the study's walltimes): a dead worker's units "
               "come back within it", err=True)
    return {VISIBILITY_ENV: str(seconds)}


@click.command("queue-info")
@click.argument("spec", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--queues", multiple=True, help="Queues to show (default: those of SPEC, else 'merlin').")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--dump", type=GivenPath(dir_okay=False, path_type=Path),
              help="Also write the table to this .csv or .json file (Merlin's `queue-info --dump`).")
@_vars_opt
def queue_info(spec: Path | None, queues: tuple[str, ...], as_json: bool, dump: Path | None,
               variables: tuple[str, ...]) -> None:
    """Messages waiting and consumers per queue.

    \b
    Examples:
      merlin-mdm queue-info                     the default queue, merlin
      merlin-mdm queue-info study.yaml          the queues of a spec's steps
      merlin-mdm queue-info --queues sims       the queue named (repeatable)
      merlin-mdm queue-info study.yaml --json   for scripts
    """
    from merlin_mdm.backends.celery.backend import check_server
    from merlin_mdm.backends.celery.workers import active_queues, queue_sizes, spec_queues

    _vars_need_spec(spec, variables)
    config = _config(spec)
    check_server(config)
    names = list(queues) or (sorted(set(spec_queues(_spec(spec, variables)).values())) if spec else ["merlin"])
    sizes = queue_sizes(config, names)
    workers = active_queues(config)
    rows = {q: {"messages": sizes[q], "consumers": sum(q in qs for qs in workers.values())} for q in names}
    if dump is not None:
        _dump_queues(rows, dump)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'queue':<24} {'messages':>9} {'consumers':>9}")
    for q, row in rows.items():
        click.echo(f"{q:<24} {row['messages']:>9} {row['consumers']:>9}")


def _dump_queues(rows: dict[str, dict[str, int]], path: Path) -> None:
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    elif path.suffix.lower() == ".csv":
        lines = ["queue,messages,consumers", *(f"{q},{r['messages']},{r['consumers']}" for q, r in rows.items())]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        raise UsageError(f"--dump {path}: the file must end in .csv or .json")


@click.command("query-workers")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def query_workers(as_json: bool) -> None:
    """The workers connected to the broker and the queues each consumes.

    \b
    Examples:
      merlin-mdm query-workers          each worker and the queues it takes
      merlin-mdm query-workers --json   for scripts
    """
    from merlin_mdm.backends.celery.backend import check_server
    from merlin_mdm.backends.celery.workers import active_queues

    config = _config()
    check_server(config)
    workers = active_queues(config)
    if as_json:
        click.echo(json.dumps(workers, indent=1))
    elif not workers:
        click.echo("no workers answered")
    for name, qs in sorted(workers.items()):
        if not as_json:
            click.echo(f"{name}: {', '.join(qs)}")


@click.command("stop-workers")
@click.option("--spec", "spec", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Stop the workers SPEC describes.")
@click.option("--queues", multiple=True, help="Stop the workers consuming these queues.")
@click.option("--workers", "patterns", multiple=True, help="Stop workers whose name matches (glob).")
@_vars_opt
def stop_workers(spec: Path | None, queues: tuple[str, ...], patterns: tuple[str, ...],
                 variables: tuple[str, ...]) -> None:
    """Stop workers after their current task: those named by --spec/--queues/--workers, or all.

    \b
    Examples:
      merlin-mdm stop-workers --spec study.yaml         the workers of a spec's worker groups
      merlin-mdm stop-workers --queues sims             those taking queue sims
      merlin-mdm stop-workers --workers 'simworkers*'   by name (glob)
    """
    from merlin_mdm.backends.celery.backend import check_server
    from merlin_mdm.backends.celery.workers import active_queues, group_matches, shutdown_workers, spec_workers

    _vars_need_spec(spec, variables)
    config = _config(spec)
    check_server(config)
    workers = active_queues(config)
    chosen = [w for w, qs in workers.items()
              if (not patterns and not queues and spec is None) or any(group_matches(p, w) for p in patterns)
              or any(q in qs for q in queues)]
    if spec is not None:
        chosen += [w for w in spec_workers(config, _spec(spec, variables), str(spec.resolve()), workers)
                   if w not in chosen]
    if not chosen:
        click.echo("no matching worker answered")
        return
    shutdown_workers(config, chosen)
    click.echo(f"asked {len(chosen)} worker(s) to stop: {', '.join(sorted(chosen))}")


@click.command()
@_spec_arg
@click.option("-f", "--force", is_flag=True, help="Do not ask.")
@click.option("--steps", multiple=True, help="Only the queues of these steps; repeatable.")
@click.option("--only-mine", is_flag=True,
              help="Only the messages of SPEC's own studies (its workspaces); other studies' stay queued.")
@_vars_opt
def purge(spec: Path, force: bool, steps: tuple[str, ...], only_mine: bool, variables: tuple[str, ...]) -> None:
    """Delete the messages waiting in SPEC's queues (asks first, saying how many of which study it would delete).

    As in Merlin, every message waiting in the queues goes, other studies' too (the question marks them);
    --only-mine keeps those of studies that are not SPEC's.

    \b
    Examples:
      merlin-mdm purge study.yaml                  delete what waits in the spec's queues (asks first)
      merlin-mdm purge study.yaml --only-mine      only the messages of this spec's studies
      merlin-mdm purge study.yaml -f --steps sim   step sim's queue, without asking
      merlin-mdm restart WS                        afterwards: queue the study's unfinished work again
    """
    from merlin_mdm.backends.celery.backend import check_server, record_purge
    from merlin_mdm.backends.celery.broker import purge_queues, waiting_by_study
    from merlin_mdm.backends.celery.workers import spec_queues
    from merlin_mdm.study.workspace import studies_of

    config = _config(spec)
    check_server(config)
    parsed = _spec(spec, variables)
    names = sorted(set(spec_queues(parsed, steps).values()))
    mine = studies_of(parsed)
    drop = (lambda ws: ws is not None and mine(ws)) if only_mine else None
    if not force:
        total, _, studies = waiting_by_study(config, names)
        count = sum(n for ws, n in studies.items() if mine(ws)) if only_mine else total
        if not count:
            click.echo(f"nothing to purge: queue(s) {', '.join(names)} hold no waiting message"
                       + (" of this spec's studies" if only_mine and total else ""))
            return
        if not _purge_confirmed(names, (total, count), studies, mine, only_mine):
            click.echo("nothing purged")
            return
    total, lost = purge_queues(config, names, drop)
    record_purge(config, lost)
    click.echo(f"purged {total} message(s) from {', '.join(names)}")
    for workspace, n in sorted(lost.items()):
        other = "" if mine(workspace) else " (not a study of this spec)"
        click.echo(f"  {n} of study {workspace}{other}: `merlin-mdm restart {workspace}` queues its unfinished "
                   "work again")


def _purge_confirmed(names: list[str], totals: tuple[int, int], studies: Mapping[str, int],
                     mine: Callable[[str], bool], only_mine: bool) -> bool:
    """Ask before deleting, saying how many messages of which study would go (``totals``: waiting, and to be
    deleted); a closed stdin (a batch script, `< /dev/null`) is refused rather than taken as yes or no."""
    total, count = totals
    lines = [f"  {n} of study {ws}" + ("" if mine(ws) else " (NOT a study of this spec: another user's or spec's)")
             for ws, n in sorted(studies.items()) if mine(ws) or not only_mine]
    other = total - sum(studies.values())
    if other and not only_mine:
        lines.append(f"  {other} of no merlin-mdm study")
    which = "of this spec's studies" if only_mine else "(every waiting message)"
    question = "\n".join([f"Queue(s) {', '.join(names)} hold {total} waiting message(s); this deletes {count} "
                          f"{which}:", *lines, "Delete them?"])
    return confirmed(question, "purge")


@click.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--sleep", "interval", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between checks.")
@click.option("--signal", "early_signal", metavar="SIG", envvar="MERLIN_MDM_SIGNAL",
              help="Also end on this signal (exit 128+signal), as on SIGTERM, SIGINT and SIGHUP.")
def monitor(target: Path, interval: float, early_signal: str | None) -> None:
    """Block while the study of TARGET (a spec or workspace) still has work; exit 0 when it is over.

    Run it last in a batch job that starts workers, so the allocation ends with the study. A study run with
    --local is read from its workspace (no broker needed); one whose runner died counts as over (interrupted).

    \b
    Examples:
      merlin-mdm monitor study.yaml      block until the newest study of the spec is over
      merlin-mdm monitor WS --sleep 30   look every 30 s
    """
    with watch_signals(parse_signal(early_signal)) as watch:
        _monitor(target, interval, watch)


def _monitor(target: Path, interval: float, watch: SignalWatch) -> None:
    from merlin_mdm.backends.celery.backend import CeleryBackend, wait_for_status_server
    from merlin_mdm.backends.celery.in_allocation import study_is_over
    from merlin_mdm.status.redis_store import RedisStatusStore
    from merlin_mdm.studies import backend_of, find_workspace

    ws = find_workspace(target)
    if backend_of(ws) == "local":  # its status is in the workspace: no broker to ask
        _monitor_local(ws.root, interval, watch)
        return
    backend = CeleryBackend()
    config = backend.config(ws)
    wait = functools.partial(wait_for_status_server, config, interval, watch.pause,
                             lambda line: click.echo(f"monitor: {line}", err=True))
    wait()
    store = cast(RedisStatusStore, backend.status_store(ws))
    news = _MonitorNews(functools.partial(_serving, config, ws.load_plan()))
    try:
        while True:
            snap = store.snapshot()
            if study_is_over(store):
                click.echo(f"{snap.name}: {snap.state} {snap.message}".rstrip())
                return
            news.look(snap)
            watch.pause(interval)  # ends at once on a stop signal, even one whose raise was swallowed
            wait()
    finally:
        store.close()


def _serving(config: AppConfig, plan: StudyPlan) -> bool | None:
    """Whether any worker serves ``plan``'s queues; None when the broker does not say (monitor waits on: an
    allocation whose last line it is must not end for a broker's hiccup)."""
    from kombu.exceptions import KombuError
    from redis import RedisError

    from merlin_mdm.backends.celery.backend import serving_workers

    try:
        return bool(serving_workers(config, plan))
    except (KombuError, RedisError, OSError, MerlinMdmError):
        return None


class _MonitorNews:
    """What `monitor` says on stderr while it waits (it was silent, also while no worker served the study): the
    task counts when they change, and, when they have not changed for six checks (a minute at the default
    --sleep), whether any worker serves the study's queues (said once each time that turns)."""

    QUIET_CHECKS = 6

    def __init__(self, serving: Callable[[], bool | None]):
        self.serving = serving
        self.counts: tuple[int, ...] = ()
        self.unchanged = 0
        self.served: bool | None = None

    def look(self, snap: StudySnapshot) -> None:
        counts = (snap.count(TaskState.FINISHED), snap.count(TaskState.RUNNING), snap.count_failed, snap.total)
        if counts != self.counts:
            self.counts, self.unchanged = counts, 0
            finished, running, failed, total = counts
            click.echo(f"monitor: {finished} of {total} task(s) finished, {running} running"
                       + (f", {failed} failed" if failed else ""), err=True)
            return
        self.unchanged += 1
        if self.unchanged % self.QUIET_CHECKS:
            return
        served = self.serving()
        if served is None:
            return
        if served != self.served and (self.served is not None or not served):
            click.echo("monitor: workers serve the study again" if served else
                       "monitor: no worker serves this study's queues, so nothing moves: start workers "
                       "(`merlin-mdm run-workers SPEC`, or `merlin-mdm launch SPEC` for batch jobs)", err=True)
        self.served = served


def _monitor_local(root: Path, interval: float, watch: SignalWatch) -> None:
    from merlin_mdm.studies import study_status

    while True:
        snap = study_status(root)  # a runner that died is recorded as interrupted: over
        if snap.state.over:
            click.echo(f"{snap.name}: {snap.state} {snap.message}".rstrip())
            return
        watch.pause(interval)


@click.command()
@click.option("--spec", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use the app.yaml next to this spec when there is one.")
def info(spec: Path | None) -> None:
    """Which broker and status store are configured, and whether they answer (within 5 s).

    \b
    Examples:
      merlin-mdm info                     the broker in effect, and whether it answers
      merlin-mdm info --spec study.yaml   the app.yaml a spec would use
    """
    import celery
    import redis

    from merlin_mdm.backends.celery.backend import check_server

    config = _config(spec)
    click.echo(f"configuration: {config.source}")
    click.echo(f"broker:        {config.broker.safe_url()}")
    click.echo(f"status store:  {config.status.safe_url()}")
    click.echo(f"celery {celery.__version__}, redis-py {redis.__version__}")
    check_server(config, timeout=2.0)
    if config.results is not None:
        check_server(config, timeout=2.0, what="status store")
    client = config.broker.client(timeout=2.0, retry=False)
    try:
        version = client.info("server").get("redis_version", "?")
    finally:
        client.close()
    click.echo(f"broker reachable: redis {version}")


@click.group()
def server() -> None:
    """A local redis-server (loopback, generated password, no persistence unless --persist).

    \b
    Examples:
      merlin-mdm server start    a loopback redis-server; app.yaml points at it
      merlin-mdm server status   is it running, on which port
      merlin-mdm server stop     stop it
    """


@server.command("start")
@click.option("--port", type=click.IntRange(1, 65535),
              help="[default: the last one used, else 6379; a free one when that is taken]")
@click.option("--persist", is_flag=True, help="Keep the data on disk (append-only file) across restarts.")
def server_start(port: int | None, persist: bool) -> None:
    """Start the server and point ~/.merlin-mdm/app.yaml at it.

    \b
    Examples:
      merlin-mdm server start             a free port, a generated password
      merlin-mdm server start --persist   keep the queues over a restart (append-only file)
    """
    from merlin_mdm.server import LocalRedisServer, write_user_config

    srv = LocalRedisServer.default()
    config = srv.start(port, persist)
    path, written = write_user_config(config)
    click.echo(f"redis-server running on 127.0.0.1:{config.port}; password in {srv.password_file}")
    if written:
        click.echo(f"wrote {path}: other merlin-mdm commands now use this server")
    else:
        click.echo(f"kept your {path}; point its broker at 127.0.0.1:{config.port} with "
                   f"password_file {srv.password_file}", err=True)


@server.command("stop")
def server_stop() -> None:
    """Stop the server `server start` started (and no other).

    \b
    Examples:
      merlin-mdm server stop   stop the server `server start` started
    """
    from merlin_mdm.server import LocalRedisServer

    stopped = LocalRedisServer.default().stop()
    click.echo("stopped" if stopped else "no server started by merlin-mdm is running")


@server.command("status")
def server_status() -> None:
    """Whether the server runs, on which port.

    \b
    Examples:
      merlin-mdm server status   running or not, and on which port
    """
    from merlin_mdm.server import LocalRedisServer

    state = LocalRedisServer.default().status()
    click.echo(state.detail)
    if not state.running:
        sys.exit(1)
