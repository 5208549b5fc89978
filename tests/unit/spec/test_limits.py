"""Hostile sizes and values are refused when the spec loads, at their line, before anything is built.

An outside probe's spec crossed 8 parameters of 20 values (`product: true`: 25.6 billion combinations) and
`validate` grew past 4 GB without a word; `retry_delay: .inf` passed and `run` ended in an OverflowError.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from merlin_mdm.errors import SpecError, UsageError
from merlin_mdm.spec import Parameter, load_spec, load_spec_text
from merlin_mdm.spec.limits import (
    DEFAULT_MAX_TASKS,
    MAX_INSTANCES_ENV,
    MAX_TASKS_ENV,
    combination_count,
    max_instances,
    max_tasks,
    planned_instances,
    planned_tasks,
    step_parameters,
)
from merlin_mdm.spec.tokens import MAX_VALUE_CHARS
from merlin_mdm.study.expand import StudyContext, expand
from merlin_mdm.study.parameters import Combo, combinations


def _crossed(n: int, size: int, cmd: str) -> str:
    values = ", ".join(map(str, range(size)))
    params = "".join(f"  P{i}: {{values: [{values}], label: P{i}.%%, product: true}}\n" for i in range(n))
    return (f"description: {{name: explode, description: x}}\nglobal.parameters:\n{params}"
            f"study:\n  - name: s\n    run: {{cmd: '{cmd}'}}\n")


ALL = "echo " + " ".join(f"$(P{i})" for i in range(8))


def test_crossed_parameters_are_counted_as_a_product_without_building_them() -> None:
    spec = load_spec_text(_crossed(8, 20, "echo $(P0)"), "/s/explode.yaml").spec
    assert combination_count(spec.parameters) == 20**8
    assert combination_count(spec.parameters, frozenset({"P0", "P3"})) == 400
    assert planned_instances(spec) == 20  # the step uses one of them: Maestro expands it over that one only


def test_zipped_parameters_count_once_per_group() -> None:
    params = (Parameter("A", (1, 2, 3), "A.%%"), Parameter("B", (4, 5, 6), "B.%%"),
              Parameter("C", (7, 8), "C.%%", "C"))
    assert combination_count(params) == 6


def test_a_step_expands_over_its_own_parameters_only_never_the_full_product() -> None:
    spec = load_spec_text(_crossed(8, 20, "echo $(P0)"), "/s/explode.yaml").spec
    combos = list(combinations(spec.parameters, frozenset({"P1", "P0"})))
    assert len(combos) == 400 and combos[1].tokens() == {"P0": "0", "P0.label": "P0.0", "P1": "1", "P1.label": "P1.1"}
    assert list(combinations(spec.parameters, frozenset())) == [Combo(())]


def test_a_study_of_billions_of_tasks_is_refused_at_its_parameters() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(_crossed(8, 20, ALL), "/s/explode.yaml")
    message = str(caught.value)
    assert "/s/explode.yaml:2:1: global.parameters: " in message
    assert f"make 25,600,000,000 tasks, more than the {DEFAULT_MAX_TASKS:,}" in message
    assert f"set {MAX_TASKS_ENV}=25600000000" in message and "zip parameters" in message


def test_the_limits_are_set_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _crossed(2, 3, "echo $(P0) $(P1)")  # 9 instances, one task each
    monkeypatch.setenv(MAX_INSTANCES_ENV, "8")
    with pytest.raises(SpecError, match=f"make 9 step instances, more than the 8 .*; to plan it anyway, set "
                                        f"{MAX_INSTANCES_ENV}=9"):
        load_spec_text(text, "/s/x.yaml")
    monkeypatch.setenv(MAX_INSTANCES_ENV, "9")
    monkeypatch.setenv(MAX_TASKS_ENV, "8")
    with pytest.raises(SpecError, match=f"make 9 tasks, more than the 8 .*set {MAX_TASKS_ENV}=9"):
        load_spec_text(text, "/s/x.yaml")
    monkeypatch.setenv(MAX_TASKS_ENV, "1_000")
    assert (max_tasks(), max_instances()) == (1000, 9) and load_spec_text(text, "/s/x.yaml").spec.parameters
    monkeypatch.setenv(MAX_TASKS_ENV, "many")
    with pytest.raises(UsageError, match=f"{MAX_TASKS_ENV}='many': give the most"):
        max_tasks()


def test_a_million_step_instances_are_refused_though_fewer_than_the_tasks_limit() -> None:
    """5 crossed parameters of 20 values (3.2 million instances) also grew past 4 GB: each is in the plan."""
    with pytest.raises(SpecError, match=f"make 3,200,000 step instances, more than the 1,000,000 .*set "
                                        f"{MAX_INSTANCES_ENV}=3200000"):
        load_spec_text(_crossed(5, 20, "echo $(P0) $(P1) $(P2) $(P3) $(P4)"), "/s/x.yaml")


def test_children_and_workspace_references_count_their_parents_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _crossed(2, 3, "echo $(P0)").replace(
        "run: {cmd: 'echo $(P0)'}",
        "run: {cmd: 'echo $(P0)'}\n  - name: t\n    run: {cmd: 'echo $(P1)', depends: [s]}\n"
        "  - name: u\n    run: {cmd: 'echo', depends: [s_*]}\n"
        "  - name: v\n    run: {cmd: 'cat $(t.workspace)', depends: [u, t_*]}\n")
    spec = load_spec_text(text, "/s/x.yaml").spec
    assert planned_instances(spec) == 3 + 9 + 1 + 1  # t inherits P0 from s; a funnel and a funnelled ref do not


@pytest.mark.parametrize("steps", [
    # a `$(s.workspace)` named in a description only: no reference (the expansion reads cmd and restart)
    "  - name: t\n    description: reads $(s.workspace)\n    run: {cmd: 'echo $(P1)'}\n",
    # a reference to a grandparent behind a funnel brings its parameters back
    "  - name: u\n    run: {cmd: 'echo', depends: [s_*]}\n  - name: t\n    run: {cmd: 'cat $(s.workspace)', "
    "depends: [u]}\n",
    # a parameter reached through an env dependency's path
    "  - name: t\n    run: {cmd: 'ls $(DATA)', depends: [s]}\n",
    # a label that shadows a variable of the same name
    "  - name: t\n    run: {cmd: 'echo $(V)'}\n",
])
def test_the_count_and_the_expansion_follow_one_rule(steps: str) -> None:
    text = _crossed(2, 3, "echo $(P0)").replace("study:\n", "env:\n  variables: {V: plain}\n  labels: {V: '$(P1)'}\n"
                                                 "  dependencies:\n    paths:\n      - {name: DATA, path: '/d/$(P1)'}\n"
                                                 "study:\n") + steps
    spec = load_spec_text(text, "/s/x.yaml").spec
    plan = expand(spec, StudyContext("/ws", "/out", "00000000-000000"))
    per_step = {s.name: sum(i.step == s.name for i in plan.instances) for s in spec.steps}
    counted = step_parameters(spec)
    assert per_step == {s.name: combination_count(spec.parameters, counted[s.name]) for s in spec.steps}
    assert planned_instances(spec) == len(plan.instances)


STEP = """description: {{name: n, description: x}}
study:
  - name: s
    run:
      cmd: echo hi
      {key}: {value}
