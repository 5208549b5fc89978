"""HDF5 results: the per-run metrics file (atomic writer, validating reader) and the study-wide aggregation.

Only numpy and h5py are imported here; the aggregation (rich, matplotlib, mpi4py) lives in
:mod:`merlin_mdm.results.aggregate` and is imported on demand.
"""

from merlin_mdm.results.metrics import (
    REQUIRED_ATTRS,
    REQUIRED_DATASETS,
    SCHEMA_VERSION,
    Metrics,
    read_metrics,
    summarize,
    write_metrics,
)

__all__ = [
    "REQUIRED_ATTRS",
    "REQUIRED_DATASETS",
    "SCHEMA_VERSION",
    "Metrics",
    "read_metrics",
    "summarize",
    "write_metrics",
]
