"""The runs an aggregated results file holds, read back as table rows: pooling studies whose workspaces are gone.

A results file keeps every run's attributes (the run table), every example's outcome and calls, and the problems
of its aggregation: everything the aggregation reads from the metrics files except the per-example wall times,
which nothing in a report uses. So a results file *named* by its path as a source
(``merlin-mdm aggregate kept/batch1.h5 kept/batch2.h5``) is read as the runs it holds, and the report of the pool
is the report the metrics files themselves would give. A results file reached by a glob or found while walking a
workspace is not (``ws/**/*.h5`` reaches the study's own, possibly stale, report: its runs would count twice) and
stays a skipped ``results_file`` problem.

Rows and problems read this way are shown as ``<results file>:<path in it>``. A run read both from its metrics
file and from a results file is counted once (``duplicate``), as a run held by two workspaces is. One limit: a
results file stores each attribute column with one type, so where an attribute's values had different types in
different runs (an int in one, a float or a text in another), they come back with the column's type and a label
may read ``5.0`` where the metrics files give ``5``. The project's writers never mix types in one attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from merlin_mdm.results.collect import Discovery, Problem, Row
from merlin_mdm.results.results_file import ResultsFileError, read_results
from merlin_mdm.results.tables import RunTable

__all__ = ["expand_results_files", "runs_of_results_file"]


def expand_results_files(discovery: Discovery, loaded: Sequence[Row | Problem]) -> list[Row | Problem]:
    """Replace each named results file's ``results_file`` problem by the runs and problems it holds.

    Args:
        discovery: what was listed (its ``named`` files are the ones to open).
        loaded: one row or problem per listed file, in list order.

    Returns:
        The same items, in order, with each named results file's entry expanded in place.
    """
    out: list[Row | Problem] = []
    for item in loaded:
        if isinstance(item, Problem) and item.kind == "results_file" and item.path in discovery.named:
            out.extend(runs_of_results_file(discovery.resolve(item.path), item.path))
        else:
            out.append(item)
    return out


def runs_of_results_file(path: Path, shown: str) -> list[Row | Problem]:
    """Every run of an aggregated results file as a row (with its per-example arrays), then its problems.

    Args:
        path: the results file.
        shown: the name the table uses for it; each row's and problem's path is ``shown:<path in the file>``.

    Returns:
        The rows and problems, or one problem saying why the file cannot be read.
    """
    try:
        stored = read_results(path)
    except ResultsFileError as err:
        return [Problem(shown, err.kind, err.reason)]
    table = stored.table
    correct, nfe = table.examples.get("correct"), table.examples.get("nfe")
    if correct is None or nfe is None:
        return [Problem(shown, "invalid", "a results file without per-example outcomes (correct, nfe)")]
    try:
        rows: list[Row | Problem] = [_row(table, index, correct, nfe, shown) for index in range(table.n_rows)]
    except (KeyError, TypeError, ValueError) as err:
        return [Problem(shown, "invalid", f"a results file whose run table cannot be read back ({err!r})")]
    return rows + [Problem(f"{shown}:{p.path}", p.kind, p.message) for p in table.problems]


def _row(table: RunTable, index: int, correct: np.ndarray, nfe: np.ndarray, shown: str) -> Row:
    """One run of the table as the row its metrics file gave (the padding, -1, cut off the example arrays)."""
    row: Row = {}
    for column in table.columns:
        value = column.cell(index)
        if value is not None:
            row[column.name] = value
    count = int(np.count_nonzero(correct[index] >= 0))  # the data's own count: a padded entry is -1
    row["path"] = f"{shown}:{row['path']}"
    row["_correct"] = np.asarray(correct[index, :count], dtype=np.int8)
    row["_nfe"] = np.asarray(nfe[index, :count], dtype=np.int64)
    return row
