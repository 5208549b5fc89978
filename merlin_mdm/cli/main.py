"""The `merlin-mdm` command: thin click commands that parse, call one function and render."""

from __future__ import annotations

import importlib
import os
import re
import sys

import click

from merlin_mdm import __version__
from merlin_mdm.cli.output import finish_output, guard_output, release_output
from merlin_mdm.errors import Interrupted, MerlinMdmError, out_of_memory_hint
from merlin_mdm.signals import watch_signals

__all__ = ["LISTS", "MerlinGroup", "cli", "main", "signal_cause", "spread_vars"]

EPILOG = """\b
Quick start:
  merlin-mdm example hello          copy a first study into ./hello
  merlin-mdm run hello/hello.yaml --local
  merlin-mdm status hello/hello.yaml
"""


# Each command's module is imported when the command is used (or when --help lists them all), so that a
# quick command such as `status` does not load the Celery, batch and PyTorch-facing modules.
COMMANDS = {
    "run": "merlin_mdm.cli.study:run",
    "validate": "merlin_mdm.cli.study:validate",
    "status": "merlin_mdm.cli.status:status",
    "detailed-status": "merlin_mdm.cli.status:detailed_status",
    "restart": "merlin_mdm.cli.study:restart",
    "example": "merlin_mdm.cli.examples:example",
    "run-workers": "merlin_mdm.cli.distributed:run_workers",
    "queue-info": "merlin_mdm.cli.distributed:queue_info",
    "query-workers": "merlin_mdm.cli.distributed:query_workers",
    "stop-workers": "merlin_mdm.cli.distributed:stop_workers",
    "purge": "merlin_mdm.cli.distributed:purge",
    "forget": "merlin_mdm.cli.forget:forget",
    "monitor": "merlin_mdm.cli.distributed:monitor",
    "info": "merlin_mdm.cli.distributed:info",
    "server": "merlin_mdm.cli.distributed:server",
    "aggregate": "merlin_mdm.cli.aggregate:aggregate_command",
    "compare": "merlin_mdm.cli.compare:compare",
    "mdm": "merlin_mdm.cli.mdm:mdm",
    "launch": "merlin_mdm.cli.batch:launch",
    "dag": "merlin_mdm.cli.dag:dag",
}


class MerlinGroup(click.Group):
    """The top-level group: a MerlinMdmError becomes `Error: ...` on stderr and its exit code (2 or 1).

    Commands load lazily from :data:`COMMANDS`; commands added with ``add_command`` work as usual.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_vars(args))

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MerlinMdmError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None


# Merlin's options that take several space-separated values (argparse nargs="+"), per command, beside `--vars`
LISTS = {
    "run-workers": ("--steps",), "purge": ("--steps",), "queue-info": ("--queues",),
    "stop-workers": ("--queues", "--workers"),
    "detailed-status": ("--steps", "--task-queues", "--task-status", "--return-code", "--workers"),
}  # each a repeatable option of its command (tests/unit/cli/test_main.py checks)


def spread_vars(args: list[str]) -> list[str]:
    """Merlin's space-separated lists as click's repeated options: `--vars A=1 B=2` as `--vars A=1 --vars B=2`
    (any command), and for the commands of :data:`LISTS`, e.g. `detailed-status WS --steps a b` as `--steps a
    --steps b`. A word that is an existing path (the WORKSPACE or SPEC written after the list) ends a list."""
    command = next((arg for arg in args if arg in COMMANDS), "")  # after any group option, e.g. `-lvl DEBUG`
    lists = LISTS.get(command, ())
    out: list[str] = []
    option = ""  # the list option whose next word(s) are its values
    state = ""  # "value": the next argument is the option's own value; "more": further values may follow
    for arg in args:
        if state == "more" and _another_value(option, arg):
            out += [option, arg]
            continue
        out.append(arg)
        if state == "value":
            state = "more"
        elif arg == "--vars" or arg in lists:
            option, state = arg, "value"
        elif arg.startswith("--vars="):
            option, state = "--vars", "more"
        else:
            state = ""
    return out


def _another_value(option: str, arg: str) -> bool:
    if arg.startswith("-"):
        return False
    if option == "--vars":
        return "=" in arg and arg.split("=", 1)[0].isidentifier()
    return not os.path.exists(arg)


@click.group(cls=MerlinGroup, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "-v", "--version", prog_name="merlin-mdm")
@click.option("-lvl", "-l", "--level", "log_level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
              help="Log level (Python logging), as Merlin's `-lvl`.")
def cli(log_level: str) -> None:
    """Merlin-style ensemble workflows for masked discrete diffusion model experiments.

    A study spec (YAML, Merlin/Maestro format) expands into a DAG of tasks: steps x parameter
    combinations x samples. Run it on this machine with --local, or queue it on Redis for Celery
    workers started inside batch jobs.
    """
    import logging

    logging.basicConfig(level=log_level.upper(), format="[%(asctime)s: %(levelname)s] %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print `Error: ...` without a traceback."""
    guard_output()
    try:
        _main(argv)
    finally:
        release_output()


