"""How a task's process is started (posix_spawn from the task's directory): what it inherits, how a walltime
kills it, and that the process running the unit keeps its own working directory."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from merlin_mdm.backends.execution import run_unit
from merlin_mdm.spec import load_spec_text
from merlin_mdm.study.workspace import create_workspace
from tests.processes import process_alive

from .conftest import CLI, status_json, workspace_of


def test_a_task_inherits_only_stdin_stdout_and_stderr(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: fds, description: descriptors}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: fds
            run: {cmd: "ls /proc/$$/fd > fds.txt"}
    """)
    read, write = os.pipe()
    try:  # merlin-mdm inherits an open descriptor (as from a shell's `3>file`); its tasks must not
        result = subprocess.run([*CLI, "run", str(spec), "--local"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, check=False, pass_fds=(write,))
    finally:
        os.close(read)
        os.close(write)
    assert result.returncode == 0, result.stderr
    fds = set((workspace_of(result) / "fds" / "fds.txt").read_text().split())
    assert {"0", "1", "2"} <= fds and str(write) not in fds


def test_a_walltime_kills_the_task_and_what_it_started(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: wall, description: walltime}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: slow
            run: {cmd: "sleep 300 & echo $! > child.pid; wait", walltime: "00:00:01"}
    """)
    result = subprocess.run([*CLI, "run", str(spec), "--local"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    ws = workspace_of(result)
    (step,) = status_json(ws)["steps"]
    assert step["failures"][0]["reason"] == "walltime 00:00:01 exceeded, killed"
    # the task's own log says why it ended (it was empty)
    assert (ws / "slow" / "slow.err").read_text().endswith("merlin-mdm: the step's walltime 00:00:01 ran out: "
                                                           "every process of the task was killed (SIGKILL)\n")
    assert not process_alive(int((ws / "slow" / "child.pid").read_text()))
    assert not (ws / "slow" / "MERLIN_FINISHED").exists()


def test_a_task_ends_when_what_it_left_in_the_background_ends(write_spec, tmp_path: Path) -> None:
    """As in Merlin: the step lasts until its background process is done, whose output is there before the
    done-marker; under a walltime the background process is killed with the rest; a SIGKILL that is no
    walltime (the out-of-memory killer) is not reported as one."""
    spec = write_spec("""
        description: {name: bg, description: background}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: left
            run: {cmd: "(sleep 2; echo late > late.txt) & echo $! > child.pid"}
          - name: outlasts
            run: {cmd: "(sleep 300; echo late > late.txt) & echo $! > child.pid", walltime: "00:00:01"}
          - name: oom
            run: {cmd: "kill -9 $$"}
    """)
    result = subprocess.run([*CLI, "run", str(spec), "--local"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    ws = workspace_of(result)
    assert (ws / "left" / "late.txt").read_text() == "late\n" and (ws / "left" / "MERLIN_FINISHED").exists()
    reasons = {s["step"]: [f["reason"] for f in s["failures"]] for s in status_json(ws)["steps"]}
    assert reasons == {"left": [], "outlasts": ["walltime 00:00:01 exceeded, killed"],
                       "oom": ["killed by signal 9 (SIGKILL: the out-of-memory killer, or another process)"]}
    for step in ("left", "outlasts"):
        assert not process_alive(int((ws / step / "child.pid").read_text())), step
    assert not (ws / "outlasts" / "late.txt").exists()


def test_running_a_unit_keeps_the_callers_working_directory(tmp_path: Path, monkeypatch) -> None:
    np.save(tmp_path / "s.npy", np.arange(3).reshape(-1, 1))
    text = textwrap.dedent(f"""
        description: {{name: cwd, description: x}}
        env: {{variables: {{OUTPUT_PATH: {tmp_path}/ws}}}}
        merlin: {{samples: {{file: {tmp_path}/s.npy, column_labels: [X]}}}}
        study:
          - {{name: work, run: {{cmd: "pwd > where.txt # $(X)"}}}}
    """)
    ws, plan = create_workspace(load_spec_text(text, tmp_path / "spec.yaml"), batch_size=3)
    elsewhere = tmp_path / "caller"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (key,) = plan.units()
    outcome = run_unit(plan, key)
    assert outcome.finished == 3 and Path.cwd() == elsewhere
    wheres = sorted(p.read_text().strip() for p in ws.root.glob("work/**/where.txt"))
    assert wheres == sorted(str(p.parent) for p in ws.root.glob("work/**/MERLIN_FINISHED"))
    assert len(wheres) == 3


def test_a_unit_run_again_times_only_the_tasks_it_ran(tmp_path: Path) -> None:
    """A unit delivered again skips the tasks whose done-marker exists: its time is the others' (a probe saw
    15 s tasks shown as 9 s), and a unit that ran none is not timed."""
    np.save(tmp_path / "s.npy", np.arange(3).reshape(-1, 1))
    text = textwrap.dedent(f"""
        description: {{name: again, description: x}}
        env: {{variables: {{OUTPUT_PATH: {tmp_path}/ws}}}}
        merlin: {{samples: {{file: {tmp_path}/s.npy, column_labels: [X]}}}}
        study:
          - {{name: work, run: {{cmd: "sleep 0.6 # $(X)"}}}}
    """)
    ws, plan = create_workspace(load_spec_text(text, tmp_path / "spec.yaml"), batch_size=3)
    (key,) = plan.units()
    first = run_unit(plan, key)
    assert first.run_time is not None and first.run_time[0] == 3 and first.run_time[1] >= 1.8
    markers = sorted(ws.root.glob("work/**/MERLIN_FINISHED"))
    assert len(markers) == 3
    markers[0].unlink()  # as if the unit's message came back with one task left
    again = run_unit(plan, key)
    assert again.finished == 3 and again.run_time is not None
    tasks, seconds = again.run_time
    assert tasks == 1 and 0.6 <= seconds < 1.8, again.run_time
    assert run_unit(plan, key).run_time is None  # nothing ran: not timed


TENTHS = " ".join(map(str, range(30)))
"""A task waits up to 30 tenths of a second for its group's niceness, which the runner sets once it started."""


