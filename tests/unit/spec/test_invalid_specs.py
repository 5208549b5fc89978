"""Every bad spec under tests/data/specs/invalid/ fails with exactly the messages in its .expected file.

Each ``NAME.yaml`` is paired with ``NAME.expected``: one line per reported issue, in the order reported,
as ``NAME.yaml:line:col: yaml.path: message``. ``<SPECDIR>`` stands for the folder holding the spec.
They are loaded in strict mode (`validate --strict`), so warnings count as errors too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from merlin_mdm.cli.main import cli, main
from merlin_mdm.errors import SpecError, SpecIssue
from merlin_mdm.spec import load_spec, load_spec_text

INVALID = Path(__file__).resolve().parents[2] / "data" / "specs" / "invalid"
CASES = sorted(INVALID.glob("*.yaml"))


def _render(issue: SpecIssue) -> str:
    """An issue as the user sees it, with the file named by its basename and the folder as <SPECDIR>."""
    message = issue.message.replace(str(INVALID), "<SPECDIR>")
    return str(dataclasses.replace(issue, file=Path(issue.file).name, message=message))


def test_every_bad_spec_has_an_expected_file() -> None:
    assert len(CASES) >= 30
    missing = [case.name for case in CASES if not case.with_suffix(".expected").exists()]
    orphans = [e.name for e in INVALID.glob("*.expected") if not e.with_suffix(".yaml").exists()]
    assert not missing and not orphans


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_spec_reports_expected_issues(case: Path) -> None:
    expected = case.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    with pytest.raises(SpecError) as info:
        load_spec(case, strict=True)
    assert [_render(issue) for issue in info.value.issues] == expected


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_issues_are_sorted_by_position(case: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(case, strict=True)
    positions = [(i.line, i.column) for i in info.value.issues]
    assert positions == sorted(positions)
    assert all(issue.line > 0 and issue.column > 0 for issue in info.value.issues)  # every issue is located


def test_many_errors_are_all_reported_at_once() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(INVALID / "many_errors.yaml", strict=True)
    paths = [issue.path for issue in info.value.issues]
    assert paths == [
        "batch.type", "global.parameters.LR.label", "global.parameters.SEED", "study[0].run.cmd",
        "study[0].run.depends", "study[0].run.taskqueue", "study[1].name",
    ]  # fmt: skip
    assert str(info.value).startswith("7 problems in the spec:\n  ")


def test_missing_spec_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_unreadable_spec_bytes_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(path)


@pytest.mark.parametrize("text", [
    "description: [\n", "- 1\n- 2\n", "\t- tab\n", "a: b: c\n", "? [1, 2]\n: x\n", "!!python/object:os.system x\n",
    "description: {name: x, description: y}\nstudy: [{name: a, run: {cmd: x, depends: [[a]]}}]\n",
    "description: {name: x, description: y}\nstudy: [{name: a, run: null}]\n",
    "description: {name: x, description: y}\nstudy: [{name: a, run: {cmd: {x: 1}}}]\n",
    "description: {name: x, description: y}\nglobal.parameters: [1]\nstudy: [{name: a, run: {cmd: x}}]\n",
    "description: {name: x, description: y}\nmerlin: {samples: [1], resources: {workers: [a]}}\n"
    "study: [{name: a, run: {cmd: x}}]\n",
    "description: {name: x, description: y}\nenv: {variables: {A: [1]}, dependencies: {paths: {name: a}}}\n"
    "study: [{name: a, run: {cmd: x}}]\n",
])  # fmt: skip
def test_odd_yaml_is_a_spec_error_not_a_traceback(text: str) -> None:
    with pytest.raises(SpecError):
        load_spec_text(text, "odd.yaml")


def test_cli_validate_prints_every_error_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--strict", str(INVALID / "many_errors.yaml")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: 7 problems in the spec:")
    assert err.count("many_errors.yaml:") == 7
    assert "Traceback" not in err


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_cli_validate_never_tracebacks(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--strict", str(case)])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("Error: ")


def test_cli_group_renders_spec_errors_with_exit_code_2() -> None:
    # The click group renders a MerlinMdmError itself, so in-process callers (CliRunner) see the real exit code.
    result = CliRunner().invoke(cli, ["validate", str(INVALID / "cycle.yaml")])
    assert result.exit_code == 2
    assert result.output.startswith("Error: ")
    assert "dependency cycle: a -> b -> c -> a" in result.output


def test_unknown_tokens_are_warnings_without_strict(capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_spec(INVALID / "undefined_tokens.yaml")
    assert [w.path for w in loaded.warnings] == [
        "env.variables.DATA", "env.labels.LOG", "study[0].run.cmd", "study[0].run.restart"]
    with pytest.raises(SystemExit) as info:
        main(["validate", str(INVALID / "undefined_tokens.yaml")])
    assert info.value.code == 0
    err = capsys.readouterr().err
    assert "warning: $(SEEED) is not a defined token (did you mean 'SEED'?)" in err


@pytest.mark.timeout(120)  # the old code took 106 s for 100,000 brackets: fail rather than wait
@pytest.mark.parametrize("loader", ["libyaml", "pure Python"])
def test_nesting_past_the_parser_s_limit_is_refused_promptly(loader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outside probe's 200 KB spec of nested brackets took 106 s to refuse: after libyaml's error the pure-Python
    parser was run for a clearer message, and it is quadratic in the nesting; without libyaml it recursed."""
    import yaml

    from merlin_mdm.spec import loader as spec_loader

    if loader == "pure Python":
        body = {k: v for k, v in vars(spec_loader._MarkingLoader).items() if k not in ("__dict__", "__weakref__")}
        monkeypatch.setattr(spec_loader, "_MarkingLoader", type("PureMarking", (yaml.SafeLoader,), body))
    text = "description: {name: d, description: x}\nstudy: [{name: a, run: {cmd: echo}}]\nuser: "
    with pytest.raises(SpecError, match="exceeded maximum nesting depth"):
        load_spec_text(text + "[" * 100_000 + "]" * 100_000 + "\n", "deep.yaml")