"""


@pytest.mark.parametrize(("value", "message"), [
    (".inf", "must be a finite number of at most 86400, got inf"),
    ("1.0e+300", "must be a finite number of at most 86400, got 1e+300"),
    (".nan", "must be a non-negative number, not the number nan"),
    ("-5", "must be a non-negative number, not the number -5"),
])
def test_a_retry_delay_that_is_no_finite_time_is_refused_at_its_line(value: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(f"/s/x.yaml:6:20: study[0].run.retry_delay: {message}")):
        load_spec_text(STEP.format(key="retry_delay", value=value), "/s/x.yaml")


@pytest.mark.parametrize(("value", "message"), [
    ("1.0e+300", "is more than 366 days"), (".inf", "is not a positive time"), (".nan", "is not a positive time")])
def test_an_absurd_walltime_is_refused_at_its_line(value: str, message: str) -> None:
    with pytest.raises(SpecError, match=f"/s/x.yaml:6:17: study\\[0\\].run.walltime: walltime '.*' {message}"):
        load_spec_text(STEP.format(key="walltime", value=value), "/s/x.yaml")


def test_a_long_command_without_variables_is_said_to_be_long_itself() -> None:
    text = STEP.format(key="shell", value="/bin/bash").replace("echo hi", "x" * (MAX_VALUE_CHARS + 5))
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "/s/x.yaml")
    assert f"study[0].run.cmd: is {MAX_VALUE_CHARS + 5:,} characters long as written" in str(caught.value)
    assert "fewer times" not in str(caught.value)


def test_a_byte_that_is_no_utf8_is_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"description:\n  name: a\xff\n  description: x\nstudy: []\n")
    with pytest.raises(SpecError, match=r"s.yaml:2:10: cannot read the spec: byte 0xff is not UTF-8 text; save the "
                                        r"file as UTF-8"):
        load_spec(path)


def test_a_nul_byte_is_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"description:\n  name: a\n  d\x00escription: x\nstudy: []\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "s.yaml:3:4: YAML error: the character #x0000" in str(caught.value)
    assert "position" not in str(caught.value)


OUT = """description: {{name: n, description: x}}
env:
  variables:
    OUTPUT_PATH: {path}
