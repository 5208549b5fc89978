"""The per-run HDF5 metrics file: one evaluation run (task, sampler, budget, seed) per file.

The schema is versioned by the root attribute ``schema_version`` and documented in
``docs/results-schema.md``. :func:`write_metrics` is atomic: it writes a hidden temporary file in the
destination directory (``.NAME.<pid>.<hex>.tmp``, which never matches ``*.h5``), flushes and fsyncs it,
then ``os.replace``-s it onto the final name. A run killed mid-write leaves at most the temporary file,
never a half file under the real name, and an existing file is replaced whole or not at all.

HDF5 file locking: HDF5 >= 1.10 takes a POSIX/flock lock on every open, which fails on some parallel file
systems (Lustre, GPFS mounted without flock: ``unable to lock file, errno = 38``) and makes readers block
on files a writer still holds. Every open here passes ``locking=False`` to h5py (the per-file form of
``HDF5_USE_FILE_LOCKING=FALSE``); this is safe because a metrics file is never written in place, so a
reader only ever sees a finished, renamed file.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from merlin_mdm import __version__
from merlin_mdm.errors import ResultsError

__all__ = [
    "ENV_PARAM_LABELS",
    "ENV_STEP",
    "ENV_STUDY",
    "PROBLEM_KINDS",
    "REQUIRED_ATTRS",
    "REQUIRED_DATASETS",
    "RESULTS_FILE_KIND",
    "SCHEMA_VERSION",
    "WRITER_ATTRS",
    "FileProblemError",
    "Metrics",
    "MetricsFileError",
    "has_hdf5_signature",
    "is_temporary_name",
    "open_h5",
    "read_metrics",
    "summarize",
    "write_metrics",
]

SCHEMA_VERSION = 1
"""Version of the metrics-file schema; bumped on any incompatible change."""

ENV_STUDY = "MERLIN_MDM_STUDY"
ENV_STEP = "MERLIN_MDM_STEP"
ENV_PARAM_LABELS = "MERLIN_MDM_PARAM_LABELS"
_ENV_ATTRS = {"study": ENV_STUDY, "study_step": ENV_STEP, "param_labels": ENV_PARAM_LABELS}

REQUIRED_ATTRS: dict[str, type] = {
    "task": str,  # registered task name, e.g. "blocks"
    "sampler": str,  # registered sampler name, e.g. "top_prob"
    "steps": int,  # step budget T (the maximum for adaptive samplers)
    "seed": int,  # evaluation seed
    "accuracy": float,  # fraction of examples correct/valid, in [0, 1]
    "mean_nfe": float,  # mean denoiser calls per example
    "min_nfe": int,  # fewest denoiser calls of any example
    "max_nfe": int,  # most denoiser calls of any example
}
"""Attributes every metrics file has, with their Python types (int also accepted where float is)."""

REQUIRED_DATASETS: dict[str, str] = {
    "correct": "b",  # (N,) bool: example valid/correct
    "nfe": "i",  # (N,) int64: denoiser calls spent on the example
    "wall_time": "f",  # (N,) float64: seconds of generation attributed to the example
}
"""Datasets every metrics file has, with the numpy dtype kind they must have."""

WRITER_ATTRS = ("schema_version", "merlin_mdm_version", "host", "written_at")
"""Attributes :func:`write_metrics` sets itself; callers may not pass them."""

RESULTS_FILE_KIND = "merlin_mdm.results"
"""Value of the ``file_kind`` root attribute of an aggregated results file (never read as metrics)."""

PROBLEM_KINDS = ("missing", "incomplete", "corrupt", "truncated", "unreadable", "in_use", "not_metrics",
                 "unsupported_version", "invalid", "results_file", "duplicate")
"""Every :attr:`MetricsFileError.kind` (why a file is not a usable metrics file), and ``duplicate``: a usable
file holding a run already read from another (aggregation counts it once). ``unreadable`` is also a folder of a
workspace that cannot be listed."""

_SUMMARY_TOLERANCE = 1e-6
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class FileProblemError(ResultsError):
    """A metrics or results file is not usable, and which problem it has.

    Attributes:
        path: the file.
        kind: one of :data:`PROBLEM_KINDS`.
        reason: what is wrong, without the path.
    """

    def __init__(self, path: Path, kind: str, reason: str):
        self.path = path
        self.kind = kind
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class MetricsFileError(FileProblemError):
    """A file is not a usable metrics file."""


@dataclass(frozen=True)
class Metrics:
    """One metrics file as read back.

    Attributes:
        path: the file it came from.
        attrs: root attributes as Python scalars (str, int, float, bool).
        datasets: every dataset, by name, as numpy arrays; ``correct``, ``nfe`` and ``wall_time`` are (N,).
    """

    path: Path
    attrs: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        """Number of evaluated examples N."""
        return int(self.datasets["correct"].shape[0])


def open_h5(path: str | os.PathLike[str], mode: str = "r") -> h5py.File:
    """Open an HDF5 file without HDF5's file locking (see the module docstring for why).

    Args:
        path: the file.
        mode: an h5py mode ("r", "w", ...).

    Returns:
        The open h5py file.
    """
    try:
        return h5py.File(path, mode, locking=False)
    except OSError as err:
        if "locking flag values" not in str(err):
            raise
    # This process holds the file open already, with HDF5's default locking (a notebook's own
    # xarray.open_dataset(path, engine="h5netcdf")): HDF5 shares one open file per process and insists on the
    # same flags, and sharing it takes no new lock.
    return h5py.File(path, mode)


def is_temporary_name(name: str) -> bool:
    """Whether a file name is one of :func:`write_metrics`'s temporary names (an interrupted write)."""
    return name.startswith(".") and name.endswith(".tmp")


