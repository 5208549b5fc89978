"""The aggregated results file (``results.h5``): a NetCDF-4 file (HDF5 underneath) with the run table, the
per-example outcomes, the Table 1 summary and the problems table.

It opens with ``xarray.open_dataset(path, engine="h5netcdf")`` (the runs; ``group="summary"`` and
``group="problems"`` for the others) and with plain h5py. Layout (documented in ``docs/results-schema.md``)::

    /                    attrs: file_kind, results_schema_version, metrics_schema_version, merlin_mdm_version,
                                source, n_runs, n_problems, run_columns, run_kinds (JSON lists, display order)
      dims run (R), example (N); coordinates run, example, task_label, method_label, path, steps, seed ...
      <column>(run)      one variable per run-table column; bools as int8 with attr dtype="bool"
      correct(run, example) int8 (-1 where a run has fewer examples), nfe(run, example) int64
    /runs_missing/<c>    (run) int8 bool, only for columns some runs lack
    /summary/<field>     (row) one per :class:`SummaryRow` field
    /problems/{path,kind,message}   (problem)

Written to a hidden temporary name, then ``os.replace``; nothing time- or host-dependent is stored, so equal
inputs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from merlin_mdm import __version__
from merlin_mdm.errors import ResultsError
from merlin_mdm.results.collect import Problem
from merlin_mdm.results.metrics import RESULTS_FILE_KIND, SCHEMA_VERSION, FileProblemError, open_h5
from merlin_mdm.results.tables import Column, RunTable, SummaryRow, method_label, task_label

__all__ = ["RESULTS_SCHEMA_VERSION", "UNITS", "ResultsFile", "ResultsFileError", "check_results_file", "read_results",
           "write_results"]

RESULTS_SCHEMA_VERSION = 2
"""Version of the results-file layout (2: NetCDF-4, xarray-readable; 1 was plain HDF5 groups)."""

UNITS: dict[str, tuple[str, str]] = {
    "accuracy": ("1", "fraction of examples answered correctly"),
    "accuracy_mean": ("1", "mean over runs of the accuracy"),
    "accuracy_std": ("1", "sample standard deviation over runs of the accuracy"),
    "ci_low": ("1", "lower end of the 95% paired bootstrap interval of the accuracy"),
    "ci_high": ("1", "upper end of the 95% paired bootstrap interval of the accuracy"),
    "mean_nfe": ("denoiser calls", "mean denoiser calls (NFE) per sequence"),
    "min_nfe": ("denoiser calls", "fewest denoiser calls of any sequence"),
    "max_nfe": ("denoiser calls", "most denoiser calls of any sequence"),
    "nfe": ("denoiser calls", "denoiser calls spent on the example"),
    "steps": ("denoiser calls", "step budget T (a maximum for adaptive samplers)"),
    "correct": ("1", "example answered correctly (1) or not (0)"),
    "n_examples": ("1", "evaluated examples"),
    "n_seeds": ("1", "runs averaged (one per training seed, or per training and policy seed)"),
    "seed": ("1", "evaluation seed (the examples drawn and the sampler's draws; training seeds are train_seed)"),
    "train_seed": ("1", "seed of the training that made the denoiser (and the policy) evaluated"),
    "diag.accuracy_unshuffled": ("1", "accuracy of the learned order decoding every example in one batch, its "
                                      "own schedules (the state-dependence diagnostic)"),
    "diag.mean_nfe_unshuffled": ("denoiser calls", "mean denoiser calls of that decoding"),
    "sampler.gamma": ("nats", "EB sampler's entropy bound: a step reveals the lowest-entropy positions while "
                              "their entropy sum minus its max stays within it"),
    "policy.nfe_penalty": ("nats per call", "price of a denoiser call in the learned order's training objective"),
}
"""CF-style ``units`` and ``long_name`` attributes of the variables that have them."""

_TEXT = h5py.string_dtype(encoding="utf-8")
_COORDS = ("task_label", "method_label", "path", "task", "sampler", "steps", "seed", "train_seed")


@dataclass(frozen=True)
class ResultsFile:
    """An aggregated results file as read back.

    Attributes:
        table: the run table with its problems and per-example outcomes.
        summary: the Table 1 rows.
        attrs: the root attributes.
    """

    table: RunTable
    summary: tuple[SummaryRow, ...]
    attrs: dict[str, Any]


def write_results(path: Path, table: RunTable, summary: tuple[SummaryRow, ...], source: str,
                  staging: Path | None = None) -> Path:
    """Atomically write the results file.

    Args:
        path: destination.
        table: the runs, problems and per-example outcomes.
        summary: the Table 1 rows.
        source: the glob or workspace the runs came from (stored as an attribute).
        staging: write this temporary instead, left for the caller to rename onto ``path`` (with the other
            outputs of one aggregation); by default a temporary of its own, renamed here.

    Returns:
        ``path``.
    """
    import h5netcdf

    tmp = staging or path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with h5netcdf.File(tmp, "w", locking=False) as handle:
            _write_root(handle, table, source)
            _write_runs(handle, table)
            _write_records(handle.create_group("summary"), "row", summary, SummaryRow)
            _write_records(handle.create_group("problems"), "problem", table.problems, Problem)
        if staging is None:
            os.replace(tmp, path)
    except OSError as err:
        raise ResultsError(f"{path}: cannot write the results file: {err}") from err
    finally:
        if staging is None:
            tmp.unlink(missing_ok=True)
    return path


def _write_root(handle: Any, table: RunTable, source: str) -> None:
    handle.attrs["file_kind"] = RESULTS_FILE_KIND
    handle.attrs["results_schema_version"] = RESULTS_SCHEMA_VERSION
    handle.attrs["metrics_schema_version"] = SCHEMA_VERSION
    handle.attrs["merlin_mdm_version"] = __version__
    handle.attrs["source"] = source
    handle.attrs["n_runs"] = table.n_rows
    handle.attrs["n_problems"] = len(table.problems)
    handle.attrs["run_columns"] = json.dumps([column.name for column in table.columns])
    handle.attrs["run_kinds"] = json.dumps([column.kind for column in table.columns])


def _write_runs(handle: Any, table: RunTable) -> None:
    width = max((array.shape[1] for array in table.examples.values()), default=0)
    handle.dimensions = {"run": table.n_rows, "example": width}
    _variable(handle, "run", ("run",), np.arange(table.n_rows, dtype=np.int64), "run index (rows sorted by path)")
    _variable(handle, "example", ("example",), np.arange(width, dtype=np.int64), "example index (same prompts "
              "for every run of one evaluation seed)")
    rows = table.rows()
    _variable(handle, "task_label", ("run",), np.array([task_label(r) for r in rows], dtype=object), "task")
    _variable(handle, "method_label", ("run",), np.array([method_label(r) for r in rows], dtype=object), "method")
    names = {column.name for column in table.columns}
    coords = " ".join(name for name in _COORDS if name in names or name.endswith("_label"))
    missing = handle.create_group("runs_missing")
    for column in table.columns:
        var = _variable(handle, column.name, ("run",), column.values, "", column.kind)
        if column.name not in _COORDS:
            var.attrs["coordinates"] = coords
        if column.missing is not None:
            _variable(missing, column.name, ("run",), column.missing, "", "bool")
    for name, array in table.examples.items():
        var = _variable(handle, name, ("run", "example"), array, "", fill=-1)
        var.attrs["coordinates"] = coords


def _variable(group: Any, name: str, dims: tuple[str, ...], values: np.ndarray, long_name: str, kind: str = "",
              fill: int | None = None) -> Any:
    """Create one variable with its units; bools as int8 (``dtype="bool"``), text as UTF-8 strings."""
    if kind == "str" or values.dtype == object:
        var = group.create_variable(name, dims, data=np.array([str(v) for v in values], dtype=object), dtype=_TEXT)
    elif kind == "bool" or values.dtype == np.bool_:
        var = group.create_variable(name, dims, data=values.astype(np.int8))
        var.attrs["dtype"] = "bool"
    elif fill is not None:
        var = group.create_variable(name, dims, data=values, fillvalue=values.dtype.type(fill))
    else:
        var = group.create_variable(name, dims, data=values)
    units, default_name = UNITS.get(name, ("", ""))
    if units:
        var.attrs["units"] = units
    if long_name or default_name:
        var.attrs["long_name"] = long_name or default_name
    return var


def _write_records(group: Any, dim: str, records: Any, kind: type) -> None:
    records = list(records)
    group.dimensions = {dim: len(records)}
    for spec in fields(kind):
        values = [getattr(record, spec.name) for record in records]
        if spec.type == "str":
            array = np.array(values, dtype=object)
        else:
            array = np.asarray(values, dtype=np.float64 if spec.type == "float" else np.int64)
        _variable(group, spec.name, (dim,), array, "", "str" if spec.type == "str" else "")


class ResultsFileError(FileProblemError):
    """A file is not a usable results file: ``kind`` is ``"unsupported_version"`` (a results file of another layout
    version) or ``"corrupt"`` (missing, unreadable, or not a results file at all)."""


def read_results(path: str | os.PathLike[str]) -> ResultsFile:
    """Read an aggregated results file.

    Raises:
        ResultsFileError: the file is missing, unreadable or not a results file of this layout version.
    """
    with _results_handle(Path(path)) as (handle, attrs):
        columns = _read_runs(handle)
        examples = {name: handle[name][()] for name in ("correct", "nfe") if name in handle}
        problems = tuple(Problem(**rec) for rec in _read_records(handle["problems"], Problem))
        summary = tuple(SummaryRow(**rec) for rec in _read_records(handle["summary"], SummaryRow))
    return ResultsFile(RunTable(columns, problems, examples), summary, attrs)


def check_results_file(path: str | os.PathLike[str]) -> None:
    """Raise what :func:`read_results` would about the file itself, reading only its root attributes.

    Raises:
        ResultsFileError: the file is missing, unreadable or not a results file of this layout version.
    """
    with _results_handle(Path(path)):
        pass


@contextlib.contextmanager
def _results_handle(src: Path) -> Iterator[tuple[h5py.File, dict[str, Any]]]:
    """The open results file and its checked root attributes; any read error becomes a ResultsFileError."""
    try:
        with open_h5(src, "r") as handle:
            yield handle, _checked_attrs(src, handle)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:  # h5py: RuntimeError on bad metadata
        raise ResultsFileError(src, "corrupt", f"cannot read the results file ({_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _checked_attrs(src: Path, handle: h5py.File) -> dict[str, Any]:
    attrs = {key: _scalar(value) for key, value in handle.attrs.items() if not key.startswith("_")}
    if attrs.get("file_kind") != RESULTS_FILE_KIND:
        per_run = ("schema_version" in attrs and "file_kind" not in attrs)
        raise ResultsFileError(src, "corrupt", "not a merlin-mdm results file" + (
            f": it is one run's metrics file; aggregate it first (`merlin-mdm aggregate {src} --out results.h5`), "
            "or read it with merlin_mdm.results.metrics.read_metrics" if per_run else ""))
    if attrs.get("results_schema_version") != RESULTS_SCHEMA_VERSION:
        raise ResultsFileError(src, "unsupported_version",
                               f"results_schema_version {attrs.get('results_schema_version')!r} "
                               f"is not supported (this is {RESULTS_SCHEMA_VERSION})")
    return attrs


def _read_runs(handle: h5py.File) -> tuple[Column, ...]:
    names = json.loads(handle.attrs["run_columns"])
    kinds = json.loads(handle.attrs["run_kinds"])
    out = []
    for name, kind in zip(names, kinds, strict=True):
        data = handle[name]
        values = data.asstr()[()].astype(object) if kind == "str" else data[()]
        if kind == "bool":
            values = values.astype(np.bool_)
        missing = handle["runs_missing"][name][()].astype(np.bool_) if name in handle["runs_missing"] else None
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
