"""Showing a study's status: a rich table per step, or JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from merlin_mdm.status.model import StudySnapshot, TaskState

if TYPE_CHECKING:  # rich loads only when a table or a console is made (`status --json` never needs it)
    from rich.console import Console

__all__ = ["render_table", "snapshot_to_dict", "stderr_console", "to_json"]

_STATES = (TaskState.QUEUED, TaskState.RUNNING, TaskState.RESTARTED, TaskState.FINISHED, TaskState.FAILED,
           TaskState.NOT_RUN)
_STYLE = {TaskState.FINISHED: "green", TaskState.FAILED: "red", TaskState.NOT_RUN: "yellow",
          TaskState.RUNNING: "cyan"}


def stderr_console() -> Console:
    """The console for progress and messages (stderr, so stdout stays clean for --json)."""
    from rich.console import Console

    return Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def _elapsed(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    seconds = (end or time.time()) - start
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def render_table(snap: StudySnapshot, console: Console, max_failures: int = 5) -> None:
    """Print the per-step table and the first failures of each step with their log paths."""
    from rich.table import Table

    console.print(f"[bold]{snap.name}[/bold]  {snap.workspace}")
    console.print(f"state: [bold]{snap.state}[/bold]" + (f"  ({snap.message})" if snap.message else ""))
    table = Table(show_lines=False)
    table.add_column("step")
    table.add_column("instances", justify="right")
    table.add_column("tasks", justify="right")
    for state in _STATES:
        table.add_column(state.value, justify="right", style=_STYLE.get(state, ""))
    table.add_column("restarts", justify="right")
    table.add_column("elapsed", justify="right")
    for step in snap.steps:
        table.add_row(step.step, str(step.instances), str(step.total),
                      *(str(step.counts.get(s.value, 0) or "") for s in _STATES),
                      str(step.restarts or ""), _elapsed(step.started, step.ended))
    console.print(table)
    for step in snap.steps:
        if not step.n_failures:
            continue
        console.print(f"[red]{step.step}[/red]: {step.n_failures} task(s) failed or did not run")
        for name, failure in step.failures[:max_failures]:
            where = f" sample {failure.sample}" if failure.sample >= 0 else ""
            log = f"  log: {failure.log}" if failure.log else ""
            console.print(f"  {name}{where}: {failure.state.value}: {failure.reason}{log}", soft_wrap=True)
        if step.n_failures > max_failures:
            console.print(f"  ... and {step.n_failures - max_failures} more (--json lists {len(step.failures)})")


def snapshot_to_dict(snap: StudySnapshot) -> dict[str, Any]:
    """A JSON-able dict of the snapshot."""
    data = asdict(snap)
    for step, raw in zip(snap.steps, data["steps"], strict=True):
        raw["failures"] = [{"instance": name, **asdict(f), "state": f.state.value} for name, f in step.failures]
        raw["done"] = step.done
    data["total"] = snap.total
    return data


def to_json(snap: StudySnapshot) -> str:
    """JSON text of the snapshot."""
    return json.dumps(snapshot_to_dict(snap), indent=2)