def summarize(correct: np.ndarray, nfe: np.ndarray) -> dict[str, Any]:
    """The summary attributes (accuracy, mean/min/max NFE) that must agree with the datasets.

    Args:
        correct: (N,) bool, example valid/correct.
        nfe: (N,) int, denoiser calls per example.

    Returns:
        ``{"accuracy": float, "mean_nfe": float, "min_nfe": int, "max_nfe": int}``.
    """
    correct = np.asarray(correct)
    nfe = np.asarray(nfe)
    if correct.size == 0 or nfe.size == 0:
        raise ResultsError("cannot summarize zero examples")
    return {
        "accuracy": float(correct.mean()),
        "mean_nfe": float(nfe.mean()),
        "min_nfe": int(nfe.min()),
        "max_nfe": int(nfe.max()),
    }


def write_metrics(path: str | os.PathLike[str], attrs: Mapping[str, Any], datasets: Mapping[str, Any]) -> Path:
    """Validate and atomically write one run's metrics file.

    Args:
        path: destination, conventionally ``metrics.h5``; its directory must exist.
        attrs: run attributes: the required ones (:data:`REQUIRED_ATTRS`), task knobs as ``task.<knob>``,
            sampler knobs as ``sampler.<knob>``, and any other scalars (``checkpoint_id``, ``start_time``, ...).
            Values are str, int, float, bool or numpy scalars; lists/tuples/dicts are stored as JSON text;
            None values are omitted.
        datasets: the required (N,) arrays (:data:`REQUIRED_DATASETS`) and optionally more, each with
            first dimension N.

    Returns:
        The final path.

    Raises:
        ResultsError: an attribute or dataset is missing, mistyped or inconsistent, or the write failed.
    """
    dest = Path(path)
    clean_attrs = _validated_attrs(dest, attrs)
    clean_data = _validated_datasets(dest, datasets)
    for name, array in clean_data.items():
        if array.dtype.kind in "OV":
            raise ResultsError(f"{dest}: dataset {name} has unsupported dtype {array.dtype} (use numbers or str)")
    _check_summary(dest, clean_attrs, clean_data)
    clean_attrs.update(_writer_attrs())
    for key, env_name in _ENV_ATTRS.items():
        value = os.environ.get(env_name)
        if value and key not in clean_attrs:
            clean_attrs[key] = value
    if not dest.parent.is_dir():
        raise ResultsError(f"{dest}: directory {dest.parent} does not exist")
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        _write_file(tmp, clean_attrs, clean_data)
        os.replace(tmp, dest)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise ResultsError(f"{dest}: cannot write metrics file: {err}") from err
        raise
    _fsync_dir(dest.parent)
    return dest


