"""Samples: Merlin's hierarchical directories and reading .npy/.csv/.tab files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from merlin_mdm.errors import SpecError
from merlin_mdm.study.samples import SampleSet, hierarchy_sizes, read_samples, sample_count, sample_path


@pytest.mark.parametrize(("n", "level_max_dirs", "sizes"), [
    (10_000, 25, (625, 25, 1)),
    (1, 25, ()),  # a single sample runs in the step's folder, as in Merlin
    (25, 25, (1,)),
    (26, 25, (25, 1)),
    (625, 25, (25, 1)),
    (626, 25, (625, 25, 1)),
    (1_000_000, 10, (100_000, 10_000, 1000, 100, 10, 1)),
    (0, 25, ()),
])  # fmt: skip
def test_hierarchy_sizes(n: int, level_max_dirs: int, sizes: tuple[int, ...]) -> None:
    assert hierarchy_sizes(n, level_max_dirs) == sizes


def test_ten_thousand_samples_use_three_levels() -> None:
    samples = SampleSet("/x/samples.npy", 10_000, ("X",), 25)
    assert samples.path(0) == "00/00/00"
    assert samples.path(1) == "00/00/01"
    assert samples.path(25) == "00/01/00"
    assert samples.path(625) == "01/00/00"
    assert samples.path(9_999) == "15/24/24"
    assert samples.glob() == "*/*/*/"  # Merlin's form
    assert len({samples.path(i) for i in range(10_000)}) == 10_000  # every sample has its own directory


def test_no_directory_holds_more_than_level_max_dirs_entries() -> None:
    samples = SampleSet("/x/s.npy", 1000, ("X",), 7)
    paths = [samples.path(i).split("/") for i in range(1000)]
    for depth in range(len(samples.sizes)):
        children: dict[tuple[str, ...], set[str]] = {}
        for parts in paths:
            children.setdefault(tuple(parts[:depth]), set()).add(parts[depth])
        assert max(len(c) for c in children.values()) <= 7


def test_sample_path_padding() -> None:
    assert sample_path(7, (5, 1), 1) == "1/2"
    assert SampleSet("/x", 3, ("X",), 100).path(2) == "002"


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.arange(12.0).reshape(6, 2))
    data = read_samples(path)
    assert isinstance(data, np.memmap)
    assert data.shape == (6, 2) and data[5, 1] == 11.0
    assert sample_count(path) == (6, 2)


@pytest.mark.parametrize(("name", "text", "rows"), [
    ("s.csv", "1,a\n2,b\n", [["1", "a"], ["2", "b"]]),
    ("s.csv", "# comment\n1,a\n\n2,b\n", [["1", "a"], ["2", "b"]]),
    ("s.tab", "1\ta\n2\tb\n", [["1", "a"], ["2", "b"]]),
    ("s.tab", "1 a\n2 b\n", [["1", "a"], ["2", "b"]]),
    ("one.csv", "0.5\n0.25\n0.125\n", [["0.5"], ["0.25"], ["0.125"]]),
    ("row.csv", "1,2,3\n", [["1", "2", "3"]]),
    ("excel.csv", "\ufeff1,a\n2,b\n", [["1", "a"], ["2", "b"]]),  # a byte-order mark is no part of the first value
])  # fmt: skip
def test_text_tables(tmp_path: Path, name: str, text: str, rows: list[list[str]]) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert read_samples(path).tolist() == rows


def test_one_dimensional_npy_is_one_column(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.array([1.0, 2.0, 3.0]))
    assert read_samples(path).shape == (3, 1)


def _npy(path: Path, array: np.ndarray) -> None:
    np.save(path, array, allow_pickle=True)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("s.txt", "1\n", "unsupported samples file type '.txt'"),
    ("s.csv", None, "samples file not found"),
    ("s.csv", "", "holds no samples"),
    ("s.csv", "# only a comment\n", "holds no samples"),
    ("s.csv", "1,2\n3\n", "cannot read samples"),
    ("s.npy", "not numpy", "cannot read samples"),
    ("s.npy", np.zeros((2, 2, 2)), "must be a 2-D table"),
    ("s.npy", np.float64(3.0), "must be a 2-D table"),
    ("s.npy", np.zeros((0, 3)), "holds no samples"),
    ("s.npy", np.array([{"a": 1}], dtype=object), "cannot read samples"),
])  # fmt: skip
def test_bad_sample_files_are_spec_errors(tmp_path: Path, name: str, content: object, message: str) -> None:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, np.ndarray | np.generic):
        _npy(path, np.asarray(content))
    with pytest.raises(SpecError, match=message) as info:
        read_samples(path)
    assert info.value.issues[0].path == "merlin.samples.file"


def test_rows_are_cached(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("1\n2\n", encoding="utf-8")
    samples = SampleSet(str(path), 2, ("X",))
    first = samples.rows()
    path.unlink()
    assert samples.rows() is first
