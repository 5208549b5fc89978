"""A large text samples file is parsed once, when the study is made: its rows are kept beside the copy in
merlin_info/ and memory-mapped by every task (1M rows of CSV took 3-9 s and 260 MB in each worker process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from merlin_mdm.backends.execution import task_tokens
from merlin_mdm.spec import load_spec_text
from merlin_mdm.study.plan import StudyPlan
from merlin_mdm.study.samples import PARSED_MIN_ROWS, SampleSet, parsed_path
from merlin_mdm.study.workspace import create_workspace
from tests.unit.study.test_samples_copy import SPEC  # one step over samples.csv, labels P, Q

N = PARSED_MIN_ROWS + 5


def _plan(tmp_path: Path, lines: list[str]) -> StudyPlan:
    (tmp_path / "samples.csv").write_text("".join(lines), encoding="utf-8")
    ws, _ = create_workspace(load_spec_text(SPEC, tmp_path / "spec.yaml"))
    return ws.load_plan()


def _fresh(samples: SampleSet) -> SampleSet:
    """The samples as a new worker process sees them (nothing read yet)."""
    return SampleSet(samples.file, samples.count, samples.column_labels, samples.level_max_dirs)


def test_the_rows_are_kept_parsed_and_mapped_by_the_tasks(tmp_path: Path) -> None:
    plan = _plan(tmp_path, ["P,Q,R\n", *(f"{i}.5,x{i},extra\n" for i in range(N))])
    assert plan.samples is not None
    copy = Path(plan.samples.file)
    kept = parsed_path(copy)
    assert kept.is_file() and [p.name for p in copy.parent.glob("*.partial")] == []
    rows = plan.samples.rows()
    assert isinstance(rows, np.memmap) and rows.dtype.kind == "S"  # ASCII packed as bytes, the labelled columns
    assert rows.shape == (N, 2)
    tokens = task_tokens(plan, N - 1, "/w/a/" + plan.samples.path(N - 1))
    last = (f"{N - 1}.5", f"x{N - 1}")
    assert (tokens["P"], tokens["Q"], tokens["MERLIN_SAMPLE_VECTOR"]) == (*last, " ".join(last))


def test_text_that_is_not_ascii_is_kept_as_text(tmp_path: Path) -> None:
    plan = _plan(tmp_path, [f"é{i},ü\n" for i in range(N)])
    assert plan.samples is not None and parsed_path(Path(plan.samples.file)).is_file()
    rows = plan.samples.rows()
    assert isinstance(rows, np.memmap) and rows.dtype.kind == "U"
    assert plan.samples.values(7) == ["é7", "ü"]


def test_a_copy_changed_since_is_parsed_again_never_read_from_its_kept_rows(tmp_path: Path) -> None:
    plan = _plan(tmp_path, [f"{i},{i}\n" for i in range(N)])
    assert plan.samples is not None
    copy = Path(plan.samples.file)
    kept = parsed_path(copy)
    text = copy.read_text(encoding="utf-8").replace("7,7\n", "7,70\n", 1)  # one more byte
    copy.write_text(text, encoding="utf-8")
    assert kept.exists() and not parsed_path(copy).exists()
    changed = _fresh(plan.samples)
    assert changed.values(7) == ["7", "70"] and not isinstance(changed.rows(), np.memmap)


def test_a_small_table_is_parsed(tmp_path: Path) -> None:
    plan = _plan(tmp_path, ["1,2\n", "3,4\n"])
    assert plan.samples is not None
    assert [p.name for p in Path(plan.samples.file).parent.iterdir() if p.name.startswith(".")] == []
    assert plan.samples.values(1) == ["3", "4"]
