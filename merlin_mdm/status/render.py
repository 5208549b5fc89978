"""Showing a study's status: a rich table per step, or JSON for scripts."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merlin_mdm.errors import UsageError
from merlin_mdm.status.model import StudySnapshot, TaskState

if TYPE_CHECKING:  # rich loads only when a table or a console is made (`status --json` never needs it)
    from rich.console import Console

__all__ = ["console_width", "dump_snapshot", "render_table", "snapshot_to_dict", "stderr_console", "to_json"]

_STYLE = {TaskState.FINISHED: "green", TaskState.FAILED: "red", TaskState.NOT_RUN: "yellow",
          TaskState.RUNNING: "cyan"}


def stderr_console() -> Console:
    """The console for progress and messages (stderr, so stdout stays clean for --json)."""
    from rich.console import Console

    return Console(stderr=True, width=console_width(sys.stderr))


def console_width(stream: Any) -> int | None:
    """The terminal's width (None: rich asks it, or reads COLUMNS); 120 when writing to a pipe or file."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 120


def _elapsed(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    seconds = (end or time.time()) - start
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


# The columns of the status table, short enough for an 80-column terminal: a re-queued task (restarted) waits
# again, so it counts as queued; how often tasks ran again is the `retries` column.
_COLUMNS = (("queued", (TaskState.QUEUED, TaskState.RESTARTED)), ("running", (TaskState.RUNNING,)),
            ("done", (TaskState.FINISHED,)), ("failed", (TaskState.FAILED,)), ("not run", (TaskState.NOT_RUN,)))


def render_table(snap: StudySnapshot, console: Console, max_failures: int = 5) -> None:
    """Print the per-step table and the first failures of each step with their log paths.

    The table fits 80 columns; a long step name wraps instead of being cut.
    """
    from rich import box
    from rich.table import Table

    console.print(f"[bold]{snap.name}[/bold]  {snap.workspace}", soft_wrap=True)
    console.print(f"state: [bold]{snap.state}[/bold]" + (f"  ({snap.message})" if snap.message else ""))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1))
    table.add_column("step", overflow="fold", min_width=12)
    table.add_column("tasks", justify="right")
    for title, states in _COLUMNS:
        table.add_column(title, justify="right", style=_STYLE.get(states[0], ""))
    table.add_column("retries", justify="right")
    table.add_column("time", justify="right")
    for step in snap.steps:
        counts = [sum(step.counts.get(s.value, 0) for s in states) for _, states in _COLUMNS]
        table.add_row(step.step, str(step.total), *(str(n or "") for n in counts), str(step.restarts or ""),
                      _elapsed(step.started, step.ended))
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


def dump_snapshot(snap: StudySnapshot, path: Path) -> None:
    """`status --dump`: the snapshot as JSON (``.json``) or one CSV row per step (``.csv``), as Merlin's."""
    if path.suffix == ".json":
        path.write_text(to_json(snap) + "\n", encoding="utf-8")
        return
    if path.suffix != ".csv":
        raise UsageError(f"--dump {path}: the file must end in .csv or .json")
    states = [state.value for state in TaskState]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study", "step", "instances", "tasks", *states, "restarts", "started", "ended"])
        for step in snap.steps:
            writer.writerow([snap.name, step.step, step.instances, step.total,
                             *(step.counts.get(state, 0) for state in states), step.restarts,
                             step.started or "", step.ended or ""])
