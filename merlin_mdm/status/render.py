"""Showing a study's status: a table per step, or JSON for scripts; the rich console for progress."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from merlin_mdm.status.model import StepSummary, StudySnapshot, TaskFailure, TaskState
from merlin_mdm.status.states import DRY_RUN_WORD

if TYPE_CHECKING:  # rich loads only when a console is made (for progress bars; `status` never needs it)
    from rich.console import Console

__all__ = ["console_width", "render_table", "snapshot_to_dict", "stderr_console", "to_json"]


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
    return _duration((end or time.time()) - start)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def _step_time(step: StepSummary) -> str:
    """The step's first start to now while a task of it runs, else to its last end; "-" when it never started
    or none of its runs ended (a stopped study's re-queued tasks: their stopped runs leave no end)."""
    if step.counts.get(TaskState.RUNNING.value, 0):
        return _elapsed(step.started, None)
    return _elapsed(step.started, step.ended) if step.ended is not None else "-"


def _avg_run(step: StepSummary) -> str:
    """A task's mean run time over the units that ran to their end; "-" before the first one did."""
    mean = step.avg_run
    return "-" if mean is None else _duration(mean)


# The columns of the status table, short enough for an 80-column terminal: a re-queued task (restarted) waits
# again, so it counts as queued; how often tasks ran again is the `retries` column.
_COLUMNS = (("queued", (TaskState.QUEUED, TaskState.RESTARTED)), ("running", (TaskState.RUNNING,)),
            ("done", (TaskState.FINISHED,)), ("failed", (TaskState.FAILED,)), ("not run", (TaskState.NOT_RUN,)))


def render_table(snap: StudySnapshot, stream: TextIO, max_failures: int = 5) -> None:
    """Print the per-step table and the first failures of each step with their log paths.

    Plain text with ANSI colours on a terminal (rich's import alone would cost `status` a third of its
    0.15 s budget). The table fits the terminal's width (80 columns and up); a long step name wraps
    instead of being cut, and the count columns are never cut.
    """
    paint = _painter(stream)
    lines = [f"{paint(snap.name, _BOLD)}  {snap.workspace}",
             f"state: {paint(snap.state, _BOLD)}" + (f"  ({snap.message})" if snap.message else ""), ""]
    lines += _table_lines(snap, _stream_width(stream), paint)
    for step in snap.steps:
        if step.n_failures:
            lines += _failure_lines(step, paint, max_failures)
    stream.write("\n".join(lines) + "\n")
    stream.flush()


def _failure_lines(step: StepSummary, paint: Callable[[str, str], str], most: int) -> list[str]:
    """A step's failed and not-run tasks (counted as the table counts them) and its first recorded failures;
    a failure recorded for a whole batch of samples (not run: a parent failed, the study stopped) names no sample,
    and its repeats are one line."""
    import itertools

    failed, not_run = step.counts.get(TaskState.FAILED.value, 0), step.counts.get(TaskState.NOT_RUN.value, 0)
    parts = [f"{n} task(s) {what}" for n, what in ((failed, "failed"), (not_run, "did not run")) if n]
    said = ", ".join(parts) or f"{step.n_failures} task(s) failed or did not run"  # (a stop: they are queued)
    out = [f"{paint(step.step, _RED)}: {said}"]
    lines = [_failure_line(name, failure) for name, failure in step.failures]
    entries = [(line, sum(1 for _ in same)) for line, same in itertools.groupby(lines)]
    out += [f"{line} (x{n} batches of samples)" if n > 1 else line for line, n in entries[:most]]
    if step.n_failures > len(step.failures) or len(entries) > most:
        out.append("  ... and more: `merlin-mdm detailed-status WORKSPACE --task-status FAILED --task-status "
                   "NOT_RUN` lists every task")
    return out


def _failure_line(name: str, failure: TaskFailure) -> str:
    where = f" sample {failure.sample}" if failure.sample >= 0 else ""
    log = f"  log: {failure.log}" if failure.log else ""
    return f"  {name}{where}: {failure.state.value}: {failure.reason}{log}"


_BOLD, _RED = "1", "31"
_COLOUR = {TaskState.FINISHED: "32", TaskState.FAILED: _RED, TaskState.NOT_RUN: "33", TaskState.RUNNING: "36"}
_MIN_NAME = 10  # the step column never gets narrower than this; names longer than it wrap


def _painter(stream: TextIO) -> Callable[[str, str], str]:
    """Colours (ANSI SGR codes) on a terminal only, and not when NO_COLOR is set or TERM is dumb."""
    if not stream.isatty() or "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return lambda text, code: text
    return lambda text, code: f"\x1b[{code}m{text}\x1b[0m" if text and code else text


def _stream_width(stream: TextIO) -> int:
    """COLUMNS when set, else the terminal's width, else (a pipe or a file) 120, as the rich console did."""
    with contextlib.suppress(KeyError, ValueError):
        return max(int(os.environ["COLUMNS"]), 20)
    if stream.isatty():
        with contextlib.suppress(OSError, ValueError):
            return os.get_terminal_size(stream.fileno()).columns or 80  # 0: a terminal that does not say
    return 120


def _table_lines(snap: StudySnapshot, width: int, paint: Callable[[str, str], str]) -> list[str]:
    """The step table: a header, a rule, one row per step; columns right-aligned, one space before each."""
    titles = ["tasks", *(title for title, _ in _COLUMNS), "retries", "avg run", "elapsed"]
    titles[1] = snap.state.unrun_word.replace("_", " ")  # a dry run's tasks wait for a `restart` (Merlin's DRY_RUN)
    colours = ["", *(_COLOUR.get(states[0], "") for _, states in _COLUMNS), "", "", ""]
    rows = []
    for step in snap.steps:
        counts = [sum(step.counts.get(s.value, 0) for s in states) for _, states in _COLUMNS]
        rows.append((step.step, [str(step.total), *(str(n or "") for n in counts), str(step.restarts or ""),
                                 _avg_run(step), _step_time(step)]))
    widths = [max([len(title), *(len(cells[i]) for _, cells in rows)]) for i, title in enumerate(titles)]
    fixed = sum(w + 1 for w in widths)
    name_width = max(_MIN_NAME, min(width - fixed - 1, max((len(name) for name, _ in rows), default=4)))
    out = [" " + "step".ljust(name_width) + "".join(" " + t.rjust(w) for t, w in zip(titles, widths, strict=True)),
           " " + "\u2500" * (name_width + fixed)]
    for name, cells in rows:
        pieces = [name[i:i + name_width] for i in range(0, len(name), name_width)] or [""]
        out.append(" " + pieces[0].ljust(name_width) + "".join(
            " " + paint(c.rjust(w), code if c else "") for c, w, code in zip(cells, widths, colours, strict=True)))
        out += [" " + piece for piece in pieces[1:]]
    return out


def snapshot_to_dict(snap: StudySnapshot) -> dict[str, Any]:
    """A JSON-able dict of the snapshot."""
    data = asdict(snap)
    for step, raw in zip(snap.steps, data["steps"], strict=True):
        unrun = raw["counts"].pop(TaskState.QUEUED.value, 0)  # counted under the word the table and Merlin use
        raw["counts"] = {TaskState.QUEUED.value: 0, DRY_RUN_WORD: 0, **raw["counts"], snap.state.unrun_word: unrun}
        raw["failures"] = [{"instance": name, **asdict(f), "state": f.state.value} for name, f in step.failures]
        raw["done"] = step.done
        raw["avg_run"], raw["run_std"] = step.avg_run, step.run_std
    data["total"] = snap.total
    return data


def to_json(snap: StudySnapshot) -> str:
    """JSON text of the snapshot."""
    return json.dumps(snapshot_to_dict(snap), indent=2)
