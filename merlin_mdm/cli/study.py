"""`run`, `validate` and `restart` (`status` is in cli/status.py, which imports little)."""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from merlin_mdm.backends.base import RunOptions, RunReport
from merlin_mdm.errors import BrokerError, MerlinMdmError, UsageError
from merlin_mdm.signals import parse_signal, watch_signals
from merlin_mdm.spec import parse_vars
from merlin_mdm.status.render import render_table, to_json
from merlin_mdm.studies import StudyRequest, find_workspace, restart_study, start_study
from merlin_mdm.study.pgen import parse_pargs

if TYPE_CHECKING:
    from merlin_mdm.study.layout import Workspace

__all__ = ["restart", "run", "validate"]

WORKERS_HELP = ("Worker slots: the local runner's (a task takes procs x cores per task of them), and what `run` "
                "sizes units for [default: the allocation's cores, else this machine's].")

_spec_arg = click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
_vars_opt = click.option("--vars", "variables", multiple=True, metavar="KEY=VALUE",
                         help="Override (or add) an env variable; repeatable.")


_grace_opt = click.option(
    "--grace", default=10.0, show_default=True, type=click.FloatRange(0), envvar="MERLIN_MDM_GRACE",
    help="Seconds running tasks get to finish after SIGTERM/SIGINT/SIGHUP or --signal; then they get SIGTERM, and "
         "SIGKILL up to 5 s later [env MERLIN_MDM_GRACE].")
_signal_opt = click.option(
    "--signal", "early_signal", metavar="SIG", envvar="MERLIN_MDM_SIGNAL",
    help="Also wind down on this signal, e.g. USR1 for Slurm's `--signal=USR1@120` [env MERLIN_MDM_SIGNAL].")


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def _report(report: RunReport, as_json: bool) -> None:
    if as_json:
        click.echo(to_json(report.snapshot))
    else:
        render_table(report.snapshot, sys.stderr)
    if report.message:
        _echo_err(f"{report.state}: {report.message}")


@click.command()
@_spec_arg
@click.option("--local", is_flag=True, help="Run on this machine with the embedded runner (no server).")
@_vars_opt
@click.option("--samplesfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use these samples (.npy/.csv/.tab) instead of merlin.samples.file.")
@click.option("--pgen", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Maestro parameter generator file (defines get_custom_generator).")
@click.option("--pargs", multiple=True, metavar="KEY:VALUE", help="Argument for --pgen; repeatable.")
@click.option("--workers", type=click.IntRange(1), help=WORKERS_HELP)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1),
              help="Most samples per work unit; the last units shrink so every worker (--workers) has work.")
@click.option("--dry", is_flag=True, help="Write the workspace and every task's script; run nothing.")
@click.option("--no-errors", is_flag=True,
              help="Accepted for Merlin's scripts (its `--dry --local --no-errors` ignores a missing Flux); merlin-mdm "
                   "writes flux launcher lines without asking Flux, so there is nothing to ignore.")
@click.option("--no-progress", is_flag=True, help="Do not show a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON on stdout.")
@_grace_opt
@_signal_opt
def run(spec: Path, local: bool, variables: tuple[str, ...], samplesfile: Path | None, pgen: Path | None,
        pargs: tuple[str, ...], workers: int | None, batch_size: int, dry: bool, no_errors: bool, no_progress: bool,
        as_json: bool, grace: float, early_signal: str | None) -> None:
    """Expand SPEC into its tasks and run them (--local) or queue them on the Redis broker.

    \b
    Examples:
      merlin-mdm run study.yaml --local               run everything here, in parallel
      merlin-mdm run study.yaml --local --vars N=10   override an env variable
      merlin-mdm run study.yaml                       queue for `merlin-mdm run-workers`
      merlin-mdm run study.yaml --dry                 write the scripts, run nothing
      merlin-mdm run study.yaml --dry --local --no-errors   Merlin's dry-run habit (accepted)

    The exit code is 0 when every task finished and 1 when any failed or did not run. On SIGTERM, SIGINT,
    SIGHUP (or --signal) no new task starts, running ones get --grace seconds, and the exit code is
    128+signal; `merlin-mdm restart` resumes.
    """
    if pargs and pgen is None:
        raise UsageError("--pargs are arguments of a --pgen parameter generator; give --pgen too")
    request = StudyRequest(spec, parse_vars(variables), samplesfile, pgen, parse_pargs(pargs),
                           "local" if local else "celery", batch_size, dry, workers)
    with watch_signals(parse_signal(early_signal)) as watch:
        options = RunOptions(workers, progress=not no_progress and not as_json and sys.stderr.isatty(),
                             on_event=_echo_err, signals=watch, grace=grace)
        ws, report = _started(request, options)
    _echo_err(f"workspace: {ws.root}")
    if report is None:
        from merlin_mdm.study.graph import describe_plan

        plan = ws.load_plan()
        for line in describe_plan(plan):
            click.echo(line)
        if not local:
            from merlin_mdm.backends.celery.backend import describe_queueing

            for line in describe_queueing(plan):
                click.echo(line)
        _echo_err("dry run: scripts written, nothing ran or was queued")
        return
    _report(report, as_json)
    sys.exit(report.exit_code)


