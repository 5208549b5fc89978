"""The aggregated results file (``results.h5``): the run table, the problems table and the Table 1 summary.

Layout (documented in ``docs/results-schema.md``)::

    /                  attrs: file_kind, results_schema_version, metrics_schema_version,
                              merlin_mdm_version, source, n_runs, n_problems
    /runs/<column>     (R,) one dataset per column; /runs attrs: columns, kinds (JSON lists, display order)
    /runs_missing/<c>  (R,) bool, only for columns some runs lack
    /problems/{path,kind,message}                   (P,) UTF-8
    /summary/{task,method,sampler,steps,n_seeds,mean_nfe,min_nfe,max_nfe,accuracy_mean,accuracy_std}  (G,)

Written like a metrics file: to a hidden temporary name, then ``os.replace``; nothing time- or
host-dependent is stored, so equal inputs give byte-identical files.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from merlin_mdm import __version__
from merlin_mdm.errors import ResultsError
from merlin_mdm.results.collect import Problem
from merlin_mdm.results.metrics import RESULTS_FILE_KIND, SCHEMA_VERSION, open_h5
from merlin_mdm.results.tables import Column, RunTable, SummaryRow

__all__ = ["RESULTS_SCHEMA_VERSION", "ResultsFile", "read_results", "write_results"]

RESULTS_SCHEMA_VERSION = 1
"""Version of the results-file layout."""

_TEXT = h5py.string_dtype(encoding="utf-8")


@dataclass(frozen=True)
class ResultsFile:
    """An aggregated results file as read back.

    Attributes:
        table: the run table with its problems.
        summary: the Table 1 rows.
        attrs: the root attributes.
    """

    table: RunTable
    summary: tuple[SummaryRow, ...]
    attrs: dict[str, Any]


def write_results(path: Path, table: RunTable, summary: tuple[SummaryRow, ...], source: str) -> Path:
    """Atomically write the results file.

    Args:
        path: destination.
        table: the runs and problems.
        summary: the Table 1 rows.
        source: the glob or workspace the runs came from (stored as an attribute).

    Returns:
        ``path``.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open_h5(tmp, "w") as handle:
            _write_root(handle, table, source)
            _write_runs(handle, table)
            _write_records(handle.create_group("problems"), table.problems, Problem)
            _write_records(handle.create_group("summary"), summary, SummaryRow)
        os.replace(tmp, path)
    except OSError as err:
        raise ResultsError(f"{path}: cannot write the results file: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_root(handle: h5py.File, table: RunTable, source: str) -> None:
    handle.attrs["file_kind"] = RESULTS_FILE_KIND
    handle.attrs["results_schema_version"] = RESULTS_SCHEMA_VERSION
    handle.attrs["metrics_schema_version"] = SCHEMA_VERSION
    handle.attrs["merlin_mdm_version"] = __version__
    handle.attrs["source"] = source
    handle.attrs["n_runs"] = table.n_rows
    handle.attrs["n_problems"] = len(table.problems)


def _write_runs(handle: h5py.File, table: RunTable) -> None:
    runs = handle.create_group("runs")
    missing = handle.create_group("runs_missing")
    runs.attrs["columns"] = json.dumps([column.name for column in table.columns])
    runs.attrs["kinds"] = json.dumps([column.kind for column in table.columns])
    for column in table.columns:
        _dataset(runs, column.name, column.values)
        if column.missing is not None:
            missing.create_dataset(column.name, data=column.missing)


def _dataset(group: h5py.Group, name: str, values: np.ndarray) -> None:
    if values.dtype == object or values.dtype.kind == "U":
        group.create_dataset(name, data=[str(v) for v in values], dtype=_TEXT)
    else:
        group.create_dataset(name, data=values)


def _write_records(group: h5py.Group, records: Any, kind: type) -> None:
    for spec in fields(kind):
        values = [getattr(record, spec.name) for record in records]
        if spec.type == "str":
            group.create_dataset(spec.name, data=values, dtype=_TEXT)
        else:
            dtype = np.float64 if spec.type == "float" else np.int64
            group.create_dataset(spec.name, data=np.asarray(values, dtype=dtype))


def read_results(path: str | os.PathLike[str]) -> ResultsFile:
    """Read an aggregated results file.

    Raises:
        ResultsError: the file is missing, unreadable or not a results file of this layout version.
    """
    src = Path(path)
    try:
        with open_h5(src, "r") as handle:
            attrs = {key: _scalar(value) for key, value in handle.attrs.items()}
            if attrs.get("file_kind") != RESULTS_FILE_KIND:
                raise ResultsError(f"{src}: not a merlin-mdm results file")
            if attrs.get("results_schema_version") != RESULTS_SCHEMA_VERSION:
                raise ResultsError(f"{src}: results_schema_version {attrs.get('results_schema_version')!r} "
                                   f"is not supported (this is {RESULTS_SCHEMA_VERSION})")
            columns = _read_runs(handle)
            problems = tuple(Problem(**rec) for rec in _read_records(handle["problems"], Problem))
            summary = tuple(SummaryRow(**rec) for rec in _read_records(handle["summary"], SummaryRow))
    except (OSError, KeyError, ValueError) as err:
        raise ResultsError(f"{src}: cannot read the results file ({err})") from err
    return ResultsFile(RunTable(columns, problems), summary, attrs)


def _read_runs(handle: h5py.File) -> tuple[Column, ...]:
    runs = handle["runs"]
    names = json.loads(runs.attrs["columns"])
    kinds = json.loads(runs.attrs["kinds"])
    out = []
    for name, kind in zip(names, kinds, strict=True):
        data = runs[name]
        values = data.asstr()[()].astype(object) if kind == "str" else data[()]
        missing = handle["runs_missing"][name][()] if name in handle["runs_missing"] else None
        out.append(Column(name, kind, values, missing))
    return tuple(out)


def _read_records(group: h5py.Group, kind: type) -> list[dict[str, Any]]:
    arrays = {}
    for spec in fields(kind):
        data = group[spec.name]
        arrays[spec.name] = list(data.asstr()[()]) if spec.type == "str" else [v.item() for v in data[()]]
    count = len(next(iter(arrays.values()))) if arrays else 0
    return [{name: values[i] for name, values in arrays.items()} for i in range(count)]


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if isinstance(value, np.generic) else value
