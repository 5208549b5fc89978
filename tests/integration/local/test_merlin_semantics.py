"""Merlin 1.13's run-time semantics with the local runner: shells as interpreters, the user's PATH, failures
that do not block dependants, retry delays that overlap."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .conftest import counts, merlin, status_json, workspace_of


def test_shell_is_an_interpreter_line_and_a_missing_one_fails_only_its_task(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: shells, description: interpreters}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: py
            run: {cmd: 'print("hi from", "python")', shell: /usr/bin/env python3}
          - name: nosuch
            run: {cmd: "echo x", shell: /no/such/shell -e}
          - name: after
            run: {cmd: "echo after", depends: [nosuch, py]}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    ws = workspace_of(result)
    assert (ws / "py" / "py.sh").read_text() == '#!/usr/bin/env python3\n\nprint("hi from", "python")\n'
    assert (ws / "py" / "py.out").read_text() == "hi from python\n"
    assert counts(ws) == {"py": {"finished": 1}, "nosuch": {"failed": 1}, "after": {"finished": 1}}
    assert "cannot start the shell '/no/such/shell -e'" in (ws / "nosuch" / "nosuch.err").read_text()
    (failure,) = {s["step"]: s for s in status_json(ws)["steps"]}["nosuch"]["failures"]
    assert "ENOENT" in failure["reason"] and failure["log"].endswith("nosuch/nosuch.err")


def test_steps_see_the_users_path_first(write_spec, tmp_path: Path) -> None:
    user_bin = tmp_path / "userbin"
    user_bin.mkdir()
    (user_bin / "python3").write_text("#!/bin/sh\necho users-python3\n")
    (user_bin / "python3").chmod(0o755)
    spec = write_spec("""
        description: {name: path, description: PATH}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: which
            run: {cmd: "python3 > which.txt"}
    """)
    env = {**os.environ, "PATH": f"{user_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = merlin("run", str(spec), "--local", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (workspace_of(result) / "which" / "which.txt").read_text() == "users-python3\n"


def test_retry_delay_does_not_serialize_sibling_samples(write_spec, tmp_path: Path) -> None:
    # One worker, one unit of 4 samples per step: every first attempt happens before any second one, so the
    # delays (after MERLIN_RETRY and after MERLIN_RESTART alike) overlap instead of adding up.
    np.save(tmp_path / "samples.npy", np.arange(4).reshape(4, 1))
    spec = write_spec("""
        description: {name: delays, description: retry delays}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples: {file: samples.npy, column_labels: [X]}
        study:
          - name: retry
            run:
              cmd: "echo first $(X) >> $(MERLIN_INFO)/retry.log; [ -e r ] && exit 0; touch r; exit $(MERLIN_RETRY)"
              retry_delay: 1
          - name: restart
            run:
              cmd: "echo first $(X) >> $(MERLIN_INFO)/restart.log; exit $(MERLIN_RESTART)"
              restart: "echo again $(X) >> $(MERLIN_INFO)/restart.log"
              retry_delay: 1
    """)
    result = merlin("run", str(spec), "--local", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = workspace_of(result) / "merlin_info"
    assert (info / "retry.log").read_text().split("\n")[:-1] == [f"first {i}" for i in (0, 1, 2, 3)] * 2
    assert (info / "restart.log").read_text().split("\n")[:-1] == \
        [f"first {i}" for i in (0, 1, 2, 3)] + [f"again {i}" for i in (0, 1, 2, 3)]
    restarted = workspace_of(result) / "restart" / "00"
    assert (restarted / "restart.restart.sh").read_text().startswith("#!/bin/bash\n\necho again 0")


def test_tokens_as_merlin_resolves_them(write_spec, tmp_path: Path) -> None:
    # Checked against Merlin 1.13 by hand: $(OUTPUT_PATH) (and variables built from it) keep the form written,
    # $(WORKSPACE) in a sample step is the step's folder, a single sample runs in the step's folder.
    (tmp_path / "one.csv").write_text("5\n")
    (tmp_path / "two.csv").write_text("5\n6\n")
    text = """
        description: {name: $(NAME), description: tokens}
        env: {variables: {NAME: tok, OUTPUT_PATH: ./studies, V: $(OUTPUT_PATH)/x}}
        merlin:
          samples: {file: FILE, column_labels: [A]}
        study:
          - name: s
            run: {cmd: "echo $(OUTPUT_PATH) $(V) $(WORKSPACE) $(A) > o.txt"}
    """
    one = merlin("run", str(write_spec(text.replace("FILE", "one.csv"), "one.yaml")), "--local", cwd=tmp_path)
    ws = workspace_of(one)
    assert ws.name.startswith("tok_")
    assert (ws / "s" / "o.txt").read_text() == f"./studies ./studies/x {ws}/s 5\n"
    two = merlin("run", str(write_spec(text.replace("FILE", "two.csv"), "two.yaml")), "--local", cwd=tmp_path)
    ws = workspace_of(two)
    assert (ws / "s" / "01" / "o.txt").read_text() == f"./studies ./studies/x {ws}/s 6\n"


def test_run_prints_spec_warnings_and_leaves_shell_substitutions_alone(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: warn, description: warnings}
        env: {variables: {OUTPUT_PATH: ./out, NAME: n}}
        study:
          - name: a
            run: {cmd: "echo $(basename $(pwd)) $(NAM) > o.txt"}
    """)
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert "warning: $(NAM) is not a defined token (did you mean 'NAME'?)" in result.stderr
    assert result.returncode == 0, result.stderr  # `NAM` is no command: the shell says so, echo goes on
    assert (workspace_of(result) / "a" / "o.txt").read_text() == "a\n"