def _main(argv: list[str] | None) -> None:
    try:
        with watch_signals():  # SIGTERM/SIGHUP end any command like Ctrl-C: `Error: interrupted`, 128+signal
            rc = cli.main(args=argv, prog_name="merlin-mdm", standalone_mode=False)
            if not rc:  # a command that failed (a lost output too) has said so
                finish_output()
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
    except OSError as exc:
        problem = environment_problem(exc)
        if problem is None:
            raise
        click.echo(f"Error: {problem}", err=True)
        sys.exit(1)
    except Exception as exc:
        interrupted = signal_cause(exc)
        refused = server_problem(exc) if interrupted is None else None
        if interrupted is None and refused is None:
            raise
        click.echo(f"Error: {interrupted or refused}", err=True)
        sys.exit(interrupted.exit_code if interrupted is not None else 1)
    sys.exit(rc if isinstance(rc, int) else 0)


def server_problem(exc: BaseException) -> str | None:
    """What a Redis server's refusal that no command turned into a message says (out of memory, read-only, a
    lost connection), or None: the server's state, not a bug, so no traceback (queue-info, purge, stop-workers,
    run-workers printed one against a Redis at its maxmemory)."""
    redis = sys.modules.get("redis")
    kombu_errors = sys.modules.get("kombu.exceptions")
    current: BaseException | None = exc
    while current is not None:
        if redis is not None and isinstance(current, redis.RedisError):
            break
        if kombu_errors is not None and isinstance(current, kombu_errors.OperationalError):
            break
        current = current.__cause__ or current.__context__
    if current is None:
        return None
    text = (str(current).splitlines() or [type(current).__name__])[0]
    text = re.sub(r"^Command # \d+ \(.*?\) of pipeline caused error: ", "", text)  # redis-py's pipeline wrapper
    return f"the Redis server refused or lost the command: {text}{out_of_memory_hint(text)}"


def environment_problem(exc: OSError) -> str | None:
    """What an OS error that no command turned into a message says about the user's environment: a file or
    folder named on the command line that cannot be written or read, or a working directory deleted under the
    shell. None for one with no such cause (a bug: it keeps its traceback)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return ("the current directory no longer exists (it was deleted while the shell was in it): cd to an "
                "existing folder, or give absolute paths")
    if exc.filename is None:
        return None
    return f"{exc.filename}: {exc.strerror or exc}"


def signal_cause(exc: BaseException) -> Interrupted | None:
    """The :class:`Interrupted` a stop signal raised inside code that wrapped it, or None.

    A signal can arrive anywhere, e.g. while a module is being imported: Python turns an exception raised in a
    dataclass field's ``__set_name__`` into ``RuntimeError`` from it. The signal still decides the exit code.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


if __name__ == "__main__":  # pragma: no cover
    main()


