"""The `merlin-mdm` command: thin click commands that parse, call one function and render."""

from __future__ import annotations

import sys

import click

from merlin_mdm import __version__
from merlin_mdm.cli.aggregate import aggregate_command
from merlin_mdm.cli.batch import launch
from merlin_mdm.cli.distributed import (
    info,
    monitor,
    purge,
    query_workers,
    queue_info,
    run_workers,
    server,
    stop_workers,
)
from merlin_mdm.cli.examples import example
from merlin_mdm.cli.mdm import mdm
from merlin_mdm.cli.study import restart, run, status, validate
from merlin_mdm.errors import MerlinMdmError

__all__ = ["MerlinGroup", "cli", "main"]

EPILOG = """\b
Quick start:
  merlin-mdm example hello          copy a first study into ./hello
  merlin-mdm run hello/hello.yaml --local
  merlin-mdm status hello/hello.yaml
"""


class MerlinGroup(click.Group):
    """The top-level group: a MerlinMdmError becomes `Error: ...` on stderr and its exit code (2 or 1)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MerlinMdmError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None


@click.group(cls=MerlinGroup, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="merlin-mdm")
def cli() -> None:
    """Merlin-style ensemble workflows for masked discrete diffusion model experiments.

    A study spec (YAML, Merlin/Maestro format) expands into a DAG of tasks: steps x parameter
    combinations x samples. Run it on this machine with --local, or queue it on Redis for Celery
    workers started inside batch jobs.
    """


for command in (run, validate, status, restart, example, run_workers, queue_info, query_workers, stop_workers, purge,
                monitor, info, server, aggregate_command, mdm, launch):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print `Error: ...` without a traceback."""
    try:
        rc = cli.main(args=argv, prog_name="merlin-mdm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MerlinMdmError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()


