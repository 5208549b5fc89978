"""End-to-end runs of studies with the embedded local runner: files, exit codes, ordering, restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from .conftest import CLI, counts, merlin, status_json, workspace_of


def test_hello_example_produces_every_file(tmp_path: Path) -> None:
    assert merlin("example", "hello", cwd=tmp_path).returncode == 0
    result = merlin("run", "hello/hello.yaml", "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert ws.parent == tmp_path / "hello" / "studies"
    info = ws / "merlin_info"
    for name in ("hello.orig.yaml", "hello.partial.yaml", "hello.expanded.yaml", "plan.json", "status.db"):
        assert (info / name).is_file(), name
    task = ws / "say_hello" / "GREETING.hello.NAME.world"
    assert (task / "greeting.txt").read_text() == "hello, world!\n"
    # Merlin's names: <step>_<labels>.sh/.out/.err; the script starts with the shell's #! line
    for name in ("say_hello_GREETING.hello.NAME.world.sh", "say_hello_GREETING.hello.NAME.world.out",
                 "say_hello_GREETING.hello.NAME.world.err", "MERLIN_FINISHED"):
        assert (task / name).is_file(), name
    assert (task / "say_hello_GREETING.hello.NAME.world.sh").read_text().startswith("#!/bin/bash\n\n")
    collected = (ws / "collect" / "all_greetings.txt").read_text().splitlines()
    assert sorted(collected) == ["hello, world!", "hola, mundo!"]
    assert counts(ws) == {"say_hello": {"finished": 2}, "collect": {"finished": 1}}


def test_linear_chain_never_drops_a_step(write_spec, tmp_path: Path) -> None:
    # Merlin 1.13 + Celery 5.7 silently skips the second step of this chain and exits 0.
    spec = write_spec("""
        description: {name: chain, description: three steps in a row}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: step_1
            run: {cmd: "echo one > one.txt"}
          - name: step_2
            run: {cmd: "cat $(step_1.workspace)/one.txt > two.txt; echo two >> two.txt", depends: [step_1]}
          - name: step_3
            run: {cmd: "cat $(step_2.workspace)/two.txt > three.txt", depends: [step_2]}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert (ws / "step_3" / "three.txt").read_text() == "one\ntwo\n"
    assert counts(ws) == {f"step_{i}": {"finished": 1} for i in (1, 2, 3)}


