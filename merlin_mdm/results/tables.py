"""The aggregated tables: one typed column per attribute (one row per run), the per-method summary in
the shape of the paper's Table 1, and their CSV and Markdown renderings.

Everything here is deterministic in its input (rows sorted by path, columns in a fixed order), so the
serial and the MPI aggregation produce byte-identical outputs.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from merlin_mdm.results.collect import Problem, Row

__all__ = [
    "COLUMN_KINDS",
    "LEADING_COLUMNS",
    "Column",
    "RunTable",
    "SummaryRow",
    "build_table",
    "method_label",
    "summarize_runs",
    "table_csv",
    "table_markdown",
    "task_label",
]

LEADING_COLUMNS = (
    "path", "task", "sampler", "steps", "seed", "accuracy", "mean_nfe", "min_nfe", "max_nfe", "n_examples",
)
"""Columns that always come first, in this order; the rest follow: ``task.*``, ``sampler.*``, then others."""

COLUMN_KINDS = ("bool", "int", "float", "str")
"""Column types: numpy bool, int64, float64, and UTF-8 text."""

_FILL: dict[str, Any] = {"bool": False, "int": 0, "float": math.nan, "str": ""}
_DTYPE: dict[str, Any] = {"bool": np.bool_, "int": np.int64, "float": np.float64, "str": object}
_KNOB_ALIASES = {"budget": "T"}
_PATHLIKE_SUFFIXES = ("dir", "path", "file")


@dataclass(frozen=True)
class Column:
    """One typed column of the run table.

    Attributes:
        name: the metrics attribute it holds (``path`` and ``n_examples`` are added by the aggregation).
        kind: one of :data:`COLUMN_KINDS`.
        values: (R,) values; the kind's fill value (False, 0, NaN, "") where the run lacks the attribute.
        missing: (R,) bool, True where the run lacks the attribute, or None when every run has it.
    """

    name: str
    kind: str
    values: np.ndarray
    missing: np.ndarray | None = None

    def cell(self, row: int) -> Any:
        """The Python value of one row, or None where missing."""
        if self.missing is not None and self.missing[row]:
            return None
        value = self.values[row]
        return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class RunTable:
    """Every usable run (one row each) and every file that was not usable.

    Attributes:
        columns: the typed columns, in display order.
        problems: the unusable files, sorted by path.
    """

    columns: tuple[Column, ...]
    problems: tuple[Problem, ...] = ()

    @property
    def n_rows(self) -> int:
        """Number of runs R."""
        return int(self.columns[0].values.shape[0]) if self.columns else 0

    def column(self, name: str) -> Column:
        """The column called ``name`` (KeyError when absent)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def rows(self) -> list[Row]:
        """The runs as dicts, without the attributes a run lacks."""
        out: list[Row] = []
        for index in range(self.n_rows):
            cells = ((column.name, column.cell(index)) for column in self.columns)
            out.append({name: value for name, value in cells if value is not None})
        return out


@dataclass(frozen=True)
class SummaryRow:
    """One line of Table 1: a method at a step budget, over seeds.

    Attributes:
        task: task with its knobs, e.g. ``blocks (bl=4, nb=4)``.
        method: sampler with its knobs, e.g. ``threshold (tau=0.9)``.
        sampler: the registered sampler name.
        steps: the step budget T.
        n_seeds: number of runs (one per seed) averaged.
        mean_nfe: mean over runs of the mean denoiser calls per sequence.
        min_nfe: fewest calls of any sequence in any run.
        max_nfe: most calls of any sequence in any run.
        accuracy_mean: mean over runs of the accuracy (fraction).
        accuracy_std: sample standard deviation (ddof=1) over runs; NaN for a single run.
    """

    task: str
    method: str
    sampler: str
    steps: int
    n_seeds: int
    mean_nfe: float
    min_nfe: int
    max_nfe: int
    accuracy_mean: float
    accuracy_std: float


def build_table(rows: Iterable[Row], problems: Iterable[Problem] = ()) -> RunTable:
    """Turn run rows into typed columns (rows sorted by path; problems sorted by path).

    Args:
        rows: one dict per run with scalar values.
        problems: the files that were not usable.

    Returns:
        The table.
    """
    ordered = sorted(rows, key=lambda row: str(row["path"]))
    names = _column_order({key for row in ordered for key in row})
    columns = tuple(_make_column(name, [row.get(name) for row in ordered]) for name in names)
    return RunTable(columns=columns, problems=tuple(sorted(problems)))


def _column_order(names: set[str]) -> list[str]:
    lead = [name for name in LEADING_COLUMNS if name in names]
    rest = sorted(names - set(lead), key=lambda name: (_rank(name), name))
    return lead + rest


def _rank(name: str) -> int:
    for rank, prefix in enumerate(("task.", "sampler.", "policy.")):
        if name.startswith(prefix):
            return rank
    return 3


