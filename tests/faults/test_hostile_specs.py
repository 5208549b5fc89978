"""`validate` (and `run`, before writing anything) refuses hostile specs with file:line:col, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import merlin, spec_file

LABELS = """
    description: {name: labels, description: labels that are no directory name}
    env: {variables: {OUTPUT_PATH: ./out}}
    global.parameters:
      P: {values: ['../../../../ESCAPED', '..', 'a/b', ok], label: '%%'}
      Q: {values: [1, 2, 3, 4], label: 'Q.%%'}
    study:
      - name: a
        run: {cmd: "echo $(P)"}
"""

COLLIDING = """
    description: {name: collide, description: two combinations with one label}
    env: {variables: {OUTPUT_PATH: ./out}}
    global.parameters:
      P: {values: [a.b, a], label: '%%'}
      Q: {values: [c, b.c], label: '%%'}
    study:
      - name: a
        run: {cmd: "echo $(P) $(Q)"}
"""

SAMPLES = """
    description: {{name: samples, description: a samples file that does not fit}}
    env: {{variables: {{OUTPUT_PATH: ./out}}}}
    merlin:
      samples: {{file: {file}, column_labels: [X, Y]}}
    study:
      - name: a
        run: {{cmd: "echo $(X) $(Y)"}}
"""


def _refused(tmp_path: Path, spec: Path, *expected: str) -> None:
    for command in (("validate",), ("run", "--local")):
        result = merlin(command[0], str(spec), *command[1:], cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        for text in expected:
            assert text in result.stderr, result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "a workspace was written"
    assert not list(tmp_path.parent.rglob("ESCAPED"))


def test_a_label_that_makes_no_directory_of_its_own_is_refused(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, LABELS)
    _refused(tmp_path, spec,
             "spec.yaml:5:39: global.parameters.P.values[1]: the label '..' (label '%%', value '..') makes the "
             "folder name '..'")


def test_labels_with_path_characters_name_folders_inside_the_step_as_maestro_does(tmp_path: Path) -> None:
    """Maestro's make_safe_path keeps letters, digits and `-_.() ` of the labels (spaces made `_`): `a/b` is the
    folder `ab`, `../../../../ESCAPED` the folder `........ESCAPED` (Merlin 1.13's own run gives these names)."""
    spec = spec_file(tmp_path, LABELS.replace("'..', ", "").replace("[1, 2, 3, 4]", "[1, 2, 3]"))
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (step,) = (tmp_path / "out").glob("labels_*/a")
    assert sorted(p.name for p in step.iterdir()) == ["........ESCAPED", "ab", "ok"]
    assert (step / "ab" / "a_ab.out").read_text() == "a/b\n"
    assert not list(tmp_path.parent.rglob("ESCAPED"))


LONG = """
    description: {{name: long, description: labels that make file names too long}}
    env: {{variables: {{OUTPUT_PATH: ./out}}}}
    global.parameters:
      P: {{values: [{p}], label: 'P.%%'}}
      Q: {{values: [{q}], label: 'Q.%%'}}
    study:
      - name: a
        run: {{cmd: "echo $(P) $(Q)"}}
"""


@pytest.mark.parametrize(("p", "q", "where"), [
    ("x" * 300, "1", "spec.yaml:5:16: global.parameters.P.values[0]"),  # one label too long
    ("x" * 120, "y" * 125, "spec.yaml:6:16: global.parameters.Q.values[0]"),  # labels short, together too long
])
def test_labels_that_make_a_file_name_longer_than_255_bytes_are_refused(tmp_path: Path, p: str, q: str,
                                                                         where: str) -> None:
    spec = spec_file(tmp_path, LONG.format(p=p, q=q))
    _refused(tmp_path, spec, f"{where}: step 'a' would name its task files", "longer than the 255 bytes")


def test_a_file_name_of_255_bytes_runs(tmp_path: Path) -> None:
    # a_P.<p>.Q.1.err: 2 + 2 + len(p) + 4 + 4 bytes; 243 x's make it 255, the longest a file name may be
    spec = spec_file(tmp_path, LONG.format(p="x" * 243, q="1"))
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (err,) = (tmp_path / "out").rglob("a_*.err")
    assert len(err.name.encode()) == 255


def test_colliding_labels_name_both_combinations(tmp_path: Path) -> None:
    _refused(tmp_path, spec_file(tmp_path, COLLIDING),
             "spec.yaml:5:3: global.parameters: step 'a': the combinations (P='a.b', Q='c') and (P='a', Q='b.c') "
             "both get the label 'a.b.c'")


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("corrupt.npy", b"\x93NUMPY garbage", "spec.yaml:5:19: merlin.samples.file: {path}: cannot read samples"),
    ("cube.npy", None, "spec.yaml:5:19: merlin.samples.file: {path}: samples must be a 2-D table"),
    ("one.csv", b"1\n4\n", "spec.yaml:5:43: merlin.samples.column_labels: 2 column label(s) for 1"),  # more: used
    ("nan.csv", b"1,2\n3,nan\n", "{path}: 1 value(s) are not finite numbers, the first in row 2, column 2: nan"),
    ("header.csv", b"A,B\n1,2\n", "{path}: the first row ['A', 'B'] looks like a header"),
])
def test_a_samples_file_that_does_not_fit_is_refused_where_it_is_named(tmp_path: Path, name: str,
                                                                        content: bytes | None, expected: str) -> None:
    path = tmp_path / name
    if content is None:
        import numpy as np

        np.save(path, np.zeros((2, 2, 2)))
    else:
        path.write_bytes(content)
    _refused(tmp_path, spec_file(tmp_path, SAMPLES.format(file=name)), expected.format(path=path))


