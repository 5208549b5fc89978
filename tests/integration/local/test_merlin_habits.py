"""A Merlin user's command-line habits: `--vars A=1 B=2`, `restart WS --local`, `status --dump`, `-lvl LEVEL`,
a status table that fits 80 columns, and restart by done-marker."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from merlin_mdm.cli.main import spread_vars

from .conftest import CLI, counts, merlin, status_json, workspace_of

SPEC = """
    description: {name: habits, description: habits}
    env: {variables: {OUTPUT_PATH: ./out, A: a, B: b}}
    global.parameters:
      I: {values: [1, 2, 3], label: I.%%}
    study:
      - name: a_step_with_a_rather_long_name_indeed
        run: {cmd: "echo $(A) $(B) $(I) > v.txt"}
      - name: gather
        run: {cmd: "sleep 0.3; cat $(a_step_with_a_rather_long_name_indeed.workspace)/*/v.txt > all.txt",
              depends: [a_step_with_a_rather_long_name_indeed_*]}
"""


def test_vars_space_separated_as_in_merlin() -> None:
    assert spread_vars(["run", "s.yaml", "--vars", "A=1", "B=2", "--local"]) == \
        ["run", "s.yaml", "--vars", "A=1", "--vars", "B=2", "--local"]
    assert spread_vars(["run", "--vars", "A=1", "s.yaml"]) == ["run", "--vars", "A=1", "s.yaml"]
    assert spread_vars(["run", "s.yaml", "B=2"]) == ["run", "s.yaml", "B=2"]


def test_merlins_top_level_flags(tmp_path: Path) -> None:
    assert merlin("-v", cwd=tmp_path).stdout.startswith("merlin-mdm, version ")
    for level in (["-lvl", "DEBUG"], ["-l", "error"], ["--level", "INFO"]):
        assert merlin(*level, "example", "list", cwd=tmp_path).returncode == 0, level
    bad = merlin("-lvl", "LOUD", "example", "list", cwd=tmp_path)
    assert bad.returncode == 2 and "LOUD" in bad.stderr


def test_naming_no_workspace_is_a_usage_error(write_spec, tmp_path: Path) -> None:
    spec = write_spec(SPEC)  # never run: it has no workspace
    for args in (["status", str(tmp_path)], ["detailed-status", str(tmp_path)], ["restart", str(tmp_path)],
                 ["status", str(spec)], ["monitor", str(tmp_path)]):
        refused = merlin(*args, cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.startswith("Error: ") and not refused.stdout, (args, refused)
        assert "workspace" in refused.stderr and "Traceback" not in refused.stderr, refused


def test_merlin_habits_end_to_end(write_spec, tmp_path: Path) -> None:
    spec = write_spec(SPEC)
    result = merlin("-lvl", "INFO", "run", str(spec), "--vars", "A=x", "B=y", "--local", cwd=tmp_path)  # Merlin's
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert (ws / "gather" / "all.txt").read_text().split("\n")[:-1] == ["x y 1", "x y 2", "x y 3"]

    dumped = merlin("status", str(ws), "--dump", str(tmp_path / "s.csv"), cwd=tmp_path)
    assert (dumped.returncode, dumped.stdout) == (0,
                                                  f"wrote the status of 4 task(s) of {ws.name} to {tmp_path}/s.csv\n")
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))  # Merlin's per-task dump
    assert [(r["step_name"], r["step_workspace"], r["status"], r["cmd_parameters"]) for r in rows] == [
        *((f"a_step_with_a_rather_long_name_indeed_I.{i}", f"a_step_with_a_rather_long_name_indeed/I.{i}",
           "FINISHED", f"I:{i}") for i in (1, 2, 3)), ("gather", "gather", "FINISHED", "-------")]
    assert merlin("status", str(ws), "--dump", str(tmp_path / "s.JSON"), cwd=tmp_path).returncode == 0  # any case
    (tree,) = json.loads((tmp_path / "s.JSON").read_text()).values()
    assert tree["gather"]["gather"]["return_code"] == "MERLIN_SUCCESS"
    assert merlin("status", str(ws), "--dump", str(tmp_path / "s.txt"), cwd=tmp_path).returncode == 2
    # a second dump to the same file is added to it, as Merlin appends (it was written over)
    assert merlin("status", str(ws), "--dump", str(tmp_path / "s.csv"), cwd=tmp_path).returncode == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 4 and lines.count(lines[0]) == 1
    time.sleep(1.1)  # the JSON dump's key is the second it was taken
    assert merlin("status", str(ws), "--dump", str(tmp_path / "s.JSON"), cwd=tmp_path).returncode == 0
    assert len(json.loads((tmp_path / "s.JSON").read_text())) == 2
    (tmp_path / "notes.csv").write_text("my own notes\n")
    refused = merlin("status", str(ws), "--dump", str(tmp_path / "notes.csv"), cwd=tmp_path)
    assert refused.returncode == 2 and "is not a status dump" in refused.stderr
    assert (tmp_path / "notes.csv").read_text() == "my own notes\n"
    # a --local study is monitored from its workspace: no broker is asked (none answers here)
    unreachable = {**os.environ, "MERLIN_MDM_CONFIG": str(tmp_path / "app.yaml")}
    (tmp_path / "app.yaml").write_text("broker: {host: 127.0.0.1, port: 9}\n")
    done = merlin("monitor", str(ws), "--sleep", "0.1", cwd=tmp_path, env=unreachable, timeout=60)
    assert (done.returncode, done.stdout) == (0, "habits: finished\n"), done

    table = merlin("status", str(ws), cwd=tmp_path, env={**os.environ, "COLUMNS": "80"}).stdout
    assert max(len(line) for line in table.splitlines()[1:]) <= 80, table  # the first line is the path
    assert " a_step_with_a_" in table and " rather_long_na" in table  # names wrap instead of being cut
    assert "restarted" not in table

    # the file system is the truth: a task whose done-marker was removed runs again on restart
    (ws / "a_step_with_a_rather_long_name_indeed" / "I.2" / "MERLIN_FINISHED").unlink()
    (ws / "a_step_with_a_rather_long_name_indeed" / "I.2" / "v.txt").unlink()
    said = status_json(ws)  # the store's counts, and the disagreement with the disk said (status said finished)
    assert said["state"] == "finished" and said["message"] == (
        f"1 task(s) counted finished have no done-marker (MERLIN_FINISHED) on disk any more (deleted, or purged "
        f"from a scratch file system): `merlin-mdm restart {ws}` runs them again"), said
    result = merlin("restart", str(ws), "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (ws / "a_step_with_a_rather_long_name_indeed" / "I.2" / "v.txt").read_text() == "x y 2\n"
    assert (ws / "a_step_with_a_rather_long_name_indeed" / "I.1" / "a_step_with_a_rather_long_name_indeed_I.1.out"
            ).read_text() == ""  # ran once only
    assert counts(ws) == {"a_step_with_a_rather_long_name_indeed": {"finished": 3}, "gather": {"finished": 1}}
    assert status_json(ws)["message"] == "", status_json(ws)

    # a copy names the original's folders in its plan and commands: restarting it would run there, so it is refused
    copy = tmp_path / "copy"
    shutil.copytree(ws, copy, symlinks=True)
    (copy / "a_step_with_a_rather_long_name_indeed" / "I.3" / "MERLIN_FINISHED").unlink()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ws.rglob("*") if p.is_file())
    for args in (["restart", str(copy), "--local"], ["detailed-status", str(copy)]):
        refused = merlin(*args, cwd=tmp_path)
        assert refused.returncode == 1 and f"was made as {ws}" in refused.stderr, refused
    assert not (copy / "a_step_with_a_rather_long_name_indeed" / "I.3" / "MERLIN_FINISHED").exists()
    copied = json.loads(merlin("status", str(copy), "--json", cwd=tmp_path).stdout)  # shown, saying what it is
    assert copied["message"].startswith(f"this folder is a copy of {ws} (or was moved)"), copied
    assert "copy" not in json.loads(merlin("status", str(ws), "--json", cwd=tmp_path).stdout)["message"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ws.rglob("*") if p.is_file()) == before


def test_dry_run_prints_the_plan_and_needs_no_broker(write_spec, tmp_path: Path) -> None:
    spec = write_spec(SPEC)
    for local in (("--local",), ()):  # without --local too: a dry run never touches Redis
        result = merlin("run", str(spec), "--dry", *local, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "study habits: 4 step instance(s), 4 task(s)" in result.stdout
        assert "  gather: 1 instance(s) x 1 task(s) = 1; after a_step_with_a_rather_long_name_indeed" in result.stdout
        ws = workspace_of(result)
        status = json.loads(merlin("status", str(ws), "--json", cwd=tmp_path).stdout)
        assert status["name"] == "habits" and status["state"] == "dry_run"  # as Merlin: it was `created`
        assert not list(ws.glob("*/*/v.txt"))
    # Merlin's DRY_RUN task state: listed, selected, dumped; `monitor` ends at once (it waited forever)
    listed = merlin("detailed-status", str(ws), "--task-status", "DRY_RUN", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.count(": dry_run ") == 4, listed
    assert merlin("status", str(ws), "--dump", str(tmp_path / "d.csv"), cwd=tmp_path).returncode == 0
    assert [row["status"] for row in csv.DictReader((tmp_path / "d.csv").open())] == ["DRY_RUN"] * 4
    assert merlin("monitor", str(ws), cwd=tmp_path, timeout=30).returncode == 0
    result = merlin("restart", str(ws), cwd=tmp_path)  # the dry workspace runs here
    assert result.returncode == 0, result.stderr
    assert counts(ws) == {"a_step_with_a_rather_long_name_indeed": {"finished": 3}, "gather": {"finished": 1}}


def test_dag_prints_dot_and_mermaid(write_spec, tmp_path: Path) -> None:
    spec = write_spec(SPEC)
    result = merlin("dag", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"a_step_with_a_rather_long_name_indeed" -> "gather" [style=dashed, label="all"];' in result.stdout
    assert "flowchart TD" in result.stdout and "s0 -. all .-> s1" in result.stdout
    assert merlin("dag", str(spec), "-o", str(tmp_path / "g.mmd"), cwd=tmp_path).returncode == 0
    assert (tmp_path / "g.mmd").read_text().startswith("flowchart TD\n")
    result = merlin("dag", str(spec), "-o", str(tmp_path / "g.svg"), cwd=tmp_path)
    if result.returncode == 0:  # Graphviz installed
        assert (tmp_path / "g.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    else:
        assert result.returncode == 1 and "Graphviz's `dot` is not installed" in result.stderr


def test_detailed_status_filters_and_dumps(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: detail, description: detail}
        env: {variables: {OUTPUT_PATH: ./out}}
        global.parameters:
          I: {values: [1, 2, 3, 4], label: I.%%}
        study:
          - name: work
            run: {cmd: "[ $(I) -ne 2 ] || exit $(MERLIN_SOFT_FAIL); [ $(I) -ne 4 ] || exit 7"}
          - name: after
            run: {cmd: "true", depends: [work_*]}
    """)
    ws = workspace_of(merlin("run", str(spec), "--local", cwd=tmp_path))
    # a code Merlin has no name for is a soft fail there, shown here with its number, and selected by either
    for code in ("7", " 7 "):
        out = merlin("detailed-status", str(ws), "--return-code", code, cwd=tmp_path)
        assert out.stdout == f"work_I.4: failed MERLIN_SOFT_FAIL (exit 7) {ws}/work/I.4\n", (code, out)
    out = merlin("detailed-status", str(ws), "--return-code", "101", cwd=tmp_path)
    assert out.stdout == f"work_I.2: failed MERLIN_SOFT_FAIL {ws}/work/I.2\n"
    out = merlin("detailed-status", str(ws), "--return-code", "SOFT_FAIL", cwd=tmp_path)
    assert out.stdout == (f"work_I.2: failed MERLIN_SOFT_FAIL {ws}/work/I.2\n"
                          f"work_I.4: failed MERLIN_SOFT_FAIL (exit 7) {ws}/work/I.4\n")  # as Merlin lists both
    out = merlin("detailed-status", str(ws), "--return-code", "UNRECOGNIZED", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == "no task matches\n"
    out = merlin("detailed-status", str(ws), "--steps", "wrok", cwd=tmp_path)
    assert out.returncode == 2 and "no step(s) wrok in this study (steps: work, after)" in out.stderr, out
    out = merlin("detailed-status", str(ws), "--return-code", "bogus", cwd=tmp_path)
    assert out.returncode == 2 and "SOFT_FAIL" in out.stderr and not out.stdout, out
    out = merlin("detailed-status", str(ws), "--task-status", "FAILED", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (f"work_I.2: failed MERLIN_SOFT_FAIL {ws}/work/I.2\n"
                          f"work_I.4: failed MERLIN_SOFT_FAIL (exit 7) {ws}/work/I.4\n")
    out = merlin("detailed-status", str(ws), "--return-code", "0", "--steps", "work", cwd=tmp_path)
    assert out.stdout.count(": finished MERLIN_SUCCESS ") == 2, out.stdout  # a number selects by exit code: 0 too
    # Merlin ORs --task-status, --return-code and --workers: a task matching either is listed
    out = merlin("detailed-status", str(ws), "--task-status", "FAILED", "--return-code", "SUCCESS", "--steps", "work",
                 cwd=tmp_path)
    assert out.stdout.count(": failed ") == 2 and out.stdout.count(": finished MERLIN_SUCCESS ") == 2, out.stdout
    # the dump holds Merlin's return code, the exit code is not part of it
    out = merlin("detailed-status", str(ws), "--return-code", "7", "--dump", str(tmp_path / "seven.csv"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (row,) = list(csv.DictReader((tmp_path / "seven.csv").open()))
    assert row["step_name"] == "work_I.4" and row["return_code"] == "MERLIN_SOFT_FAIL", row
    out = merlin("detailed-status", str(ws), "--return-code", "SUCCESS", "--steps", "work", "--max-tasks", "1",
                 "--dump", str(tmp_path / "d.json"), cwd=tmp_path)
    assert out.stdout == f"wrote 1 task row(s) to {tmp_path}/d.json\n"  # Merlin's --dump writes instead of printing
    (tree,) = json.loads((tmp_path / "d.json").read_text()).values()  # Merlin's {time: {step: ...}}
    assert list(tree) == ["work_I.1"]
    out = merlin("detailed-status", str(ws), "--dump", str(tmp_path / "d.csv"), cwd=tmp_path)
    assert [r["status"] for r in csv.DictReader((tmp_path / "d.csv").open())] == \
        ["FINISHED", "FAILED", "FINISHED", "FAILED", "FINISHED"]


def test_the_bundled_examples_run_in_a_folder_with_spaces(tmp_path: Path) -> None:
    where = tmp_path / "my studies" / "ü"
    where.mkdir(parents=True)
    for name in ("hello_samples", "feature_demo"):
        assert merlin("example", name, cwd=where).returncode == 0
        result = merlin("run", str(next((where / name).glob("*.yaml"))), "--local", cwd=where)
        assert result.returncode == 0, result.stderr
        ws = workspace_of(result)
        if name == "feature_demo":  # its collector counts the outputs it finds: none if a path was split
            assert int((ws / "summarize" / "n_outputs.txt").read_text()) > 0


def test_status_of_a_spec_shows_the_workspace_that_spec_made(write_spec, tmp_path: Path) -> None:
    one = write_spec(SPEC)
    other = tmp_path / "other.yaml"  # the same study name and OUTPUT_PATH, other steps
    other.write_text(one.read_text().replace("gather", "collect"))
    first = workspace_of(merlin("run", str(one), "--local", cwd=tmp_path))
    second = workspace_of(merlin("run", str(other), "--local", cwd=tmp_path))
    assert first != second
    for spec, steps in ((one, "gather"), (other, "collect")):
        snap = json.loads(merlin("status", str(spec), "--json", cwd=tmp_path).stdout)
        assert snap["steps"][-1]["step"] == steps, snap


def test_detailed_status_names_every_failed_task_not_only_the_first_twenty(write_spec, tmp_path: Path) -> None:
    """`status` shows the first 20 failures of a step; detailed-status called the 21st failed task unknown."""
    values = ", ".join(str(i) for i in range(30))
    spec = write_spec("""
        description: {name: many, description: many failures}
        env: {variables: {OUTPUT_PATH: ./out}}
        global.parameters:
          I: {values: [VALUES], label: I.%%}
        study:
          - name: work
            run: {cmd: "echo $(I); exit 1"}
    """.replace("VALUES", values))
    ws = workspace_of(merlin("run", str(spec), "--local", cwd=tmp_path))
    out = merlin("detailed-status", str(ws), "--task-status", "FAILED", cwd=tmp_path)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 30, out.stdout
    assert all(" failed MERLIN_SOFT_FAIL (exit 1) " in line for line in out.stdout.splitlines())
    assert "unknown" not in merlin("detailed-status", str(ws), cwd=tmp_path).stdout


@pytest.mark.parametrize(("name", "folder"), [("my study", "my_study"), ("v:2", "v:2"), ("a(b)[1]*", "a(b)[1]*")])
def test_a_study_name_merlin_takes_makes_its_folder_as_merlin_does(write_spec, tmp_path: Path, name: str,
                                                                    folder: str) -> None:
    """Merlin 1.13 runs these (spaces become `_`); merlin-mdm refused every name but letters, digits, -_."""
    spec = write_spec(f"""
        description: {{name: "{name}", description: d}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        study:
          - {{name: a, description: a, run: {{cmd: "echo hi > o"}}}}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert ws.name.startswith(f"{folder}_") and (ws / "a" / "o").read_text() == "hi\n"
    status = json.loads(merlin("status", str(spec), "--json", cwd=tmp_path).stdout)  # found by its spec
    assert (status["name"], status["workspace"], status["state"]) == (name, str(ws), "finished"), status


def test_the_samples_command_is_kept_as_merlin_keeps_it(write_spec, tmp_path: Path) -> None:
    """merlin_info/cmd.sh is the generate command as written: Merlin adds no newline to a one-line one."""
    spec = write_spec("""
        description: {name: gen, description: d}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples:
            generate: {cmd: "python3 -c \\"import numpy as np; np.save('s.npy', np.arange(2).reshape(-1, 1))\\""}
            file: $(MERLIN_INFO)/s.npy
            column_labels: [V]
        study:
          - {name: a, description: a, run: {cmd: "echo $(V)"}}
    """)
    result = merlin("run", str(spec), "--dry", "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "generating the samples (merlin.samples.generate" in result.stderr  # said as it starts: it may be long
    kept = (workspace_of(result) / "merlin_info" / "cmd.sh").read_text()
    assert kept == "python3 -c \"import numpy as np; np.save('s.npy', np.arange(2).reshape(-1, 1))\"", kept


COLUMNS = """
    description: {name: cl, description: sample columns named as Merlin takes them}
    env: {variables: {OUTPUT_PATH: ./out, USE: "$(my col)"}}
    merlin:
      samples:
        generate: {cmd: "printf '1,2,3\\\\n4,5,6\\\\n' > $(MERLIN_INFO)/samples.csv"}
        file: $(MERLIN_INFO)/samples.csv
        column_labels: [X, my col, 1st]
    study:
      - name: sim
        run: {cmd: 'echo "x=$(X) col=$(my col) first=$(1st)" > out.txt'}
      - name: viavar
        run: {cmd: 'echo "$(USE)" > v.txt'}
      - name: once
        run: {cmd: "echo once > o.txt"}
"""


def test_sample_columns_named_as_merlin_takes_them(write_spec, tmp_path: Path) -> None:
    """`my col` and `1st` were refused; Merlin 1.13 finds and fills `$(my col)` as text, per sample (its dry run of
    this spec writes the same scripts, checked by hand in the forty-fourth session)."""
    result = merlin("run", str(write_spec(COLUMNS)), "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert counts(ws) == {"sim": {"finished": 2}, "viavar": {"finished": 2}, "once": {"finished": 1}}
    assert [(ws / "sim" / s / "out.txt").read_text() for s in ("00", "01")] == \
        ["x=1 col=2 first=3\n", "x=4 col=5 first=6\n"]
    assert [(ws / "viavar" / s / "v.txt").read_text() for s in ("00", "01")] == ["2\n", "5\n"]  # through a variable
    assert (ws / "once" / "o.txt").read_text() == "once\n"


def test_a_queueing_run_with_no_broker_names_local(write_spec, tmp_path: Path) -> None:
    """A newcomer on one machine who forgot --local was told only to start a server (an outside probe)."""
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "app.yaml").write_text(f"broker: {{url: 'redis://127.0.0.1:{port}/0'}}\n", encoding="utf-8")
    env = {**os.environ, "MERLIN_MDM_CONFIG": str(tmp_path / "app.yaml")}
    result = merlin("run", str(write_spec(SPEC)), cwd=tmp_path, env=env)
    assert result.returncode != 0 and "cannot reach the broker" in result.stderr, result.stderr
    assert "or run the study on this machine without a server: add --local" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_status_of_a_running_study_whose_database_was_deleted_says_so(write_spec, tmp_path: Path) -> None:
    """It said "never started, or the database was deleted (`restart` rebuilds it)" while the runner ran, and a
    restart would be refused (an outside probe)."""
    spec = write_spec("""
        description: {name: slow, description: slow}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - {name: a, description: a, run: {cmd: "sleep 60"}}
    """)
    proc = subprocess.Popen([*CLI, "run", str(spec), "--local", "--grace", "0"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (found := list((tmp_path / "out").glob("*/merlin_info/status.db"))) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert found, "no status database"
        found[0].unlink()
        result = merlin("status", str(found[0].parent.parent), cwd=tmp_path)
        assert result.returncode != 0 and "still holds the study: its database was deleted while it runs" in \
            result.stderr, result.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_status_of_a_study_with_neither_database_nor_lock_names_no_runner(write_spec, tmp_path: Path) -> None:
    """A `run --dry` stopped while it wrote the scripts left neither: status said a runner still held the study
    (an outside probe), and no process did."""
    spec = write_spec("""
        description: {name: cut, description: cut}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - {name: a, description: a, run: {cmd: "echo a"}}
    """)
    assert merlin("run", str(spec), "--local", "--dry", cwd=tmp_path).returncode == 0
    ws = next((tmp_path / "out").glob("cut_*"))
    for name in ("status.db", "runner.lock"):
        (ws / "merlin_info" / name).unlink(missing_ok=True)
    result = merlin("status", str(ws), cwd=tmp_path)
    assert result.returncode != 0 and "no status database in" in result.stderr, result.stderr
    assert "still holds" not in result.stderr and f"`merlin-mdm restart {ws}` rebuilds it" in result.stderr
