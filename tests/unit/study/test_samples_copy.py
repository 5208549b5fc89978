"""The samples of a study in its workspace: `--samplesfile s1.csv` is copied to `merlin_info/s1.csv` (Merlin's
name), and a file wider than `column_labels` gives its first columns to the labels, as in Merlin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from merlin_mdm.backends.execution import task_tokens
from merlin_mdm.spec import load_spec_text, with_samples_file
from merlin_mdm.study.layout import Workspace
from merlin_mdm.study.workspace import create_workspace

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


def _workspace(tmp_path: Path, given: Path | None) -> Workspace:
    (tmp_path / "samples.csv").write_text("1,2\n", encoding="utf-8")
    transform = (lambda spec: with_samples_file(spec, given)) if given is not None else None
    loaded = load_spec_text(SPEC, tmp_path / "spec.yaml", transform=transform)
    ws, _ = create_workspace(loaded, given)
    return ws


def test_a_samplesfile_keeps_its_own_name_in_merlin_info(tmp_path: Path) -> None:
    given = tmp_path / "s1.csv"
    given.write_text("5,6\n7,8\n", encoding="utf-8")
    ws = _workspace(tmp_path, given)
    assert (ws.info / "s1.csv").read_text(encoding="utf-8") == "5,6\n7,8\n"
    assert not (ws.info / "samples.csv").exists()
    plan = ws.load_plan()
    assert plan.samples is not None and plan.samples.file == str(ws.info / "s1.csv")
    assert plan.samples.rows().tolist() == [["5", "6"], ["7", "8"]]


def test_the_specs_own_samples_file_keeps_its_name_too(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, None)
    assert (ws.info / "samples.csv").read_text(encoding="utf-8") == "1,2\n"


def test_a_workspace_of_before_still_finds_its_samples(tmp_path: Path) -> None:
    """Before, the copy was always merlin_info/samples.<suffix>; the plan names the copy, so it is still read."""
    given = tmp_path / "s1.csv"
    given.write_text("5,6\n", encoding="utf-8")
    ws = _workspace(tmp_path, given)
    (ws.info / "s1.csv").rename(ws.info / "samples.csv")
    data = json.loads(ws.plan_path.read_text(encoding="utf-8"))
    data["samples"]["file"] = str(ws.info / "samples.csv")
    ws.plan_path.write_text(json.dumps(data), encoding="utf-8")
    samples = ws.load_plan().samples
    assert samples is not None and samples.rows().tolist() == [["5", "6"]]


def test_extra_columns_are_left_out_of_the_tasks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    given = tmp_path / "wide.csv"
    given.write_text("1,2,extra,more\n3,4,x,y\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="merlin_mdm.study.samples"):
        ws = _workspace(tmp_path, given)
    assert "columns 3-4 ignored" in caplog.text
    plan = ws.load_plan()
    tokens = task_tokens(plan, 1, ws.root / "a" / "1")
    assert (tokens["P"], tokens["Q"], tokens["MERLIN_SAMPLE_VECTOR"]) == ("3", "4", "3 4")