study:
  - name: s
    run: {{cmd: echo hi}}
"""


@pytest.mark.parametrize(("path", "message"), [
    ("afile", "{tmp}/afile is a file, not a folder"),
    ("afile/sub", "{tmp}/afile/sub is under {tmp}/afile, which is a file"),
    ("/proc/nope", "/proc/nope is in the kernel's /proc file system"),
    ("/sys/kernel", "/sys/kernel is in the kernel's /sys file system"),
    ("~nosuchuser9/x", "~nosuchuser9/x: no home folder for its ~user"),  # expanduser raised RuntimeError
    ("loop/x", "{tmp}/loop/x cannot be resolved"),  # a symlink loop: resolve() raised RuntimeError
    # validate passed it, run failed ENAMETOOLONG
    ("sub/" + "d" * 300 + "/x", "{tmp}/sub/" + "d" * 300 + "/x: its folder name 'dddd"),
])
def test_an_output_path_no_workspace_can_be_made_in_is_refused_at_its_line(tmp_path: Path, path: str,
                                                                           message: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    spec = tmp_path / "s.yaml"
    spec.write_text(OUT.format(path=path))
    with pytest.raises(SpecError) as caught:
        load_spec(spec, to_run=True)
    assert f"s.yaml:4:18: env.variables.OUTPUT_PATH: {message.format(tmp=tmp_path)}" in str(caught.value)
    assert "set OUTPUT_PATH to a folder you can write" in str(caught.value)
    assert load_spec(spec).spec.env.variables  # a command that only finds or reads a study does not mind


def test_an_output_path_given_by_vars_is_named_as_given(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(OUT.format(path="./out"))
    assert load_spec(spec).spec.env.variables
    with pytest.raises(SpecError, match="--vars OUTPUT_PATH=/proc/x: /proc/x is in the kernel's /proc"):
        load_spec(spec, {"OUTPUT_PATH": "/proc/x"}, to_run=True)


def test_a_zipped_group_counts_the_distinct_values_a_step_uses() -> None:
    """A `--pgen` generator's parameters are one zipped group holding the whole cross product (1001 x 1000 values
    each): a step using one of them has 1001 instances, counted as 1,002,000 and refused; zipped duplicates
    ([1, 1, 2, 2] with [a, b, a, b]) were counted twice too."""
    crossed = [(a, b) for a in range(1001) for b in range(1000)]
    params = (Parameter("X", tuple(a for a, _ in crossed), "X.%%"),
              Parameter("Y", tuple(b for _, b in crossed), "Y.%%"))
    assert combination_count(params, frozenset({"X"})) == 1001
    assert combination_count(params, frozenset({"Y"})) == 1000
    assert combination_count(params, frozenset({"X", "Y"})) == 1001 * 1000
    zipped = (Parameter("P1", (1, 1, 2, 2), "P1.%%"), Parameter("P2", ("a", "b", "a", "b"), "P2.%%"))
    assert combination_count(zipped, frozenset({"P1"})) == 2 == len(set(combinations(zipped, frozenset({"P1"}))))


def test_a_column_that_is_no_token_name_makes_its_steps_run_per_sample() -> None:
    text = """
description: {name: c, description: c}
env: {variables: {USE: "$(my col)"}}
merlin:
  samples: {generate: {cmd: "true"}, file: s.csv, column_labels: [my col, 1st]}
study:
  - {name: a, description: a, run: {cmd: "echo $(1st)"}}
  - {name: b, description: b, run: {cmd: "echo $(USE)"}}
  - {name: c, description: c, run: {cmd: "echo once"}}
"""
    assert planned_tasks(load_spec_text(text, "/s/c.yaml").spec, 10) == 21


@pytest.mark.parametrize(("text", "seconds"), [
    ("01:30:00", 5400.0), ("90", 90.0), ("0", None), ("", None),
    ("1-00:00:00", 86400.0), ("2-12", 216000.0), ("1-2:3", 93780.0),  # Slurm's D-HH[:MM[:SS]], typed by its users
    ("1:02:03:04", 93784.0),  # Merlin's DD:HH:MM:SS
])
def test_walltimes_in_the_forms_merlin_and_slurm_users_write(text: str, seconds: float | None) -> None:
    from merlin_mdm.spec.hazards import parse_walltime

    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("text", ["1-", "1-1:2:3:4", "-5", "x", "1:2:3:4:5", "400-0", "a-1"])
def test_walltimes_that_are_no_time_are_refused(text: str) -> None:
    from merlin_mdm.spec.hazards import parse_walltime

    with pytest.raises(ValueError):
        parse_walltime(text)
