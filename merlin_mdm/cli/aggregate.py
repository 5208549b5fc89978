"""``merlin-mdm aggregate``: collect a study's metrics files into results.h5, a CSV, Table 1 and a plot.

Run it under MPI with ``mpiexec -n 4 merlin-mdm aggregate WS --mpi`` (or ``$(LAUNCHER)`` in a spec step).
Also runnable as ``python -m merlin_mdm.cli.aggregate`` (what the MPI tests launch).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from merlin_mdm.cli.paths import GivenPath

if TYPE_CHECKING:
    from merlin_mdm.results.aggregate import AggregateReport

__all__ = ["aggregate_command"]

_PATH = GivenPath(dir_okay=False, path_type=Path)


@click.command("aggregate")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--out", type=_PATH, default=Path("results.h5"), show_default=True, help="The HDF5 results file.")
@click.option("--csv", "csv_path", type=_PATH, help="CSV of the run table [default: OUT with .csv].")
@click.option("--markdown", "markdown_path", type=_PATH,
              help="The report (Table 1, equal-compute verdicts) in Markdown [default: OUT with .md].")
@click.option("--plot", "plot_path", type=_PATH,
              help="PNG of accuracy against mean NFE, and an SVG beside it [default: OUT with .png].")
@click.option("--title", default="Results", show_default=True, help="The report's first heading.")
@click.option("--command", "command_text", default="",
              help="The command that regenerates the study, printed at the top of the report.")
@click.option("--notes", "notes_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A Markdown file appended to the report under 'Notes'.")
@click.option("--mpi", is_flag=True, help="Read in parallel on the MPI ranks of mpiexec; rank 0 writes.")
@click.option("--strict", is_flag=True, help="Exit 1 when any run's file is missing, incomplete or corrupt.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of tables.")
def aggregate_command(
    sources: tuple[str, ...], out: Path, csv_path: Path | None, markdown_path: Path | None, plot_path: Path | None,
    title: str, command_text: str, notes_path: Path | None, mpi: bool, strict: bool, as_json: bool,
) -> None:
    """Aggregate the metrics files of SOURCE (a glob, or a workspace directory searched for *.h5).

    Several SOURCEs pool their runs into one table and one report: studies run in batches (the same
    spec with other training seeds) aggregate as one, their lines and seeds matched by the runs'
    attributes. Table paths are then as found (a workspace's under the directory as given).

    A results file named by its path as a SOURCE (not reached by a glob or inside a workspace directory)
    is read as the runs it holds: an earlier aggregation pools with others, or is reported again, after
    its workspace is gone (a purged scratch file system). Its runs show as RESULTS_FILE:PATH.

    \b
    Examples:
      merlin-mdm aggregate studies/sweep_20261205-0928 --out results.h5
      merlin-mdm aggregate 'studies/sweep_*/eval/**/*.h5' --out results.h5
      merlin-mdm aggregate studies/batch1_* studies/batch2_* --out pooled/results.h5
      merlin-mdm aggregate kept/batch1.h5 kept/batch2.h5 studies/batch3_* --out pooled/results.h5

    Every file that is missing, incomplete (a killed run), corrupt, truncated or not a metrics file is
    listed, here and in the results file's problems table; none is dropped silently.
    """
    from merlin_mdm.errors import ResultsError
    from merlin_mdm.results.aggregate import aggregate, default_outputs

    comm = None
    if mpi:
        from merlin_mdm.results.mpi_gather import world

        comm = world()
    notes = notes_path.read_text(encoding="utf-8") if notes_path is not None else ""
    command_text = _with_study_vars(command_text, sources)
    outputs = default_outputs(out, csv_path, markdown_path, plot_path, title, command_text, notes)
    report = aggregate(sources, outputs, comm=comm, progress=not as_json)
    if report is None:  # a non-root MPI rank: rank 0 reports
        return
    if as_json:
        _render_json(report)
    else:
        _render(report)
    for line in (*report.mixed_denoisers, *report.repeated_evaluations):
        click.echo(f"warning: {line}", err=True)
    if strict and report.failures:
        raise ResultsError(f"{len(report.failures)} run file(s) missing, incomplete, corrupt or invalid (--strict)")


def _with_study_vars(command: str, sources: tuple[str, ...]) -> str:
    """``command`` (the report's "regenerate with") followed by the --vars its study ran with, as a shell comment,
    when a SOURCE is a workspace run with --vars: the spec's REGENERATE variable cannot know them (a study run
    with --vars TRAIN_STEPS=150 reported the plain command)."""
    from merlin_mdm.study.layout import Workspace

    if not command:
        return command
    for source in sources:
        copy = Workspace(Path(source)).spec_copy("partial") if Path(source, "merlin_info").is_dir() else None
        try:
            first = copy.read_text(encoding="utf-8").split("\n", 1)[0] if copy is not None else ""
        except (OSError, UnicodeDecodeError):
            continue
        if first.startswith("# run with --vars "):
            given = first.removeprefix("# run with ").split(" (filled in below", 1)[0]
            return f"{command}  # the study ran with {given}"
    return command


def _render(report: AggregateReport) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from merlin_mdm.status.render import console_width

    console = Console(width=console_width(sys.stdout))
    written = [str(p) for p in (report.outputs.csv, report.outputs.markdown, report.outputs.plot) if p is not None]
    # soft_wrap: a path is never broken across lines (`aggregate ... | cat`, copy and paste)
    # markup=False, Text cells: a path is printed as it is (`[/red]` in one ended aggregate in a MarkupError, and
    # `study[ab]_1.out` was shown as `study_1.out`)
    console.print(f"Aggregated {report.table.n_rows} runs from {report.n_files} files into "
                  f"{report.outputs.results}" + (f" (and {', '.join(written)})" if written else "") +
                  _replaced(report), soft_wrap=True, markup=False, highlight=False)
    if report.table.problems:
        table = Table(title=f"{len(report.table.problems)} files not used", title_justify="left")
        for name in ("file", "kind", "why"):
            table.add_column(name, overflow="fold")
        for problem in report.table.problems:
            table.add_row(Text(problem.path), Text(problem.kind), Text(problem.message))
        console.print(table)


def _replaced(report: AggregateReport) -> str:
    """Said when an earlier results file was written over (a study's aggregate run again does it on purpose)."""
    if report.replaced_runs is None:
        return ""
    return f"; it replaced the earlier results file there ({report.replaced_runs} runs)"


def _render_json(report: AggregateReport) -> None:
    from dataclasses import asdict

    outputs = {key: (str(value) if value is not None else None) for key, value in asdict(report.outputs).items()}
    payload = {
        "runs": report.table.n_rows,
        "files": report.n_files,
        "outputs": outputs,
        "problems": [asdict(problem) for problem in report.table.problems],
        "mixed_denoisers": list(report.mixed_denoisers),
        "repeated_evaluations": list(report.repeated_evaluations),
        "replaced_runs": report.replaced_runs,
    }
    click.echo(json.dumps(payload, indent=2, sort_keys=True))


def _main() -> None:
    from merlin_mdm.errors import MerlinMdmError

    try:
        aggregate_command()
    except MerlinMdmError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    _main()