def test_diamond_runs_each_task_after_its_parents(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: diamond, description: a diamond}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: top
            run: {cmd: "date +%s.%N > t; sleep 0.2"}
          - name: left
            run: {cmd: "test -f $(top.workspace)/MERLIN_FINISHED && date +%s.%N > t", depends: [top]}
          - name: right
            run: {cmd: "test -f $(top.workspace)/MERLIN_FINISHED && date +%s.%N > t", depends: [top]}
          - name: bottom
            run:
              cmd: "test -f $(left.workspace)/MERLIN_FINISHED && test -f $(right.workspace)/MERLIN_FINISHED"
              depends: [left, right]
    """)
    result = merlin("run", str(spec), "--local", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert counts(workspace_of(result))["bottom"] == {"finished": 1}


def test_failing_parent_does_not_block_dependants_and_exits_1(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: broken, description: a failing parent}
        env: {variables: {OUTPUT_PATH: ./out}}
        global.parameters:
          X: {values: [ok, bad], label: X.%%}
        study:
          - name: first
            run: {cmd: "test $(X) = ok"}
          - name: second
            run: {cmd: "echo fine", depends: [first]}
          - name: independent
            run: {cmd: "echo still runs"}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 1
    ws = workspace_of(result)
    # Merlin's semantics: a failed task is recorded and the study goes on; its dependants run.
    assert counts(ws) == {"first": {"finished": 1, "failed": 1}, "second": {"finished": 2},
                          "independent": {"finished": 1}}
    steps = {s["step"]: s for s in status_json(ws)["steps"]}
    (failure,) = steps["first"]["failures"]
    assert failure["instance"] == "first_X.bad" and failure["rc"] == 1
    assert failure["log"].endswith("first/X.bad/first_X.bad.err")
    assert (ws / "second" / "X.bad" / "second_X.bad.out").read_text() == "fine\n"
    assert "first_X.bad" in result.stderr and "first_X.bad.err" in result.stderr  # the run summary names it


def test_exit_codes_restart_retry_soft_and_hard_fail(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: codes, description: exit code protocol}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: restarts
            run:
              cmd: "echo cmd >> log; exit $(MERLIN_RESTART)"
              restart: "echo restart >> log; n=$(grep -c restart log); [ $n -ge 2 ] && exit 0; exit $(MERLIN_RESTART)"
              retry_delay: 0
          - name: retries
            run:
              cmd: "echo x >> log; [ $(wc -l < log) -ge 3 ] || exit $(MERLIN_RETRY)"
              retry_delay: 0
              max_retries: 5
          - name: gives_up
            run: {cmd: "echo x >> log; exit $(MERLIN_RETRY)", retry_delay: 0, max_retries: 2}
          - name: soft
            run: {cmd: "exit $(MERLIN_SOFT_FAIL)"}
          - name: after_soft
            run: {cmd: "echo runs anyway", depends: [soft]}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 1
    ws = workspace_of(result)
    assert (ws / "restarts" / "log").read_text().split() == ["cmd", "restart", "restart"]
    assert (ws / "retries" / "log").read_text().count("x") == 3
    assert (ws / "gives_up" / "log").read_text().count("x") == 3
    c = counts(ws)
    assert c["restarts"] == {"finished": 1} and c["retries"] == {"finished": 1}
    assert c["gives_up"] == {"failed": 1} and c["soft"] == {"failed": 1} and c["after_soft"] == {"finished": 1}
    steps = {s["step"]: s for s in status_json(ws)["steps"]}
    assert steps["restarts"]["restarts"] == 2 and steps["retries"]["restarts"] == 2


def test_hard_fail_stops_the_study(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: hard, description: hard fail}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: boom
            run: {cmd: "exit $(MERLIN_HARD_FAIL)"}
          - name: later
            run: {cmd: "echo never", depends: [boom]}
          - name: slow_sibling
            run: {cmd: "sleep 1"}
          - name: after_sibling
            run: {cmd: "echo never", depends: [slow_sibling]}
    """)
    result = merlin("run", str(spec), "--local", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 1
    assert "MERLIN_HARD_FAIL" in result.stderr
    ws = workspace_of(result)
    c = counts(ws)
    assert c["boom"] == {"failed": 1} and c["later"] == {"not_run": 1} and c["after_sibling"] == {"not_run": 1}
    assert status_json(ws)["state"] == "failed"


def test_samples_funnel_and_aligned_sample_steps(write_spec, tmp_path: Path) -> None:
    import numpy as np

    np.save(tmp_path / "samples.npy", np.arange(60).reshape(30, 2))
    spec = write_spec("""
        description: {name: samples, description: samples}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples: {file: samples.npy, column_labels: [A, B], level_max_dirs: 5}
        study:
          - name: make
            run: {cmd: "[ $(MERLIN_SAMPLE_ID) -ne 7 ] && echo $(A) $(B) > v.txt"}
          - name: double
            run:
              cmd: "cat $(make.workspace)/$(MERLIN_SAMPLE_PATH)/v.txt > w.txt; echo $(MERLIN_SAMPLE_ID)"
              depends: [make]
          - name: funnel
            run: {cmd: "cat $(double.workspace)/$(MERLIN_GLOB_PATH)/w.txt | wc -l > n.txt", depends: [double]}
    """)
    result = merlin("run", str(spec), "--local", "--batch-size", "4", cwd=tmp_path)
    assert result.returncode == 1  # sample 7 fails on purpose
    ws = workspace_of(result)
    assert (ws / "make" / "0" / "1" / "0" / "v.txt").read_text() == "10 11\n"  # sample 5: 25/5/1 per level
    c = counts(ws)
    assert c["make"] == {"finished": 29, "failed": 1}
    # Merlin's semantics: sample 7 of `double` still runs, and the funnel runs over what exists.
    assert c["double"] == {"finished": 30} and c["funnel"] == {"finished": 1}
    assert (ws / "funnel" / "n.txt").read_text().strip() == "29"


def test_ctrl_c_then_restart_resumes_without_rerunning(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: slow, description: interrupted}
        env: {variables: {OUTPUT_PATH: ./out}}
        global.parameters:
          I: {values: [0, 1, 2, 3, 4, 5], label: I.%%}
        study:
          - name: work
            run: {cmd: "echo run $(I) >> runs.log; sleep 1"}
          - name: done
            run: {cmd: "echo all", depends: [work_*]}
    """)
    proc = subprocess.Popen([*CLI, "run", str(spec), "--local", "--workers", "2", "--grace", "0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60  # wait for the first finished task, not a fixed time: CI machines are loaded
    while not list((tmp_path / "out").glob("slow_*/work/*/MERLIN_FINISHED")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    ws = next((tmp_path / "out").glob("slow_*"))
    assert status_json(ws)["state"] == "interrupted"
    finished_before = {p.parent.name for p in ws.glob("work/*/MERLIN_FINISHED")}
    assert 1 <= len(finished_before) < 6
    time.sleep(1.5)  # an orphaned task would still be writing
    result = merlin("restart", str(ws), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert counts(ws) == {"work": {"finished": 6}, "done": {"finished": 1}}
    for name in finished_before:
        assert (ws / "work" / name / "runs.log").read_text() == f"run {name[2:]}\n"


def test_dry_run_writes_scripts_only(tmp_path: Path) -> None:
    merlin("example", "hello_samples", cwd=tmp_path)
    result = merlin("run", "hello_samples/hello_samples.yaml", "--dry", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    scripts = list(ws.glob("say_hello/*/*/say_hello_GREETING.*.sh"))
    assert len(scripts) == 40
    assert not list(ws.glob("say_hello/*/*/hello.txt"))
    script = ws / "say_hello" / "GREETING.hello" / "00" / "say_hello_GREETING.hello.sh"
    assert "sample 0 at x=" in script.read_text()


def test_invalid_spec_leaves_no_workspace_and_exits_2(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: bad, description: x}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: a
            run: {cmd: "echo $(UNDEFINED)", depends: [b]}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown step 'b'" in result.stderr
    assert not (tmp_path / "out").exists()


GENERATOR_FAILS = """
    description: {name: gen, description: x}
    env: {variables: {OUTPUT_PATH: ./out}}
    merlin:
      samples: {generate: {cmd: "CMD"}, file: s.npy, column_labels: [A]}
    study:
      - name: a
        run: {cmd: "echo $(A)"}
"""


def test_failed_sample_generation_removes_the_workspace(write_spec, tmp_path: Path) -> None:
    spec = write_spec(GENERATOR_FAILS.replace("CMD", "echo nope >&2; exit 3"))
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 2 and "exited with 3: nope" in result.stderr
    assert not (tmp_path / "out").exists()  # OUTPUT_PATH was made by this run: it goes with the workspace
    assert not list(tmp_path.glob("*.generate.*"))  # the message said all of it


def test_a_failed_generators_whole_output_is_kept_beside_the_removed_workspace(write_spec, tmp_path: Path) -> None:
    spec = write_spec(GENERATOR_FAILS.replace("CMD", "seq 1 500; seq 1 1000 >&2; exit 3"))
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 2 and "exited with 3: 998 | 999 | 1000 (its whole output is kept in " in result.stderr
    err, out = sorted((tmp_path / "out").glob("gen_*.generate.*"))  # the workspace, with its cmd.err, is gone
    assert out.read_text().split() == [str(i) for i in range(1, 501)] and len(err.read_text().split()) == 1000
    assert [p.name for p in (tmp_path / "out").iterdir() if p.is_dir()] == []


def test_env_sources_are_sourced_by_every_task(write_spec, tmp_path: Path) -> None:
    (tmp_path / "setup.sh").write_text("export FROM_SOURCE=sourced\n")
    spec = write_spec("""
        description: {name: src, description: x}
        env:
          variables: {OUTPUT_PATH: ./out}
          sources: [$(SPECROOT)/setup.sh]
        study:
          - name: a
            run: {cmd: "echo $FROM_SOURCE > v.txt"}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (workspace_of(result) / "a" / "v.txt").read_text() == "sourced\n"


def test_a_worker_process_killed_mid_task_is_replaced_and_the_unit_rerun(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: killed, description: x}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: victim
            run: {cmd: "if [ ! -f killed ]; then touch killed; kill -9 $PPID; sleep 5; fi; echo survived > v.txt"}
          - name: after
            run: {cmd: "cat $(victim.workspace)/v.txt", depends: [victim]}
          - name: always_kills
            run: {cmd: "kill -9 $PPID; sleep 5"}
    """)
    result = merlin("run", str(spec), "--local", "--workers", "2", cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "died while running victim" in result.stderr
    ws = workspace_of(result)
    assert (ws / "victim" / "v.txt").read_text() == "survived\n"
    c = counts(ws)
    assert c["victim"] == {"finished": 1} and c["after"] == {"finished": 1}
    assert c["always_kills"] == {"failed": 1}
    (failure,) = {s["step"]: s for s in status_json(ws)["steps"]}["always_kills"]["failures"]
    assert failure["reason"] == "worker process died 3 times"


def test_samplesfile_overrides_a_missing_spec_samples_file(write_spec, tmp_path: Path) -> None:
    (tmp_path / "mine.csv").write_text("1,2\n3,4\n5,6\n")
    spec = write_spec("""
        description: {name: sf, description: x}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin: {samples: {file: not_there_yet.npy, column_labels: [A, B]}}
        study:
          - name: add
            run: {cmd: "echo $(( $(A) + $(B) )) > sum.txt"}
    """)
    assert merlin("validate", str(spec), cwd=tmp_path).returncode == 2
    result = merlin("run", str(spec), "--local", "--samplesfile", "mine.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert [(ws / "add" / f"0{i}" / "sum.txt").read_text() for i in range(3)] == ["3\n", "7\n", "11\n"]


def test_pgen_parameters_replace_the_spec_parameters(write_spec, tmp_path: Path) -> None:
    (tmp_path / "gen.py").write_text(
        "from maestrowf.datastructures.core import ParameterGenerator\n"
        "def get_custom_generator(env, **kwargs):\n"
        "    p = ParameterGenerator()\n"
        "    n = int(kwargs.get('N', '2'))\n"
        "    p.add_parameter('SEED', list(range(n)), 'SEED.%%')\n"
        "    return p\n")
    spec = write_spec("""
        description: {name: pg, description: x}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: sim
            run: {cmd: "echo $(SEED) > s.txt"}
    """)
    result = merlin("run", str(spec), "--local", "--pgen", "gen.py", "--pargs", "N:3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = workspace_of(result)
    assert sorted(p.name for p in (ws / "sim").iterdir()) == ["SEED.0", "SEED.1", "SEED.2"]
    assert (ws / "sim" / "SEED.2" / "s.txt").read_text() == "2\n"
    expanded = ws / "merlin_info" / "spec.expanded.yaml"  # as Merlin's: the generated parameters, no generator
    assert yaml.safe_load(expanded.read_text())["global.parameters"] == {"SEED": {"values": [0, 1, 2],
                                                                                 "label": "SEED.%%"}}
    again = merlin("run", str(expanded), "--local", "--dry", cwd=tmp_path)
    assert again.returncode == 0 and "3 instance" in again.stdout + again.stderr, again.stdout + again.stderr


def test_queueing_without_a_reachable_broker_writes_no_workspace(tmp_path: Path) -> None:
    merlin("example", "hello", cwd=tmp_path)
    config = tmp_path / "app.yaml"
    config.write_text("broker:\n  url: redis://127.0.0.1:1/0\n")
    env_run = subprocess.run([*CLI, "run", "hello/hello.yaml"], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "MERLIN_MDM_CONFIG": str(config)}, timeout=60, check=False)
    assert env_run.returncode == 1
    assert env_run.stderr.startswith("Error: ") and "Traceback" not in env_run.stderr
    assert not (tmp_path / "hello" / "studies").exists()


def test_steps_find_merlin_mdm_but_not_the_other_tools_of_its_environment(write_spec, tmp_path: Path) -> None:
    """Merlin's slurm_par example built its MPI program with the mpicc of merlin-mdm's own virtual environment
    (pip's MPICH), where under Merlin the step fails: only `merlin-mdm` of that environment may be visible."""
    import shutil
    import sys

    bindir = Path(sys.executable).parent
    assert (bindir / "pytest").exists() and (bindir / "merlin-mdm").exists(), "needs the installed checkout"
    spec = write_spec("""
        description: {name: tools, description: which commands a step sees}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: look
            run: {cmd: "command -v merlin-mdm > found.txt; command -v pytest >> found.txt;
                        merlin-mdm --version >> found.txt; true"}
    """)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if p and Path(p).resolve() != bindir.resolve() and not (Path(p) / "pytest").exists())
    assert shutil.which("pytest", path=path) is None
    env = {**os.environ, "PATH": path, "HOME": str(tmp_path / "home")}
    result = merlin("run", str(spec), "--local", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    found = (workspace_of(result) / "look" / "found.txt").read_text().splitlines()
    assert len(found) == 2 and found[0].endswith("/merlin-mdm") and found[1].startswith("merlin-mdm, version "), found
    assert Path(found[0]).resolve() == (bindir / "merlin-mdm").resolve()


def test_the_expanded_spec_runs_from_merlin_info_as_the_spec_did(tmp_path: Path) -> None:
    """Merlin's users start a study's workers with `merlin run-workers WS/merlin_info/NAME.expanded.yaml`; that
    file listed the step instances and was refused as a spec."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "s.csv").write_text("1\n2\n")
    spec = tmp_path / "lib" / "e.yaml"
    spec.write_text("description: {name: e, description: d}\nbatch: {type: local, walltime: 1:00:00}\n"
                    "env: {variables: {OUTPUT_PATH: ./out, N: 3, M: '$(N)0'}}\n"
                    "merlin: {samples: {file: s.csv, column_labels: [X]}}\n"
                    "study:\n  - name: a\n    description: a\n    run: {cmd: 'echo $(N) $(M) $(X) > o.txt'}\n")
    first = merlin("run", str(spec), "--local", "--vars", "N=7", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    ws = workspace_of(first)
    expanded = ws / "merlin_info" / "e.expanded.yaml"
    assert "$(N)" not in expanded.read_text() and (ws / "merlin_info" / "e.instances.yaml").is_file()
    written = yaml.safe_load(expanded.read_text())
    assert written["batch"]["walltime"] == "1:00:00"  # not 3600: YAML 1.1 reads 1:00:00 as a base-60 number
    assert written["env"]["variables"] == {"OUTPUT_PATH": str(tmp_path / "lib" / "out"), "N": "7", "M": "70"}
    assert written["merlin"]["samples"]["file"] == str(tmp_path / "lib" / "s.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checked = merlin("validate", str(expanded), "--strict", cwd=elsewhere)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    shown = merlin("status", str(expanded), "--json", cwd=elsewhere)
    assert shown.returncode == 0 and str(ws) in shown.stdout, shown.stdout + shown.stderr
    again = merlin("run", str(expanded), "--local", cwd=elsewhere)  # no --vars: the file holds them
    assert again.returncode == 0, again.stderr
    second = workspace_of(again)
    assert second.parent == tmp_path / "lib" / "out" and second != ws
    for root in (ws, second):
        assert sorted(p.read_text() for p in (root / "a").rglob("o.txt")) == ["7 70 1\n", "7 70 2\n"]


def test_a_spec_in_a_folder_whose_name_is_no_utf8_still_makes_its_workspace(tmp_path: Path) -> None:
    """$(SPECROOT) filled into the expanded spec carried the folder's byte 0xe9, which YAML cannot read: the run
    failed in a traceback (found by a review). The text is kept, under a first line that says why it is no spec."""
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(folder)
    with open(folder + b"/s.yaml", "w", encoding="utf-8") as out:
        out.write(f"description: {{name: s, description: d}}\nenv: {{variables: {{OUTPUT_PATH: {tmp_path}/out}}}}\n"
                  "study:\n  - {name: a, description: a, run: {cmd: 'ls $(SPECROOT) > o.txt'}}\n")
    ran = subprocess.run([*CLI, "run", "--local", os.fsdecode(folder + b"/s.yaml")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr
    (expanded,) = (tmp_path / "out").glob("s_*/merlin_info/s.expanded.yaml")
    assert expanded.read_bytes().startswith(b"# the spec's text with its tokens filled in, which YAML cannot read")
    assert b"caf\xe9" in expanded.read_bytes()
