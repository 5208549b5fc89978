"""The results file as the objects a scientist analyses: a pandas DataFrame of runs and an xarray Dataset.

pandas and xarray are imported on call, so the rest of the results layer never needs them.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from merlin_mdm.results.results_file import UNITS, ResultsFileError, check_results_file, read_results
from merlin_mdm.results.tables import method_label, task_label

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = ["GROUPS", "ResultsWarning", "load", "load_dataset"]

GROUPS = (None, "summary", "problems", "runs_missing")  # load_dataset's groups: None is the runs


def load(path: str | os.PathLike[str]) -> pandas.DataFrame:
    """One row per evaluation run: every run-table column plus ``task_label`` and ``method_label``.

    Args:
        path: a results file written by ``merlin-mdm aggregate``.

    Returns:
        The DataFrame, rows sorted by path; a run lacking an attribute has NA there. ``frame.attrs`` holds the
        ``source`` file, the ``units`` and ``long_name`` of the columns that have them (``accuracy`` is a
        fraction, 1 = every example right; ``mean_nfe`` counts denoiser calls), and the ``problems``: the runs
        the aggregation could not use (``load_dataset(path, "problems")``), which a warning also names.

    Raises:
        ResultsError: the file is not a readable results file.
    """
    import pandas as pd

    table = read_results(path).table
    if table.problems:
        listed = "; ".join(f"{p.path}: {p.message}" for p in table.problems[:3])
        more = f" and {len(table.problems) - 3} more" if len(table.problems) > 3 else ""
        warnings.warn(f"{path}: {len(table.problems)} run(s) could not be used and are not in the frame ({listed}"
                      f"{more}); load_dataset(path, 'problems') lists them", ResultsWarning, stacklevel=_caller_level())
    data = {}
    for column in table.columns:
        series = pd.Series(column.values, name=column.name)
        if column.kind == "int":
            series = series.astype("Int64")
        elif column.kind == "bool":
            series = series.astype("boolean")
        if column.missing is not None:
            series = series.mask(pd.Series(column.missing))
        data[column.name] = series
    frame = pd.DataFrame(data)
    rows = table.rows()
    frame["task_label"] = [task_label(row) for row in rows]
    frame["method_label"] = [method_label(row) for row in rows]
    frame.attrs.update(source=str(path), problems=[dict(path=p.path, kind=p.kind, message=p.message)
                                                   for p in table.problems],
                       units={c: UNITS[c][0] for c in frame.columns if c in UNITS},
                       long_name={c: UNITS[c][1] for c in frame.columns if c in UNITS})
    return frame


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside this package (``load`` is also reached through
    ``merlin_mdm.results.load``), so a warning names the caller's line."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame: FrameType | None = sys._getframe(1)  # the function that warns: level 1
    level = 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package:
        frame = frame.f_back
        level += 1
    return level


class ResultsWarning(UserWarning):
    """A results file loaded with runs the aggregation could not use (corrupt, cut, missing metrics)."""


def load_dataset(path: str | os.PathLike[str], group: str | None = None) -> xarray.Dataset:
    """The results file through xarray: dims ``run`` and ``example`` (``row`` for ``group="summary"``).

    Args:
        path: a results file.
        group: None for the runs, ``"summary"`` for Table 1, ``"problems"`` for the unusable files,
            ``"runs_missing"`` for which run attributes are absent.

    Returns:
        The Dataset, read into memory (the file is closed).

    Raises:
        ResultsError: the file is not a readable results file (a per-run metrics file, say), or no such group.
    """
    import xarray as xr

    if group not in GROUPS:
        raise ResultsFileError(Path(path), "corrupt", f"no group {group!r} in a results file: "
                                                      f"{', '.join(repr(g) for g in GROUPS)}")
    check_results_file(path)
    # h5py's locking=False, as every other open of these files (docs/results-schema.md, "File locking"), unless
    # this process holds the file open already with HDF5's default (see merlin_mdm.results.metrics.open_h5)
    try:
        with xr.open_dataset(path, engine="h5netcdf", group=group, driver_kwds={"locking": False}) as dataset:
            return dataset.load()
    except OSError as err:
        if "locking flag values" not in str(err):
            raise
    with xr.open_dataset(path, engine="h5netcdf", group=group) as dataset:
        return dataset.load()