RAISE = """
    description: {name: raise, description: a task raises an error}
    env: {variables: {OUTPUT_PATH: ./out}}
    global.parameters: {P: {values: [1, 2, 3], label: P.%%}}
    study:
      - name: first
        run: {cmd: "echo first >> count.txt"}
      - name: bad
        run: {cmd: "[ $(P) -ne 2 ] || exit $(MERLIN_RAISE_ERROR)", depends: [first]}
      - name: after_bad
        run: {cmd: "echo after >> count.txt", depends: [bad]}
      - name: final
        run: {cmd: "echo final >> count.txt", depends: [after_bad_*]}
"""


def test_a_task_that_raises_stops_its_own_chain_and_a_funnel_still_runs(write_spec, tmp_path: Path) -> None:
    """Merlin 1.13: $(MERLIN_RAISE_ERROR) (106) fails the task and queues no more of its chain (after_bad/P.2
    never runs); its siblings' chains and the funnel over them run; its status is MERLIN_UNRECOGNIZED."""
    result = merlin("run", str(write_spec(RAISE)), "--local", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a defined token" not in result.stderr
    ws = workspace_of(result)
    assert counts(ws) == {"first": {"finished": 1}, "bad": {"finished": 2, "failed": 1},
                          "after_bad": {"finished": 2, "not_run": 1}, "final": {"finished": 1}}
    assert not (ws / "after_bad" / "P.2" / "count.txt").exists()
    assert (ws / "final" / "count.txt").read_text() == "final\n"
    (failure,) = {s["step"]: s for s in status_json(ws)["steps"]}["after_bad"]["failures"]
    assert "parent bad_P.2 raised an error ($(MERLIN_RAISE_ERROR))" in failure["reason"]
    out = merlin("detailed-status", str(ws), "--return-code", "UNRECOGNIZED", cwd=tmp_path)
    assert out.stdout == f"bad_P.2: failed MERLIN_UNRECOGNIZED (exit 106) {ws}/bad/P.2\n", out


def test_a_step_with_a_restart_section_writes_every_tasks_restart_script(write_spec, tmp_path: Path) -> None:
    """Merlin writes `<name>.restart.sh` beside `<name>.sh` for every task of a step with `restart`, used or not."""
    spec = write_spec("""
        description: {name: rs, description: restart scripts}
        env: {variables: {OUTPUT_PATH: ./out}}
        global.parameters: {P: {values: [1, 2], label: P.%%}}
        study:
          - name: s
            run: {cmd: "echo $(P)", restart: "echo again $(P)"}
    """)
    ws = workspace_of(merlin("run", str(spec), "--local", cwd=tmp_path))
    assert (ws / "s" / "P.2" / "s_P.2.restart.sh").read_text().endswith("echo again 2\n")
    assert not (ws / "s" / "P.2" / "s_P.2.restart.out").exists()  # written, never run
