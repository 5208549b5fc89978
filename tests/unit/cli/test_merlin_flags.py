"""Merlin 1.13's flags that scripts written for Merlin pass (they exited 2, "No such option"), `--vars` naming no
variable of the spec, and Merlin's per-task `--dump`: run through the real commands on a dry-run study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from merlin_mdm.cli.main import cli

SPEC = """\
description: {name: flags, description: x}
env: {variables: {OUTPUT_PATH: ./out, N: 1}}
global.parameters:
  P: {values: [1, 2], label: P.%%}
study:
  - name: sim
    description: s
    run: {cmd: "echo $(P) $(N)", restart: "echo again", task_queue: simq}
  - name: post
    description: p
    run: {cmd: "echo done", depends: [sim_*], task_queue: postq}
merlin:
  resources:
    workers:
      simworker: {steps: [sim]}
      postworker: {steps: [post]}
"""
COLUMNS = ["time_of_status", "step_name", "step_workspace", "status", "return_code", "elapsed_time", "run_time",
           "restarts", "cmd_parameters", "restart_parameters"]


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SPEC, encoding="utf-8")
    done = _cli("run", "s.yaml", "--dry", "--local", "--no-errors")  # Merlin's flag for flux-less dry runs
    assert done.exit_code == 0, done.output
    (found,) = (tmp_path / "out").glob("flags_*")
    (found / "sim" / "P.1" / "MERLIN_FINISHED").touch()
    return found


def test_vars_naming_no_variable_is_refused_by_run(ws: Path) -> None:
    refused = _cli("run", "s.yaml", "--dry", "--local", "--vars", "NN=2")
    assert refused.exit_code == 2
    assert "Error: --vars NN=2: NN is no variable or label of s.yaml and no $(...) it uses (did you mean 'N'?); " \
           "its env.variables and env.labels: OUTPUT_PATH, N." in refused.output


def test_status_dump_csv_is_merlins_one_row_per_task(ws: Path, tmp_path: Path) -> None:
    out = _cli("status", str(ws), "--dump", "s.csv")
    assert out.exit_code == 0 and out.output == f"wrote the status of 3 task(s) of {ws.name} to s.csv\n"
    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS
    assert [[r[c] for c in COLUMNS[1:]] for r in rows] == [
        ["sim_P.1", "sim/P.1", "FINISHED", "MERLIN_SUCCESS", "--:--:--", "--:--:--", "", "P:1", "-------"],
        ["sim_P.2", "sim/P.2", "DRY_RUN", "", "--:--:--", "--:--:--", "", "P:2", "-------"],  # Merlin's word
        ["post", "post", "DRY_RUN", "", "--:--:--", "--:--:--", "", "-------", "-------"]]


def test_status_dump_json_is_merlins_tree(ws: Path, tmp_path: Path) -> None:
    assert _cli("status", str(ws), "--dump", "s.json").exit_code == 0
    (tree,) = json.loads((tmp_path / "s.json").read_text(encoding="utf-8")).values()
    assert tree["sim_P.2"] == {"parameters": {"cmd": {"P": "2"}, "restart": None},
                               "sim/P.2": {"status": "DRY_RUN", "return_code": "", "elapsed_time": "--:--:--",
                                           "run_time": "--:--:--", "restarts": None}}
    assert list(tree) == ["sim_P.1", "sim_P.2", "post"]
    assert _cli("status", str(ws), "--dump", "s.txt").exit_code == 2


def test_status_output_path_and_no_prompts(ws: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "out" / ws.name).rename(moved / ws.name)
    assert _cli("status", "s.yaml").exit_code == 2  # none under OUTPUT_PATH any more
    found = _cli("status", "s.yaml", "-o", str(moved), "--no-prompts", "--json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)["workspace"] == str(ws)  # the plan names where it was made


def test_detailed_status_filters_by_task_queue_and_worker(ws: Path) -> None:
    def shown(*args: str) -> list[str]:
        out = _cli("detailed-status", str(ws), *args)
        assert out.exit_code == 0, out.output
        return [line.split(":")[0] for line in out.output.splitlines()]

    assert shown("--task-queues", "postq") == ["post"]
    assert shown("--task-queues", "postq", "--steps", "sim") == ["sim_P.1", "sim_P.2", "post"]  # Merlin: union
    assert shown("--workers", "simworker") == ["sim_P.1", "sim_P.2"]
    assert shown("--task-status", "FINISHED") == ["sim_P.1"]
    assert shown("--workers", "postworker", "--task-status", "FINISHED") == ["sim_P.1", "post"]  # Merlin ORs them
    assert shown("--disable-pager", "--disable-theme", "--layout", "table", "--no-prompts", "-o", "x") == \
        ["sim_P.1", "sim_P.2", "post"]
    bad = _cli("detailed-status", str(ws), "--workers", "simwork")
    assert bad.exit_code == 2 and "no worker group(s) simwork in this study (worker groups: simworker, " \
                                  "postworker)" in bad.output
    bad = _cli("detailed-status", str(ws), "--task-queues", "nope")
    assert bad.exit_code == 2 and "(task queues: simq, postq)" in bad.output


def test_detailed_status_dump_is_merlins_format(ws: Path, tmp_path: Path) -> None:
    out = _cli("detailed-status", str(ws), "--workers", "postworker", "--dump", "d.csv")
    assert out.exit_code == 0 and out.output == "wrote 1 task row(s) to d.csv\n"
    with open(tmp_path / "d.csv", newline="", encoding="utf-8") as fh:
        (row,) = csv.DictReader(fh)
    assert (list(row), row["step_name"], row["status"]) == (COLUMNS, "post", "DRY_RUN")


def test_status_json_counts_a_dry_runs_tasks_as_the_table_does(ws: Path) -> None:
    out = _cli("status", str(ws), "--json")
    assert out.exit_code == 0, out.output
    counts = {s["step"]: s["counts"] for s in json.loads(out.output)["steps"]}
    # nothing was queued: every task the store counts is dry_run (the table's word and Merlin's), none queued
    assert counts["sim"]["dry_run"] == 2 and counts["post"]["dry_run"] == 1
    assert counts["sim"]["queued"] == counts["post"]["queued"] == 0
    table = _cli("status", str(ws))
    assert "dry run" in table.output.splitlines()[3] and " queued" not in table.output
