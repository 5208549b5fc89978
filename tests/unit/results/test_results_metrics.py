"""The per-run metrics file: schema round trip, validation, classification of bad files, atomic write."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import merlin_mdm
from merlin_mdm.errors import ResultsError
from merlin_mdm.results import metrics
from merlin_mdm.results.metrics import (
    REQUIRED_ATTRS,
    REQUIRED_DATASETS,
    SCHEMA_VERSION,
    MetricsFileError,
    read_metrics,
    summarize,
    write_metrics,
)

from .conftest import MakeRun, run_payload


def test_round_trip_keeps_values_and_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERLIN_MDM_STUDY", "sweep")
    monkeypatch.setenv("MERLIN_MDM_STEP", "eval")
    monkeypatch.setenv("MERLIN_MDM_PARAM_LABELS", "SAMPLER.top_prob.STEPS.4")
    extra: dict[str, Any] = {"sampler.k": np.int64(2), "sampler.blocks": [1, 2], "checkpoint_id": "ab12",
                             "flag": True, "note": None, "task.name": "blöcke"}
    attrs, data = run_payload(n=5, **extra)
    path = write_metrics(tmp_path / "metrics.h5", attrs, data)
    got = read_metrics(path)
    assert got.path == path
    assert got.n_examples == 5
    for key in ("task", "sampler", "steps", "seed", "accuracy", "mean_nfe", "min_nfe", "max_nfe", "checkpoint_id"):
        assert got.attrs[key] == attrs[key]
        assert type(got.attrs[key]) is type(attrs[key])
    assert got.attrs["sampler.k"] == 2 and type(got.attrs["sampler.k"]) is int
    assert got.attrs["sampler.blocks"] == "[1, 2]"  # sequences are stored as JSON text
    assert got.attrs["flag"] is True
    assert got.attrs["task.name"] == "blöcke"
    assert "note" not in got.attrs
    assert got.attrs["schema_version"] == SCHEMA_VERSION
    assert got.attrs["merlin_mdm_version"] == merlin_mdm.__version__
    assert isinstance(got.attrs["host"], str) and got.attrs["host"]
    assert (got.attrs["study"], got.attrs["study_step"], got.attrs["param_labels"]) == (
        "sweep", "eval", "SAMPLER.top_prob.STEPS.4")
    assert got.datasets["correct"].dtype == np.bool_
    assert got.datasets["nfe"].dtype == np.int64
    assert got.datasets["wall_time"].dtype == np.float64
    np.testing.assert_array_equal(got.datasets["correct"], data["correct"])
    np.testing.assert_array_equal(got.datasets["nfe"], data["nfe"])


def test_study_labels_absent_outside_a_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MERLIN_MDM_STUDY", "MERLIN_MDM_STEP", "MERLIN_MDM_PARAM_LABELS"):
        monkeypatch.delenv(name, raising=False)
    attrs, data = run_payload()
    got = read_metrics(write_metrics(tmp_path / "m.h5", attrs, data))
    assert not {"study", "study_step", "param_labels"} & set(got.attrs)


def test_extra_datasets_with_matching_first_dimension_are_kept(tmp_path: Path) -> None:
    attrs, data = run_payload(n=4)
    data["tokens"] = np.zeros((4, 16), dtype=np.int64)  # (N, L)
    data["text"] = np.array(["a", "b", "ç", "d"])
    got = read_metrics(write_metrics(tmp_path / "m.h5", attrs, data))
    assert got.datasets["tokens"].shape == (4, 16)
    assert list(got.datasets["text"]) == ["a", "b", "ç", "d"]


@pytest.mark.parametrize("missing", list(REQUIRED_ATTRS))
def test_each_required_attribute_is_enforced(tmp_path: Path, missing: str) -> None:
    attrs, data = run_payload()
    del attrs[missing]
    with pytest.raises(ResultsError, match=f"missing required attribute.*{missing}"):
        write_metrics(tmp_path / "m.h5", attrs, data)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing", list(REQUIRED_DATASETS))
def test_each_required_dataset_is_enforced(tmp_path: Path, missing: str) -> None:
    attrs, data = run_payload()
    del data[missing]
    with pytest.raises(ResultsError, match=f"missing required dataset.*{missing}"):
        write_metrics(tmp_path / "m.h5", attrs, data)


def _break(change: str) -> tuple[dict[str, Any], dict[str, Any]]:
    attrs, data = run_payload(n=6)
    if change == "short":
        data["wall_time"] = data["wall_time"][:5]
    elif change == "nfe float":
        data["nfe"] = data["nfe"].astype(float)
    elif change == "correct int":
        data["correct"] = data["correct"].astype(int)
    elif change == "2-D":
        data["correct"] = np.ones((6, 2), dtype=bool)
    elif change == "accuracy percent":
        attrs["accuracy"] = 50.0
    elif change == "accuracy disagrees":
        attrs["accuracy"] = 1.0 if attrs["accuracy"] < 0.5 else 0.0
    elif change == "steps text":
        attrs["steps"] = "4"
    elif change == "seed bool":
        attrs["seed"] = True
    elif change == "reserved":
        attrs["schema_version"] = 7
    elif change == "slash":
        attrs["task/nb"] = 4
    elif change == "object":
        data["extra"] = np.array([None] * 6, dtype=object)
    elif change == "nan":
        attrs["mean_nfe"] = float("nan")
    return attrs, data


@pytest.mark.parametrize(("change", "message"), [
    ("short", "dataset wall_time has shape"),
    ("nfe float", "dataset nfe must have dtype kind 'i'"),
    ("correct int", "dataset correct must have dtype kind 'b'"),
    ("2-D", "must be 1-D"),
    ("accuracy percent", "accuracy must be a fraction"),
    ("accuracy disagrees", "accuracy=.* disagrees with the datasets"),
    ("steps text", "attribute steps must be int"),
    ("seed bool", "attribute seed must be int"),
    ("reserved", "schema_version are set by write_metrics"),
    ("slash", "without '/'"),
    ("nan", "mean_nfe must be finite"),
    ("object", "dataset extra has unsupported dtype object"),
])
def test_invalid_runs_are_refused_and_nothing_is_written(tmp_path: Path, change: str, message: str) -> None:
    attrs, data = _break(change)
    with pytest.raises(ResultsError, match=message) as caught:
        write_metrics(tmp_path / "m.h5", attrs, data)
    assert str(tmp_path / "m.h5") in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_summarize_matches_definitions() -> None:
    got = summarize(np.array([True, False, True, True]), np.array([1, 4, 2, 1]))
    assert got == {"accuracy": 0.75, "mean_nfe": 2.0, "min_nfe": 1, "max_nfe": 4}
    with pytest.raises(ResultsError, match="zero examples"):
        summarize(np.array([], dtype=bool), np.array([], dtype=int))


def _kind_of(path: Path) -> MetricsFileError:
    with pytest.raises(MetricsFileError) as caught:
        read_metrics(path)
    assert str(path) in str(caught.value)
    return caught.value


def test_read_classifies_what_is_wrong(tmp_path: Path, make_run: MakeRun) -> None:
    assert _kind_of(tmp_path / "absent.h5").kind == "missing"
    (tmp_path / "text.h5").write_text("not hdf5")
    assert _kind_of(tmp_path / "text.h5").kind == "corrupt"
    whole = make_run(tmp_path / "whole.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(whole[: len(whole) // 2])
    assert _kind_of(tmp_path / "cut.h5").kind == "truncated"
    with h5py.File(tmp_path / "foreign.h5", "w") as handle:
        handle["x"] = np.arange(3)
    assert _kind_of(tmp_path / "foreign.h5").kind == "not_metrics"
    future = make_run(tmp_path / "future.h5")
    with h5py.File(future, "r+") as handle:
        handle.attrs["schema_version"] = SCHEMA_VERSION + 1
    error = _kind_of(future)
    assert error.kind == "unsupported_version" and f"schema_version {SCHEMA_VERSION + 1}" in str(error)
    edited = make_run(tmp_path / "edited.h5")
    with h5py.File(edited, "r+") as handle:
        del handle["nfe"]
    assert _kind_of(edited).kind == "invalid"
    assert _kind_of(tmp_path / ".m.h5.1.ab.tmp").kind == "incomplete"


def test_readers_do_not_take_hdf5_file_locks(tmp_path: Path, make_run: MakeRun) -> None:
    path = make_run(tmp_path / "m.h5")
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a writer holding the file looks like to HDF5
        with pytest.raises(OSError, match="lock"):
            h5py.File(path, "r", locking=True).close()  # HDF5's default would refuse to read
        assert read_metrics(path).n_examples == 8
    finally:
        os.close(fd)


def test_a_failed_write_leaves_the_existing_file_whole(tmp_path: Path, make_run: MakeRun,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_run(tmp_path / "m.h5", seed=1)
    before = path.read_bytes()

    def dies_half_way(tmp: Path, attrs: Any, datasets: Any) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["schema_version"] = SCHEMA_VERSION
        raise KeyboardInterrupt  # e.g. Ctrl-C or a walltime signal in the middle of writing

    monkeypatch.setattr(metrics, "_write_file", dies_half_way)
    attrs, data = run_payload(seed=2)
    with pytest.raises(KeyboardInterrupt):
        write_metrics(path, attrs, data)
    assert path.read_bytes() == before
    assert read_metrics(path).attrs["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5"]  # the temporary file was cleaned up


def test_a_killed_write_leaves_only_a_hidden_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL between writing and renaming: no cleanup runs; the final name never appears."""

    def killed(src: Any, dst: Any) -> None:
        raise SystemExit(137)

    monkeypatch.setattr(os, "replace", killed)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # a killed process cleans nothing
    attrs, data = run_payload()
    with pytest.raises(SystemExit):
        write_metrics(tmp_path / "metrics.h5", attrs, data)
    monkeypatch.undo()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".metrics.h5.") and left[0].endswith(".tmp")
    assert not (tmp_path / "metrics.h5").exists()
    assert list(tmp_path.glob("*.h5")) == []
    assert _kind_of(tmp_path / left[0]).kind == "incomplete"


def test_missing_directory_is_a_results_error(tmp_path: Path) -> None:
    attrs, data = run_payload()
    with pytest.raises(ResultsError, match="does not exist"):
        write_metrics(tmp_path / "nope" / "m.h5", attrs, data)
