"""A file given with --samplesfile is blamed for its own problems (not a spec line); complex samples as in Merlin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from merlin_mdm.errors import SpecError, UsageError
from merlin_mdm.spec import Spec, load_spec_text
from merlin_mdm.study.samples import checked_shape, read_samples

SPEC = """\
description: {name: s, description: x}
env: {variables: {OUTPUT_PATH: ./out}}
study:
  - name: a
    description: a
    run: {cmd: echo $(P) $(Q)}
merlin:
  samples:
    column_labels: [P, Q]
    file: samples.csv
"""


def _spec(tmp_path: Path) -> Spec:
    (tmp_path / "samples.csv").write_text("1,2\n", encoding="utf-8")
    return load_spec_text(SPEC, tmp_path / "spec.yaml").spec


def _write(path: Path, content: object) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        np.save(path, np.asarray(content), allow_pickle=True)
    return path


@pytest.mark.parametrize(("name", "content", "message"), [
    ("s.csv", "# made by hand\n\n1,2\n3,4\n5,6,7\n",
     "cannot read samples: line 5 has 3 value(s) where most lines have 2"),
    ("s.tab", "1 2\n3\n", "cannot read samples: line 2 has 1 value(s) where most lines have 2"),
    # numpy names line 2 (the second of two that differ); the odd one is the first, a quoted comma
    ("s.csv", '"1, 5",2\n3,4\n6,7\n', "cannot read samples: line 1 has 3 value(s) where most lines have 2; the CSV "
     "reader splits at every comma, inside quotes too (as Merlin's does)"),
    # a quoted comma on every row keeps the rows even: the halves would reach the tasks
    ("s.csv", '"a, b",1\n"c, d",2\n', 'row 1, column 1 holds "a, the first part of a quoted value with a comma '
     "in it: the CSV reader"),
    ("s.csv", '1,"x, y, z"\n3,"a, b, c"\n', 'row 1, column 2 holds "x, the first part'),  # closed past Q
    ("s.csv", "1,2\n3,nan\n", "1 value(s) are not finite numbers, the first in row 2, column 2: nan"),
    ("s.txt", "1,2\n", "unsupported samples file type '.txt'"),
    ("s.npy", b"garbage", "cannot read samples: not a NumPy .npy file"),
    ("s.npy", b"", "cannot read samples: the file is empty"),
    ("s.npy", np.array([{"a": 1}], dtype=object), "cannot read samples: it holds Python objects"),
])  # fmt: skip
def test_a_bad_samplesfile_is_a_usage_error_naming_it(tmp_path: Path, name: str, content: object,
                                                      message: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(UsageError) as info:
        checked_shape(_spec(tmp_path), path, f"--samplesfile {name}")
    assert str(info.value).startswith(f"--samplesfile {name}: {message}")
    assert not isinstance(info.value, SpecError)


def test_a_cut_npy_names_the_file_as_cut_short(tmp_path: Path) -> None:
    whole = _write(tmp_path / "whole.npy", np.ones((4, 2)))
    cut = _write(tmp_path / "cut.npy", whole.read_bytes()[:100])
    with pytest.raises(UsageError, match=r"^--samplesfile cut.npy: cannot read samples: the file is cut short"):
        checked_shape(_spec(tmp_path), cut, "--samplesfile cut.npy")


def test_a_samplesfile_with_fewer_columns_names_it_and_the_labels_line(tmp_path: Path) -> None:
    """Merlin would leave $(Q) unfilled in the commands: refused."""
    path = _write(tmp_path / "one.csv", "1\n")
    with pytest.raises(UsageError) as info:
        checked_shape(_spec(tmp_path), path, "--samplesfile one.csv")
    assert str(info.value) == (f"--samplesfile one.csv: 1 column(s), but merlin.samples.column_labels "
                               f"({tmp_path / 'spec.yaml'}:9:20) names 2: P, Q")


def test_more_columns_than_labels_are_used_as_merlin_uses_them(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Merlin warns and fills its labels from the first columns; merlin-mdm refused the file (exit 2)."""
    path = _write(tmp_path / "four.csv", "P,Q,R,S\n1,2,x,nan\n3,4,y,z\n")  # the extra columns are not checked
    with caplog.at_level("WARNING", logger="merlin_mdm.study.samples"):
        assert checked_shape(_spec(tmp_path), path, "--samplesfile four.csv") == (2, 4)
    assert caplog.messages == [f"--samplesfile four.csv: 4 columns, but merlin.samples.column_labels "
                               f"({tmp_path / 'spec.yaml'}:9:20) names 2 (P, Q): columns 3-4 ignored, as Merlin does"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="merlin_mdm.study.samples"):
        checked_shape(_spec(tmp_path), _write(tmp_path / "three.csv", "1,2,3\n"))
    assert caplog.messages == [f"{tmp_path / 'spec.yaml'}: merlin.samples.file {tmp_path / 'three.csv'}: 3 columns, "
                               f"but merlin.samples.column_labels ({tmp_path / 'spec.yaml'}:9:20) names 2 (P, Q): "
                               "column 3 ignored, as Merlin does"]


