"""`status --dump` and `detailed-status --dump`: one entry per task in Merlin 1.13's format.

CSV: the columns of Merlin's ``Status.format_csv_dump`` (its local runs: no task_queue/workers columns). JSON:
``{time_of_status: {step name: {"parameters": {"cmd": ..., "restart": ...}, step_workspace: {status, return_code,
elapsed_time, run_time, restarts}}}}``, as Merlin's ``format_json_dump``. What merlin-mdm does not record per task
is written as Merlin writes a value it has not computed: ``--:--:--`` for the times, and no restarts count.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from merlin_mdm.errors import UsageError
from merlin_mdm.status.detail import TaskRow
from merlin_mdm.status.states import DRY_RUN_WORD
from merlin_mdm.study.plan import StudyPlan

__all__ = ["CSV_COLUMNS", "MERLIN_STATUS", "dump_tasks"]

CSV_COLUMNS = ("time_of_status", "step_name", "step_workspace", "status", "return_code", "elapsed_time", "run_time",
               "restarts", "cmd_parameters", "restart_parameters")
# merlin-mdm's task states as Merlin names them (its INITIALIZED is queued, CANCELLED not run)
MERLIN_STATUS = {"finished": "FINISHED", "failed": "FAILED", "not_run": "CANCELLED", "running": "RUNNING",
                 "queued": "INITIALIZED", "unknown": "UNKNOWN", DRY_RUN_WORD: "DRY_RUN"}
NO_TIME = "--:--:--"  # Merlin's run and elapsed time of a task it has no time for
NO_PARAMS = "-------"  # Merlin's CSV cell for a command without parameters


def dump_tasks(plan: StudyPlan, rows: Iterable[TaskRow], path: Path, now: dt.datetime | None = None) -> int:
    """Write ``rows`` to ``path`` (.csv or .json, as Merlin's --dump); returns how many were written.

    Raises:
        UsageError: ``path`` ends in neither .csv nor .json (Merlin refuses it too).
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise UsageError(f"--dump {path}: the file must end in .csv or .json")
    when = (now or dt.datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
    params = {inst.name: (dict(inst.cmd_params) or None, dict(inst.restart_params) or None)
              for inst in plan.instances}
    prefix = plan.workspace.rstrip("/") + "/"
    entries = (_entry(plan, prefix, row) for row in rows)  # streamed into a CSV: a million rows
    written = 0
    if suffix == ".json":
        tree: dict[str, dict[str, Any]] = {}
        for name, where, task in entries:
            cmd, restart = params[name]
            tree.setdefault(name, {"parameters": {"cmd": cmd, "restart": restart}})[where] = task
            written += 1
        path.write_text(json.dumps({**_earlier_json(path), when: tree}, indent=1) + "\n", encoding="utf-8")
        return written
    appending = _appends_to_csv(path)
    with open(path, "a" if appending else "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if not appending:
            writer.writerow(CSV_COLUMNS)
        for name, where, task in entries:
            cmd, restart = params[name]
            writer.writerow([when, name, where, task["status"], task["return_code"], task["elapsed_time"],
                             task["run_time"], "" if task["restarts"] is None else task["restarts"],
                             _params_cell(cmd), _params_cell(restart)])
            written += 1
    return written


def _earlier_json(path: Path) -> dict[str, Any]:
    """An existing JSON dump's snapshots, kept beside the new one as Merlin appends (one key per time)."""
    if not path.exists():
        return {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--dump {path}: it exists and is not a status dump ({exc}): name another file") from None
    if not isinstance(earlier, dict):
        raise UsageError(f"--dump {path}: it exists and is not a status dump: name another file")
    return earlier


def _appends_to_csv(path: Path) -> bool:
    """Whether ``path`` is an earlier CSV dump that the rows are added to (Merlin appends); a file that is not one
    is refused rather than written into."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        header = next(csv.reader(fh), [])
    if tuple(header) != CSV_COLUMNS:
        raise UsageError(f"--dump {path}: it exists and is not a status dump (its first line is not "
                         f"{','.join(CSV_COLUMNS)}): name another file")
    return True


def _entry(plan: StudyPlan, prefix: str, row: TaskRow) -> tuple[str, str, dict[str, Any]]:
    """(step name, step workspace relative to the study, the task's fields) of one row; ``prefix`` is the
    study's folder with a slash (a task's folder is under it, which text shows faster than paths)."""
    if row.workspace.startswith(prefix):
        where = row.workspace[len(prefix):]
    else:
        relative = Path(row.workspace)
        with contextlib.suppress(ValueError):  # a task folder is always under the study's; kept whole if not
            relative = relative.relative_to(plan.workspace)
        where = str(relative)
    task = {"status": MERLIN_STATUS.get(row.status, row.status.upper()), "return_code": row.return_code,
            "elapsed_time": NO_TIME, "run_time": NO_TIME, "restarts": None}
    return row.instance, where, task


def _params_cell(params: dict[str, str] | None) -> str:
    """Merlin's `TOKEN:value;TOKEN:value`, or its dashes for none."""
    return ";".join(f"{name}:{value}" for name, value in params.items()) if params else NO_PARAMS