def _make_column(name: str, cells: Sequence[Any]) -> Column:
    present = [cell for cell in cells if cell is not None]
    kind = _kind_of(present)
    missing = np.array([cell is None for cell in cells], dtype=np.bool_)
    values = [(_FILL[kind] if cell is None else _coerce(cell, kind)) for cell in cells]
    array = np.empty(len(values), dtype=_DTYPE[kind])
    array[:] = values
    return Column(name=name, kind=kind, values=array, missing=missing if missing.any() else None)


def _kind_of(values: Sequence[Any]) -> str:
    types = {type(value) for value in values}
    if types <= {bool}:
        return "bool"
    if types <= {int}:
        return "int"
    if types <= {int, float}:
        return "float"
    return "str"


def _coerce(value: Any, kind: str) -> Any:
    if kind == "str":
        return value if isinstance(value, str) else _text(value)
    if kind == "float":
        return float(value)
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def table_csv(table: RunTable) -> str:
    """The run table as CSV text: a header of column names, one line per run, empty cells where missing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.name for column in table.columns])
    for index in range(table.n_rows):
        writer.writerow([_text(column.cell(index)) for column in table.columns])
    return buffer.getvalue()


def task_label(row: Mapping[str, Any]) -> str:
    """``task (knob=value, ...)`` from a row's ``task`` and ``task.*`` attributes."""
    return _labelled(str(row["task"]), _knobs(row, ("task.",)))


def method_label(row: Mapping[str, Any]) -> str:
    """The Table 1 method name of a run.

    The ``method`` attribute when the run sets one; else the sampler with its ``sampler.*`` and
    ``policy.*`` knobs, leaving out paths (``*dir``, ``*path``, ``*file`` or values holding ``/``) and
    writing ``budget`` as ``T``: ``top_prob``, ``threshold (tau=0.9)``, ``learned (T=4)``.
    """
    if isinstance(row.get("method"), str) and row["method"]:
        return str(row["method"])
    return _labelled(str(row["sampler"]), _knobs(row, ("sampler.", "policy.")))


def _knobs(row: Mapping[str, Any], prefixes: tuple[str, ...]) -> list[str]:
    parts = []
    for key in sorted(row):
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        value = row[key]
        if prefix is None or value is None:
            continue
        knob = key[len(prefix):]
        if knob.endswith(_PATHLIKE_SUFFIXES) or (isinstance(value, str) and "/" in value):
            continue
        parts.append(f"{_KNOB_ALIASES.get(knob, knob)}={_knob_text(value)}")
    return parts


def _knob_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return _text(value)


def _labelled(name: str, knobs: list[str]) -> str:
    return f"{name} ({', '.join(knobs)})" if knobs else name


def summarize_runs(table: RunTable) -> tuple[SummaryRow, ...]:
    """Group runs by (task, method, steps) and average over seeds; sorted by task, steps, method."""
    groups: dict[tuple[str, str, int], list[Row]] = {}
    samplers: dict[tuple[str, str, int], str] = {}
    for row in table.rows():
        key = (task_label(row), method_label(row), int(row["steps"]))
        groups.setdefault(key, []).append(row)
        samplers[key] = str(row["sampler"])
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[2], k[1])):
        runs = groups[key]
        accuracy = np.array([float(run["accuracy"]) for run in runs])
        out.append(SummaryRow(
            task=key[0], method=key[1], sampler=samplers[key], steps=key[2], n_seeds=len(runs),
            mean_nfe=float(np.mean([float(run["mean_nfe"]) for run in runs])),
            min_nfe=min(int(run["min_nfe"]) for run in runs), max_nfe=max(int(run["max_nfe"]) for run in runs),
            accuracy_mean=float(accuracy.mean()),
            accuracy_std=float(accuracy.std(ddof=1)) if len(runs) > 1 else math.nan,
        ))
    return tuple(out)


def table_markdown(summary: Sequence[SummaryRow], table: RunTable) -> str:
    """Table 1 as Markdown: one section per task; method, steps, average steps [min, max], accuracy, seeds."""
    lines: list[str] = []
    for task in dict.fromkeys(row.task for row in summary):
        lines += [f"### {task}", "", "| method | steps | avg steps [min, max] | accuracy (%) | seeds |",
                  "|---|---:|---:|---:|---:|"]
        for row in (r for r in summary if r.task == task):
            spread = "" if math.isnan(row.accuracy_std) else f" ± {100 * row.accuracy_std:.1f}"
            lines.append(f"| {_md_escape(row.method)} | {row.steps} | {row.mean_nfe:.2f} [{row.min_nfe}, "
                         f"{row.max_nfe}] | {100 * row.accuracy_mean:.1f}{spread} | {row.n_seeds} |")
        lines.append("")
    lines.append(_footer(table))
    return "\n".join(lines) + "\n"


def _footer(table: RunTable) -> str:
    runs = "1 run" if table.n_rows == 1 else f"{table.n_rows} runs"
    text = f"{runs}. Accuracy: mean ± sample standard deviation over seeds."
    if table.problems:
        kinds = json.dumps(_count_kinds(table.problems), sort_keys=True)
        text += f" {len(table.problems)} files were not used (see the results file's problems table): {kinds}."
    return text


def _count_kinds(problems: Iterable[Problem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.kind] = counts.get(problem.kind, 0) + 1
    return counts


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")