def _started(request: StudyRequest, options: RunOptions) -> tuple[Workspace, RunReport | None]:
    """:func:`start_study`; a broker that does not answer a queueing `run` also names --local (a newcomer on one
    machine has most likely forgotten it)."""
    try:
        return start_study(request, options)
    except BrokerError as err:
        if request.backend == "local" or "cannot reach the broker" not in str(err):
            raise
        raise BrokerError(f"{err}; or run the study on this machine without a server: add --local") from None


@click.command()
@_spec_arg
@_vars_opt
@click.option("--strict", is_flag=True, help="Treat warnings (e.g. an unknown $(TOKEN) like a known one) as errors.")
def validate(spec: Path, variables: tuple[str, ...], strict: bool) -> None:
    """Check SPEC and print every problem at once, with file:line:col and a hint.

    Exit code 0 when the spec is valid (warnings are printed), 2 otherwise. A $(...) that is no token goes
    to the shell unchanged, as in Maestro; one that looks like a misspelt token is a warning. Notes name what
    runs here but Merlin 1.13 refuses (a step without a description): they never fail, --strict or not.

    \b
    Examples:
      merlin-mdm validate study.yaml               every problem at once, with file:line:col
      merlin-mdm validate study.yaml --vars N=10   with a variable overridden, as `run` would
      merlin-mdm validate study.yaml --strict      warnings (unknown tokens) fail too: for CI
    """
    from merlin_mdm.studies import validate_study

    loaded, plan = validate_study(spec, parse_vars(variables), strict)
    for warning in (*loaded.warnings, *loaded.notes):
        _echo_err(str(warning))
    s = loaded.spec
    click.echo(f"{spec}: valid: {_count(len(s.steps), 'step')}, {_count(len(s.parameters), 'parameter')}"
               + (f", samples with columns {', '.join(s.samples.column_labels)}" if s.samples else ""))
    if len(plan.instances) > len(s.steps):  # what the parameters make of the steps: 1,000,000 folders is news
        click.echo(f"{spec}: the parameters make {len(plan.instances):,} step instance(s) (one folder each"
                   + (", times the samples)" if s.samples else ")"))


@click.command()
@click.argument("workspace", type=click.Path(exists=True, path_type=Path))
@click.option("--workers", type=click.IntRange(1), help=WORKERS_HELP)
@click.option("--no-progress", is_flag=True, help="Do not show a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON on stdout.")
@click.option("--wait", is_flag=True, help="When another runner holds the study, wait for it to end.")
@click.option("--local", is_flag=True, help="Run the rest here with the embedded runner, whatever ran it before.")
@click.option("--release", is_flag=True,
              help="Celery: give the broker's messages of this study that workers took and never finished (the "
                   "workers are gone: a node died, an allocation was killed) back to their queues now, instead "
                   "of after the visibility timeout. Refused while any worker serves the study's queues.")
@_grace_opt
@_signal_opt
def restart(workspace: Path, workers: int | None, no_progress: bool, as_json: bool, wait: bool, local: bool,
            release: bool, grace: float, early_signal: str | None) -> None:
    """Resume the study in WORKSPACE: finished tasks are skipped, the rest run again.

    One runner per study: while another `run` or `restart` holds it, this one is refused (naming its pid and
    host), or waits with --wait. Signals are handled as by `run`.

    \b
    Examples:
      merlin-mdm restart studies/hello_20260101-120000   run what did not finish (same backend)
      merlin-mdm restart WS --local --workers 4          finish a Celery study here, 4 at a time
      merlin-mdm restart WS --wait                       wait for the runner that holds it, then resume
      merlin-mdm restart WS --release                    Celery: give back units a killed worker held
    """
    if workspace.is_file():
        _refuse_a_spec(workspace)
    if release:
        from merlin_mdm.backends.celery.release import release_held

        click.echo(release_held(workspace))
        return
    with watch_signals(parse_signal(early_signal)) as watch:
        options = RunOptions(workers, progress=not no_progress and not as_json and sys.stderr.isatty(),
                             on_event=_echo_err, signals=watch, grace=grace)
        ws, report = restart_study(workspace, options, wait, "local" if local else None)
    _echo_err(f"workspace: {ws.root}")
    _report(report, as_json)
    sys.exit(report.exit_code)


def _refuse_a_spec(path: Path) -> None:
    """`restart SPEC` said "Directory 'study.yaml' is a file": name the workspace it likely meant."""
    newest = ""
    if path.suffix in (".yaml", ".yml"):
        with contextlib.suppress(MerlinMdmError):
            newest = f": its spec's newest study is {shlex.quote(str(find_workspace(path).root))}"
    raise UsageError(f"restart takes a study's workspace, not a file ({path}){newest}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