def test_quoted_values_without_a_comma_are_kept_as_merlin_keeps_them(tmp_path: Path) -> None:
    """Merlin's reader keeps the quotes; only a value cut in half by its comma is refused."""
    data = read_samples(_write(tmp_path / "q.csv", 'P,Q\n"a",1\n b ,2\n'), ("P", "Q"))
    assert data.tolist() == [['"a"', "1"], [" b ", "2"]]
    # a quote that is a value's own (inches) or opens one that never closes, as Merlin passes them
    path = _write(tmp_path / "inches.csv", '12",1\n"3,4\n')
    assert checked_shape(_spec(tmp_path), path, "--samplesfile inches.csv") == (2, 2)


def test_the_specs_own_samples_file_is_still_blamed_on_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.csv", "1,2\n3,4,5\n")
    with pytest.raises(SpecError) as info:
        checked_shape(_spec(tmp_path), path)
    (issue,) = info.value.issues
    assert (issue.line, issue.path) == (10, "merlin.samples.file")
    assert issue.message == f"{path}: cannot read samples: line 2 has 3 value(s) where most lines have 2"


def test_an_empty_npy_is_an_error_not_an_eof(tmp_path: Path) -> None:
    """EOFError escaped read_samples, and click turns it into "Aborted." (exit 1)."""
    with pytest.raises(SpecError, match="the file is empty"):
        read_samples(_write(tmp_path / "e.npy", b""))


def test_complex_samples_are_kept_as_merlin_keeps_them(tmp_path: Path) -> None:
    """Merlin 1.13 substitutes str() of each value: (1+2j). No ComplexWarning (warnings are errors in tests)."""
    rows = read_samples(_write(tmp_path / "c.npy", np.array([[1 + 2j, 3], [4, 5]])))
    assert [[str(v) for v in row] for row in rows] == [["(1+2j)", "(3+0j)"], ["(4+0j)", "(5+0j)"]]


def test_complex_samples_that_are_not_finite_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not finite numbers, the first in row 1, column 2"):
        read_samples(_write(tmp_path / "c.npy", np.array([[1 + 2j, complex(0, np.inf)]])))