def read_metrics(path: str | os.PathLike[str]) -> Metrics:
    """Read and validate one metrics file.

    Args:
        path: the file.

    Returns:
        The file's attributes and datasets.

    Raises:
        MetricsFileError: the file is missing, not HDF5, truncated, not a metrics file, of another schema
            version, or lacks or contradicts a required attribute or dataset; the message names the file and
            what is wrong, ``kind`` classifies it.
    """
    src = Path(path)
    if is_temporary_name(src.name):
        raise MetricsFileError(src, "incomplete", "temporary file of an interrupted write_metrics (the run was killed)")
    if src.is_dir():
        raise MetricsFileError(src, "missing", "a folder, not a metrics file (give a file, or a glob such as "
                                               "'DIR/**/*.h5')")
    if not src.is_file():
        raise MetricsFileError(src, "missing", "no such metrics file")
    attrs, datasets = _read_raw(src)
    try:
        clean_attrs = _validated_attrs(src, attrs, allow_writer=True)
        clean_data = _validated_datasets(src, datasets)
        _check_summary(src, clean_attrs, clean_data)
    except ResultsError as err:
        raise MetricsFileError(src, "invalid", str(err).removeprefix(f"{src}: ")) from err
    return Metrics(path=src, attrs=clean_attrs, datasets=clean_data)


