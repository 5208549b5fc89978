"""The aggregated tables: one typed column per attribute (one row per run), the per-method summary in
the shape of the paper's Table 1 (with bootstrap intervals), and the CSV rendering (the Markdown report is
:mod:`merlin_mdm.results.report`).

Everything here is deterministic in its input (rows sorted by path, columns in a fixed order), so the
serial and the MPI aggregation produce byte-identical outputs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from merlin_mdm.results.collect import Problem, Row
from merlin_mdm.results.statistics import bootstrap_accuracy, interval

__all__ = [
    "COLUMN_KINDS",
    "LEADING_COLUMNS",
    "Column",
    "GroupKey",
    "RunTable",
    "SummaryRow",
    "bootstrap_groups",
    "build_table",
    "group_clusters",
    "group_runs",
    "method_label",
    "run_cluster",
    "split_duplicates",
    "summarize_runs",
    "table_csv",
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
        examples: per-example outcomes, (R, N) arrays by name (``correct`` int8, ``nfe`` int64), -1 where a run
            has fewer than N examples; empty when unknown.
    """

    columns: tuple[Column, ...]
    problems: tuple[Problem, ...] = ()
    examples: Mapping[str, np.ndarray] = field(default_factory=dict)

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
        n_seeds: number of runs averaged (one per training seed, or per training and policy seed).
        mean_nfe: mean over runs of the mean denoiser calls per sequence.
        min_nfe: fewest calls of any sequence in any run.
        max_nfe: most calls of any sequence in any run.
        accuracy_mean: mean over runs of the accuracy (fraction).
        accuracy_std: sample standard deviation (ddof=1) over runs; NaN for a single run.
        ci_low: lower end of the 95% bootstrap interval of the accuracy over runs and examples (fraction).
        ci_high: upper end of that interval; both NaN when per-example outcomes are unknown.
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
    ci_low: float = math.nan
    ci_high: float = math.nan


GroupKey = tuple[str, str, int]
"""(task label, method label, steps): one line of Table 1."""

EXAMPLE_KEYS = {"correct": "_correct", "nfe": "_nfe"}
"""Per-example arrays a row may carry (under the private key), gathered into :attr:`RunTable.examples`."""


def split_duplicates(rows: Sequence[Row]) -> tuple[list[Row], list[Problem]]:
    """Keep one of each run read more than once (a copied file, two batches or sources holding one run).

    Two rows are one run when they share the task, the method, the steps, the training, evaluation and
    policy seeds and every example's result (``correct`` and ``nfe``); where they were written, when and
    on which host does not count. The first by path stays; the others become ``duplicate`` problems.

    Args:
        rows: the usable runs, sorted by path.

    Returns:
        The rows kept (in order) and a problem per row left out.
    """
    first: dict[tuple[Any, ...], str] = {}
    kept: list[Row] = []
    duplicates: list[Problem] = []
    for row in rows:
        key = _run_identity(row)
        if key is not None and key in first:
            why = (f"the same run as {first[key]} (task, method, steps, seeds and every example's result): "
                   "counted once")
            duplicates.append(Problem(str(row["path"]), "duplicate", why))
            continue
        if key is not None:
            first[key] = str(row["path"])
        kept.append(row)
    return kept, duplicates


def _run_identity(row: Row) -> tuple[Any, ...] | None:
    found = [row.get(EXAMPLE_KEYS[name]) for name in ("correct", "nfe")]
    arrays = [np.ascontiguousarray(array) for array in found if array is not None]
    if len(arrays) < len(found):
        return None
    digests = tuple(f"{hashlib.sha256(array.tobytes()).hexdigest()}{array.dtype}{array.shape}" for array in arrays)
    seeds = tuple(str(row.get(name)) for name in ("train_seed", "seed", "policy.seed"))
    return (task_label(row), method_label(row), str(row.get("steps")), *seeds, *digests)


def build_table(rows: Iterable[Row], problems: Iterable[Problem] = ()) -> RunTable:
    """Turn run rows into typed columns (rows sorted by path; problems sorted by path).

    Args:
        rows: one dict per run with scalar values, optionally with per-example arrays under ``_correct``/``_nfe``.
        problems: the files that were not usable.

    Returns:
        The table.
    """
    ordered = sorted(rows, key=lambda row: str(row["path"]))
    private = set(EXAMPLE_KEYS.values())
    names = _column_order({key for row in ordered for key in row} - private)
    columns = tuple(_make_column(name, [row.get(name) for row in ordered]) for name in names)
    return RunTable(columns=columns, problems=tuple(sorted(problems)), examples=_examples(ordered))