def test_a_huge_value_is_shown_cut_in_messages(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.csv", "x" * 100_000 + ",y\n1,2\n")
    with pytest.raises(SpecError) as info:
        read_samples(path)
    message = info.value.issues[0].message
    assert "... (100000 characters)" in message and len(message) < 300


def test_a_huge_text_value_is_still_checked_as_a_number(tmp_path: Path) -> None:
    """Wide text takes another way to float (see _as_floats): its numbers must still be checked."""
    path = _write(tmp_path / "h.csv", "1." + "0" * 2000 + ",nan\n")
    with pytest.raises(SpecError, match="not finite numbers, the first in row 1, column 2: nan"):
        read_samples(path)
    assert read_samples(_write(tmp_path / "t.csv", "x" * 2000 + ",y\n")).shape == (1, 2)


def test_more_samples_than_the_task_limit_are_refused_at_the_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """10 million rows made `run --dry` write 1.49 million folders (12 GB) in two minutes before it was killed."""
    monkeypatch.setenv("MERLIN_MDM_MAX_TASKS", "4")
    path = _write(tmp_path / "s.csv", "1,2\n" * 5)
    with pytest.raises(SpecError) as info:
        checked_shape(_spec(tmp_path), path)
    (issue,) = info.value.issues
    assert (issue.line, issue.path) == (10, "merlin.samples.file")
    assert issue.message.startswith(f"{path}: its 5 samples (one task each, for every step that uses them) make 5 "
                                    "tasks, more than the 4 merlin-mdm plans: use fewer samples")
    assert "MERLIN_MDM_MAX_TASKS=5" in issue.message
    with pytest.raises(UsageError, match=r"--samplesfile s\.csv: .* make 5 tasks"):
        checked_shape(_spec(tmp_path), path, "--samplesfile s.csv")
    monkeypatch.setenv("MERLIN_MDM_MAX_TASKS", "5")
    assert checked_shape(_spec(tmp_path), path) == (5, 2)


def test_the_samples_times_the_instances_that_use_them_are_counted_before_the_plan_is_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from merlin_mdm.study.expand import StudyContext, expand
    from merlin_mdm.study.samples import SampleSet

    text = SPEC.replace("study:", "global.parameters:\n  R: {values: [1, 2, 3], label: R.%%}\nstudy:") \
        .replace("echo $(P) $(Q)", "echo $(P) $(Q) $(R)")
    (tmp_path / "samples.csv").write_text("1,2\n", encoding="utf-8")
    spec = load_spec_text(text, tmp_path / "spec.yaml").spec
    ctx = StudyContext("/w/s_1", "/w", "1", SampleSet("/w/s_1/merlin_info/samples.csv", 4, ("P", "Q")))
    assert expand(spec, ctx).total_tasks() == 12
    monkeypatch.setenv("MERLIN_MDM_MAX_TASKS", "11")
    with pytest.raises(SpecError) as info:
        expand(spec, ctx)
    (issue,) = info.value.issues
    assert (issue.line, issue.path) == (12, "merlin.samples")
    assert "times the 4 samples (step 'a' and those before) make 12 tasks, more than the 11" in issue.message


def test_a_study_refused_when_its_samples_are_read_leaves_no_folder_behind(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal comes after the workspace was made (the samples are read into it): the study folder went, but
    OUTPUT_PATH's new folders stayed, empty. Folders that existed, or hold another study, stay."""
    from merlin_mdm.spec import LoadedSpec
    from merlin_mdm.study.workspace import create_workspace

    monkeypatch.setenv("MERLIN_MDM_MAX_TASKS", "3")
    (tmp_path / "samples.csv").write_text("1,2\n" * 4, encoding="utf-8")
    text = SPEC.replace("./out", "./new/deeper/out")
    spec = load_spec_text(text, tmp_path / "spec.yaml").spec
    with pytest.raises(SpecError, match="make 4 tasks, more than the 3"):
        create_workspace(LoadedSpec(spec, (), text))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.csv"]
    (tmp_path / "new/deeper/other_study").mkdir(parents=True)
    with pytest.raises(SpecError, match="make 4 tasks"):
        create_workspace(LoadedSpec(spec, (), text))
    assert sorted(p.name for p in (tmp_path / "new/deeper").iterdir()) == ["other_study"]


def test_validate_counts_the_samples_times_the_instances_that_use_them(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from merlin_mdm.study.samples import check_samples_file

    text = SPEC.replace("study:", "global.parameters:\n  R: {values: [1, 2, 3], label: R.%%}\nstudy:") \
        .replace("echo $(P) $(Q)", "echo $(P) $(Q) $(R)") \
        .replace("merlin:", "  - name: b\n    run: {cmd: echo $(R)}\nmerlin:")
    (tmp_path / "samples.csv").write_text("1,2\n" * 4, encoding="utf-8")
    spec = load_spec_text(text, tmp_path / "spec.yaml").spec
    monkeypatch.setenv("MERLIN_MDM_MAX_TASKS", "15")
    check_samples_file(spec, {})  # a: 3 x 4 samples, b: 3
    monkeypatch.setenv("MERLIN_MDM_MAX_TASKS", "14")
    with pytest.raises(SpecError) as info:
        check_samples_file(spec, {})
    (issue,) = info.value.issues
    assert (issue.line, issue.path) == (14, "merlin.samples.file")
    assert "times the 4 samples of" in issue.message and "make 15 tasks, more than the 14" in issue.message
