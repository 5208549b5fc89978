"""`status`: kept apart from the other commands so that it imports little (a status read should be instant)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["status"]


@click.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--dump", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the status to this .csv or .json file (Merlin's `status --dump`).")
def status(target: Path, as_json: bool, dump: Path | None) -> None:
    """Show where a study stands: task counts per step and state, elapsed time, failures with log paths.

    TARGET is a workspace directory, or a spec file (its newest workspace is shown).
    """
    from merlin_mdm.status.render import console_width, dump_snapshot, render_table, snapshot_to_dict, to_json
    from merlin_mdm.studies import find_workspace, study_status

    ws = find_workspace(target)
    snap = study_status(ws.root)
    if dump is not None:
        dump_snapshot(snap, dump)
    launched = ws.batch.is_dir()  # only studies `launch` submitted allocations for have any to show
    if as_json:
        if launched:
            import json

            from merlin_mdm.cli.batch import allocations_json

            click.echo(json.dumps({**snapshot_to_dict(snap), "allocations": allocations_json(target)}, indent=2))
        else:
            click.echo(to_json(snap))
        return
    from rich.console import Console

    render_table(snap, Console(width=console_width(sys.stdout)))
    if launched:
        from merlin_mdm.cli.batch import show_allocations

        show_allocations(target)