def _examples(rows: Sequence[Row]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, key in EXAMPLE_KEYS.items():
        arrays = [row.get(key) for row in rows]
        if not rows or any(a is None for a in arrays):
            continue
        width = max(len(a) for a in arrays if a is not None)
        block = np.full((len(rows), width), -1, dtype=np.int8 if name == "correct" else np.int64)
        for index, array in enumerate(arrays):
            if array is not None:
                block[index, : len(array)] = array
        out[name] = block
    return out


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
    writing ``budget`` as ``T``: ``top_prob``, ``threshold (tau=0.9)``, ``learned (T=4)``. A run evaluated at a
    token ``temperature`` other than the default 1 says so (``top_prob (temperature=0)``), so runs at different
    temperatures are never averaged as one line; runs at temperature 1 keep the label they always had.
    """
    if isinstance(row.get("method"), str) and row["method"]:
        label = str(row["method"]).replace("|", "/")  # runs written before labels took 2/4/8 wrote 2|4|8
    else:
        label = _labelled(str(row["sampler"]), _knobs(row, ("sampler.", "policy.")))
    temperature = row.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature != 1.0:
        knob = f"temperature={_knob_text(float(temperature))}"
        label = f"{label[:-1]}, {knob})" if label.endswith(")") else f"{label} ({knob})"
    return label


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
    """A knob's value as labels write it; a list of values (``budgets`` 2|4|8 in a run's metadata, where a / would
    read as a path) as 2/4/8, the form the reports' tables show and a reader filters by."""
    if isinstance(value, float):
        return f"{value:g}"
    return _text(value).replace("|", "/")


def _labelled(name: str, knobs: list[str]) -> str:
    return f"{name} ({', '.join(knobs)})" if knobs else name


def group_runs(table: RunTable) -> dict[GroupKey, list[int]]:
    """Row indices of each (task, method, steps) group, in Table 1 order; runs ordered by (train seed, seed)."""
    groups: dict[GroupKey, list[tuple[Any, ...]]] = {}
    for index, row in enumerate(table.rows()):
        key = (task_label(row), method_label(row), int(row["steps"]))
        order = (int(row.get("train_seed", 0)), int(row.get("seed", 0)), str(row["path"]))
        groups.setdefault(key, []).append((*order, index))
    ordered = sorted(groups, key=lambda k: (k[0], k[2], k[1]))
    return {key: [item[-1] for item in sorted(groups[key])] for key in ordered}


def run_cluster(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The bootstrap cluster of a run: its (training seed, evaluation seed, number of examples), the runs that
    share a denoiser and the examples (e.g. several policy seeds on one denoiser); a run without a ``train_seed``
    is its own. The examples are drawn from the seed for the number asked, so the same seed with another
    ``--n-examples`` gives other prompts at the same indices: such runs are not paired."""
    if "train_seed" not in row:
        return ("run", str(row["path"]))
    return (int(row["train_seed"]), int(row.get("seed", 0)), int(row.get("n_examples", 0)))


def group_clusters(table: RunTable) -> dict[GroupKey, dict[tuple[Any, ...], int]]:
    """Every group's clusters (:func:`run_cluster`) in run order, each with its number of runs: groups whose
    clusters are the same pair, whatever their runs per cluster."""
    rows = table.rows()
    return {key: dict(Counter(run_cluster(rows[i]) for i in indices)) for key, indices in group_runs(table).items()}


def bootstrap_groups(table: RunTable) -> dict[GroupKey, np.ndarray]:
    """Bootstrap draws of every group's accuracy (see :mod:`merlin_mdm.results.statistics`), the runs of one
    cluster (:func:`run_cluster`) resampled within it; {} without outcomes."""
    correct = table.examples.get("correct")
    if correct is None:
        return {}
    rows = table.rows()
    return {key: bootstrap_accuracy(_own_examples(correct[indices]), clusters=[run_cluster(rows[i]) for i in indices])
            for key, indices in group_runs(table).items()}


def _own_examples(correct: np.ndarray) -> np.ndarray:
    """A group's outcomes without the padding columns no run of it has: the table pads every run to the most
    examples of any run, and a bootstrap drawing indices over that padding gave a line an interval that changed
    with the other runs aggregated beside it."""
    seen = np.flatnonzero((correct >= 0).any(axis=0))
    return correct[:, : int(seen[-1]) + 1] if seen.size else correct


def summarize_runs(table: RunTable, draws: Mapping[GroupKey, np.ndarray] | None = None) -> tuple[SummaryRow, ...]:
    """Group runs by (task, method, steps) and average over seeds; sorted by task, steps, method.

    Args:
        table: the runs.
        draws: bootstrap draws per group (:func:`bootstrap_groups`) for the confidence intervals, or None.
    """
    rows = table.rows()
    out = []
    for key, indices in group_runs(table).items():
        runs = [rows[i] for i in indices]
        accuracy = np.array([float(run["accuracy"]) for run in runs])
        low, high = interval(draws[key]) if draws and key in draws else (math.nan, math.nan)
        out.append(SummaryRow(
            task=key[0], method=key[1], sampler=str(runs[0]["sampler"]), steps=key[2], n_seeds=len(runs),
            mean_nfe=float(np.mean([float(run["mean_nfe"]) for run in runs])),
            min_nfe=min(int(run["min_nfe"]) for run in runs), max_nfe=max(int(run["max_nfe"]) for run in runs),
            accuracy_mean=float(accuracy.mean()),
            accuracy_std=float(accuracy.std(ddof=1)) if len(runs) > 1 else math.nan,
            ci_low=low, ci_high=high,
        ))
    return tuple(out)