def test_a_header_row_naming_the_columns_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "named.csv").write_text("X,Y\n1,2\n3,4\n")
    spec = spec_file(tmp_path, SAMPLES.format(file="named.csv"))
    assert merlin("validate", str(spec), cwd=tmp_path).returncode == 0
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outs = sorted(p.read_text() for p in (tmp_path / "out").rglob("a*.out"))
    assert outs == ["1 2\n", "3 4\n"]


def test_a_failing_samples_generator_is_named_where_it_is_written(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, """
    description: {name: gen, description: a generator that fails}
    env: {variables: {OUTPUT_PATH: ./out}}
    merlin:
      samples:
        generate:
          cmd: echo oops >&2; exit 3
        file: $(MERLIN_INFO)/s.csv
        column_labels: [X]
    study:
      - name: a
        run: {cmd: "echo $(X)"}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 2 and f"{spec}:7:12: merlin.samples.generate.cmd: exited with 3: oops" in \
        result.stderr, result.stderr
    assert not list((tmp_path / "out").glob("gen_*"))  # nothing half-made is left


def test_a_generated_samples_file_that_does_not_fit_is_kept_to_look_at(tmp_path: Path) -> None:
    """The error named the copy in the workspace, which is removed with it: the file could not be looked at."""
    spec = spec_file(tmp_path, """
        description: {name: gen, description: bad generated samples}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples:
            generate: {cmd: 'printf "1,2\\\\n3,4,5\\\\n" > $(MERLIN_INFO)/samples.csv'}
            file: $(MERLIN_INFO)/samples.csv
            column_labels: [X, Y]
        study:
          - name: a
            run: {cmd: "echo $(X)"}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 2 and "line 2 has 3 value(s)" in result.stderr, result.stderr
    (kept,) = (tmp_path / "out").glob("gen_*.rejected-samples.csv")
    assert f"merlin.samples.generate: the generated file is kept as {kept} to look at" in result.stderr
    assert kept.read_text() == "1,2\n3,4,5\n"
    assert not [p for p in (tmp_path / "out").iterdir() if p.is_dir()]  # the workspace itself is removed


def test_crossed_parameters_of_billions_of_tasks_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """8 crossed parameters of 20 values: `validate` and `run --dry` grew past 4 GB, and `run` had written
    merlin_info/ already."""
    values = ", ".join(map(str, range(20)))
    params = "".join(f"      P{i}: {{values: [{values}], label: P{i}.%%, product: true}}\n" for i in range(8))
    uses = " ".join(f"$(P{i})" for i in range(8))
    spec = spec_file(tmp_path, "    description: {name: explode, description: x}\n"
                               "    env: {variables: {OUTPUT_PATH: ./out}}\n"
                               f"    global.parameters:\n{params}    study:\n"
                               f"      - name: s\n        run: {{cmd: echo {uses}}}\n")
    _refused(tmp_path, spec, "spec.yaml:3:1: global.parameters: ", "make 25,600,000,000 tasks",
             "MERLIN_MDM_MAX_TASKS=25600000000")
    result = merlin("run", str(spec), "--local", "--dry", cwd=tmp_path)
    assert result.returncode == 2 and "make 25,600,000,000 tasks" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("output", ["afile", "afile/sub", "/proc/nope", "/sys/kernel"])
def test_an_output_path_no_workspace_can_be_made_in_is_refused_at_its_line(tmp_path: Path, output: str) -> None:
    (tmp_path / "afile").write_text("x")
    spec = spec_file(tmp_path, f"""
    description: {{name: out, description: x}}
    env: {{variables: {{OUTPUT_PATH: {output}}}}}
    study:
      - name: a
        run: {{cmd: echo hi}}
    """)
    _refused(tmp_path, spec, "spec.yaml:3:32: env.variables.OUTPUT_PATH: ", "set OUTPUT_PATH to a folder")
    assert (tmp_path / "afile").read_text() == "x"


def test_a_retry_delay_of_infinity_is_refused_instead_of_a_traceback(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, """
    description: {name: inf, description: x}
    env: {variables: {OUTPUT_PATH: ./out}}
    study:
      - name: a
        run: {cmd: 'exit $(MERLIN_RETRY)', retry_delay: .inf, max_retries: 1}
    """)
    _refused(tmp_path, spec, "spec.yaml:6:53: study[0].run.retry_delay: must be a finite number of at most 86400")