def _read_raw(src: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        handle = open_h5(src, "r")
    except OSError as err:
        raise MetricsFileError(src, *_open_failure(src, err)) from err
    try:
        with handle:
            attrs = {key: _to_python(value) for key, value in handle.attrs.items()}
            _check_version(src, attrs)
            datasets = {name: _dataset_value(obj) for name, obj in handle.items() if isinstance(obj, h5py.Dataset)}
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise MetricsFileError(src, "truncated", f"HDF5 file cannot be read completely ({err})") from err
    return attrs, datasets


def _open_failure(src: Path, err: OSError) -> tuple[str, str]:
    """The problem kind and reason of a file HDF5 could not open."""
    if isinstance(err, PermissionError) or err.errno == errno.EACCES:
        return "unreadable", f"no permission to read it ({err.strerror or 'Permission denied'})"
    text = str(err)
    if "already open for write" in text or "unable to lock file" in text:
        return "in_use", ("another process has it open for writing (a run still writing it): aggregate again when "
                          "it has finished (if none is, a writer died with it open: h5clear -s clears the mark)")
    if has_hdf5_signature(src):
        return "truncated", f"truncated or damaged HDF5 file ({err})"
    return "corrupt", f"not an HDF5 file ({err})"


def _dataset_value(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return np.asarray(dataset.asstr()[()], dtype=object)  # UTF-8 text as str, not bytes
    return np.asarray(dataset[()])


def has_hdf5_signature(src: Path) -> bool:
    """Whether a file starts with the HDF5 signature (False where it cannot be read)."""
    try:
        with open(src, "rb") as raw:
            head = raw.read(len(_HDF5_SIGNATURE))
    except OSError:
        return False
    return head == _HDF5_SIGNATURE


def _check_version(src: Path, attrs: Mapping[str, Any]) -> None:
    if attrs.get("file_kind") == RESULTS_FILE_KIND:
        raise MetricsFileError(src, "results_file", "an aggregated results file, not a per-run metrics file")
    if "schema_version" not in attrs:
        raise MetricsFileError(src, "not_metrics", "HDF5 file without a schema_version attribute")
    version = attrs["schema_version"]
    if version != SCHEMA_VERSION:
        reason = f"schema_version {version!r} is not supported (this is version {SCHEMA_VERSION})"
        raise MetricsFileError(src, "unsupported_version", reason)


def _validated_attrs(dest: Path, attrs: Mapping[str, Any], allow_writer: bool = False) -> dict[str, Any]:
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise ResultsError(f"{dest}: missing required attribute(s) {', '.join(missing)}")
    if not allow_writer:
        reserved = [key for key in WRITER_ATTRS if key in attrs]
        if reserved:
            raise ResultsError(f"{dest}: attribute(s) {', '.join(reserved)} are set by write_metrics, not the caller")
    clean: dict[str, Any] = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ResultsError(f"{dest}: attribute names must be non-empty strings without '/', got {key!r}")
        converted = _attr_value(dest, key, value)
        if converted is not None:
            clean[key] = converted
    for key, kind in REQUIRED_ATTRS.items():
        _check_attr_type(dest, key, clean.get(key), kind)
    if not 0.0 <= clean["accuracy"] <= 1.0:
        raise ResultsError(f"{dest}: accuracy must be a fraction in [0, 1], got {clean['accuracy']!r}")
    if clean["steps"] < 1:
        raise ResultsError(f"{dest}: steps must be >= 1, got {clean['steps']!r}")
    return clean


def _check_attr_type(dest: Path, key: str, value: Any, kind: type) -> None:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ResultsError(f"{dest}: attribute {key} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ResultsError(f"{dest}: attribute {key} must be finite, got {value!r}")


def _attr_value(dest: Path, key: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | dict):
        try:
            return json.dumps(value, sort_keys=True, default=_json_scalar)
        except TypeError as err:
            raise ResultsError(f"{dest}: attribute {key} is not JSON-serialisable: {err}") from err
    raise ResultsError(f"{dest}: attribute {key} has unsupported type {type(value).__name__}")


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a scalar")


def _validated_datasets(dest: Path, datasets: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [name for name in REQUIRED_DATASETS if name not in datasets]
    if missing:
        raise ResultsError(f"{dest}: missing required dataset(s) {', '.join(missing)}")
    clean = {name: np.asarray(value) for name, value in datasets.items()}
    for name, kind in REQUIRED_DATASETS.items():
        array = clean[name]
        if array.ndim != 1:
            raise ResultsError(f"{dest}: dataset {name} must be 1-D (N,), got shape {array.shape}")
        if array.dtype.kind != kind and not (kind == "i" and array.dtype.kind == "u"):
            raise ResultsError(f"{dest}: dataset {name} must have dtype kind {kind!r}, got {array.dtype}")
    clean["nfe"] = clean["nfe"].astype(np.int64)
    clean["wall_time"] = clean["wall_time"].astype(np.float64)
    n = clean["correct"].shape[0]
    if n == 0:
        raise ResultsError(f"{dest}: datasets are empty (N = 0)")
    for name, array in clean.items():
        if array.ndim == 0 or array.shape[0] != n:
            raise ResultsError(f"{dest}: dataset {name} has shape {array.shape}, expected first dimension {n}")
    return clean


def _check_summary(dest: Path, attrs: Mapping[str, Any], datasets: Mapping[str, np.ndarray]) -> None:
    expected = summarize(datasets["correct"], datasets["nfe"])
    for key, value in expected.items():
        if abs(float(attrs[key]) - value) > _SUMMARY_TOLERANCE * max(1.0, abs(value)):
            raise ResultsError(f"{dest}: attribute {key}={attrs[key]!r} disagrees with the datasets ({value!r})")


def _writer_attrs() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "merlin_mdm_version": __version__,
        "host": socket.gethostname(),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write_file(tmp: Path, attrs: Mapping[str, Any], datasets: Mapping[str, np.ndarray]) -> None:
    with open_h5(tmp, "w") as handle:
        for key, value in attrs.items():
            handle.attrs[key] = value
        for name, array in datasets.items():
            if array.dtype.kind == "U":
                handle.create_dataset(name, data=array.astype(object), dtype=h5py.string_dtype())
            else:
                handle.create_dataset(name, data=array)
        handle.flush()
    with open(tmp, "rb+") as raw:
        os.fsync(raw.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def _to_python(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.shape == ():
        return value.item()
    return value
