"""HDF5 results: the per-run metrics file (atomic writer, validating reader) and the study-wide aggregation.

Only numpy and h5py are imported here; the aggregation (rich, matplotlib, mpi4py) lives in
:mod:`merlin_mdm.results.aggregate` and is imported on demand, and so do pandas and xarray behind
:func:`load` (a DataFrame of runs) and :func:`load_dataset` (the results file as an xarray Dataset).
"""

from typing import TYPE_CHECKING, Any

from merlin_mdm.results.metrics import (
    REQUIRED_ATTRS,
    REQUIRED_DATASETS,
    SCHEMA_VERSION,
    Metrics,
    read_metrics,
    summarize,
    write_metrics,
)

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = [
    "REQUIRED_ATTRS",
    "REQUIRED_DATASETS",
    "SCHEMA_VERSION",
    "Metrics",
    "load",
    "load_dataset",
    "read_metrics",
    "summarize",
    "write_metrics",
]


def load(path: Any) -> "pandas.DataFrame":
    """The runs of a results file as a pandas DataFrame (see :func:`merlin_mdm.results.frames.load`)."""
    from merlin_mdm.results.frames import load as _load

    return _load(path)


def load_dataset(path: Any, group: str | None = None) -> "xarray.Dataset":
    """A results file as an xarray Dataset (see :func:`merlin_mdm.results.frames.load_dataset`)."""
    from merlin_mdm.results.frames import load_dataset as _load_dataset

    return _load_dataset(path, group)
