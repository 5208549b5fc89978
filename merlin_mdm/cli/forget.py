"""`forget`: delete a study's record from the status store (Redis), which keeps every study queued on it."""

from __future__ import annotations

from pathlib import Path

import click

from merlin_mdm.cli.prompts import confirmed
from merlin_mdm.errors import StatusError, StatusRecordLost, UsageError

__all__ = ["forget"]


@click.command()
@click.argument("workspace", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-f", "--force", is_flag=True, help="Do not ask.")
def forget(workspace: Path, force: bool) -> None:
    """Delete the record of the study in WORKSPACE from the status store (its Redis keys).

    A study queued with `run` keeps its record (task counts, failures, dependency counts) on the status server
    until it is forgotten: nothing expires it, so a shared server grows with every study. Only a study that is
    over (finished, failed, stopped, purged) is forgotten; one with work queued or running is refused. The
    workspace and its files stay: `status` then says the server holds no record, and `merlin-mdm restart
    WORKSPACE` records the study again, counting its done-markers (its units are queued again, and workers find
    their finished tasks done without running them). A study run with --local keeps its record in the
    workspace (merlin_info/status.db): deleting the workspace forgets it.

    \b
    Examples:
      merlin-mdm forget studies/sim_20261207-101500       asks first, naming the study and its state
      merlin-mdm forget studies/sim_20261207-101500 -f    without asking (scripts)
    """
    from merlin_mdm.backends.celery.backend import CeleryBackend
    from merlin_mdm.backends.celery.in_allocation import study_is_over
    from merlin_mdm.status.model import TaskState
    from merlin_mdm.status.redis_store import RedisStatusStore
    from merlin_mdm.studies import backend_of, find_workspace

    ws = find_workspace(workspace)
    if backend_of(ws) == "local":
        raise UsageError(f"{ws.root} was run with --local: its record is {ws.status_path}, in the workspace; "
                         "delete the workspace to forget the study")
    store = CeleryBackend().status_store(ws, patient=False)
    if not isinstance(store, RedisStatusStore):  # the celery backend's store is Redis's
        raise StatusError(f"{ws.root}: its status store is not the Redis one `forget` deletes from")
    try:
        try:
            snap = store.snapshot()
        except StatusRecordLost:
            click.echo(f"the status store holds no record of {ws.root}: nothing to forget")
            return
        running = snap.count(TaskState.RUNNING)
        if not study_is_over(store) or running:  # a purged study's held units still run to their end
            raise StatusError(f"{snap.name} is {snap.state} with work left"
                              + (f" ({running} task(s) still running)" if running else "")
                              + ": forget a study once it is over (`merlin-mdm purge` its waiting messages and "
                              "`merlin-mdm stop-workers`, or let it end); its workers would record into a deleted "
                              "record")
        if not force and not confirmed(f"Forget study {snap.name} ({ws.root}, {snap.state}, "
                                        f"{snap.total} task(s))? The workspace stays", "forget"):
            click.echo("nothing forgotten")
            return
        deleted = store.forget()
    finally:
        store.close()
    click.echo(f"forgot {snap.name}: {deleted} key(s) deleted from the status store; the workspace stays "
               f"(`merlin-mdm restart {ws.root}` records it again, counting its done-markers)")