def test_a_niced_run_keeps_its_tasks_niced_against_other_sessions(write_spec, tmp_path: Path) -> None:
    """Each task is its own session, hence its own autogroup: the group must carry the run's niceness."""
    if not Path("/proc/self/autogroup").exists():
        pytest.skip("no autogroup scheduling on this kernel: nice already orders tasks against everything")
    spec = write_spec("""
        description: {name: niced, description: niceness}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: probe
            run:
              cmd: |
                for i in TENTHS; do grep -q 'nice 0$' /proc/self/autogroup || break; sleep 0.1; done
                cat /proc/self/autogroup > group.txt && ps -o ni= -p $$ > nice.txt
    """.replace("TENTHS", TENTHS))
    base = os.getpriority(os.PRIO_PROCESS, 0)  # the tests may themselves run niced
    for more in (0, 7):
        result = subprocess.run(["nice", "-n", str(more), *CLI, "run", str(spec), "--local"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        probe, expected = workspace_of(result) / "probe", str(min(base + more, 19))
        assert (probe / "nice.txt").read_text().strip() == expected
        assert (probe / "group.txt").read_text().split()[-1] == expected  # "/autogroup-123 nice 7"


def test_tasks_started_together_are_all_niced_without_cap_sys_admin(write_spec, tmp_path: Path) -> None:
    """Without CAP_SYS_ADMIN the kernel takes one autogroup write per 100 ms machine-wide (EAGAIN otherwise):
    tasks started within that window must still get their group's niceness (a CI run saw nice 0)."""
    if not Path("/proc/self/autogroup").exists():
        pytest.skip("no autogroup scheduling on this kernel: nice already orders tasks against everything")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if base + 7 > 19:
        pytest.skip("the tests run at niceness 13 or more: no room to nice the run further")
    spec = write_spec("""
        description: {name: niced, description: niceness of tasks started together}
        env: {variables: {OUTPUT_PATH: ./out}}
        global.parameters: {X: {values: [1, 2, 3, 4, 5, 6, 7, 8], label: X.%%}}
        study:
          - name: probe
            run:
              cmd: |
                for i in TENTHS; do grep -q 'nice 0$' /proc/self/autogroup || break; sleep 0.1; done
                cat /proc/self/autogroup > group.txt; echo $(X)
    """.replace("TENTHS", TENTHS))
    command = ["nice", "-n", "7", *CLI, "run", str(spec), "--local", "--workers", "2"]
    if os.geteuid() == 0:  # root passes the kernel's rate limit: drop the capability to meet it
        if shutil.which("capsh") is None:
            pytest.skip("running as root and no capsh to drop CAP_SYS_ADMIN")
        command = ["capsh", "--drop=cap_sys_admin", "--", "-c", shlex.join(command)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    groups = [p.read_text().split() for p in workspace_of(result).glob("probe*/**/group.txt")]
    assert len(groups) == 8
    assert len({g[0] for g in groups}) == 8  # eight sessions, eight groups
    assert [g[-1] for g in groups] == [str(base + 7)] * 8


def test_tasks_find_the_system_commands_with_no_path_set(write_spec, tmp_path: Path) -> None:
    spec = write_spec("""
        description: {name: nopath, description: env -i}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: a
            run: {cmd: "sleep 0 && ls > l.txt"}
    """)
    result = subprocess.run([*CLI, "run", str(spec), "--local"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False, env={"HOME": str(tmp_path)})  # as `env -i`: no PATH
    assert result.returncode == 0, result.stderr
    assert "a.sh" in (workspace_of(result) / "a" / "l.txt").read_text()
