"""Killing and signalling the local runner: nothing outlives it, nothing is recorded as running, a restart
finishes the study without running a task after its done-marker exists, and without losing one."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .conftest import (
    assert_status_matches_disk,
    merlin,
    spec_file,
    status_json,
    tagged_processes,
    wait_for,
    wait_until_some_done,
)


def _finish_with_restart(ws: Path, tmp_path: Path) -> None:
    result = merlin("restart", str(ws), "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    snap = assert_status_matches_disk(ws)
    assert snap["state"] == "finished"
    assert {s["step"]: s["counts"]["finished"] for s in snap["steps"]} == {"work": 30, "funnel": 1}
    for log in ws.rglob("runs.log"):
        assert len(log.read_text().splitlines()) >= 1


def test_sigkill_of_the_runner_leaves_no_process_and_status_says_interrupted(start, tmp_path: Path) -> None:
    runner = start("run", str(spec_file(tmp_path)), "--local", "--workers", "2", "--batch-size", "5")
    ws = wait_until_some_done(tmp_path / "out")
    assert tagged_processes(runner.tag), "the study's processes are visible while it runs"
    live = status_json(ws)
    assert live["state"] == "running" and f"(pid {runner.proc.pid} on " in live["message"], live["message"]
    runner.signal(signal.SIGKILL)
    runner.finish()
    wait_for(lambda: not tagged_processes(runner.tag), 10, "every process of the study to die")
    snap = assert_status_matches_disk(ws)
    assert snap["state"] == "interrupted"
    assert "is gone" in snap["message"]
    _finish_with_restart(ws, tmp_path)


def test_status_says_when_the_runner_is_stopped_and_how_to_continue_it(start, tmp_path: Path) -> None:
    """A SIGSTOPped (Ctrl-Z) runner holds the study and runs nothing: its counts stood still with no word why."""
    runner = start("run", str(spec_file(tmp_path)), "--local", "--workers", "2", "--batch-size", "5")
    ws = wait_until_some_done(tmp_path / "out")
    pid = runner.proc.pid
    runner.signal(signal.SIGSTOP)
    wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", 10, "the stop")
    stopped = status_json(ws)
    assert stopped["state"] == "running"
    assert "which is stopped (SIGSTOP or Ctrl-Z)" in stopped["message"], stopped["message"]
    assert f"`kill -CONT {pid}`" in stopped["message"]
    runner.signal(signal.SIGCONT)
    wait_for(lambda: "which is stopped" not in status_json(ws)["message"], 10, "status to see it run again")
    rc, err = runner.finish()
    assert rc == 0, err
    assert assert_status_matches_disk(ws)["state"] == "finished"


def test_sigkill_of_the_runner_and_its_workers_at_once_leaves_no_task_running(start, tmp_path: Path) -> None:
    """`pkill -9`, the OOM killer: no process is left to run a handler, yet no task may outlive its worker (two
    did, and wrote their lines beside the copies a restart ran)."""
    import os

    slow = tmp_path / "slow.yaml"
    slow.write_text(spec_file(tmp_path).read_text().replace('NAP: "0.3"', 'NAP: "30"'))
    runner = start("run", str(slow), "--local", "--workers", "2", "--batch-size", "5")
    wait_for(lambda: len(list((tmp_path / "out").rglob("runs.log"))) == 2, 60, "two tasks to run")
    workers = [int(p) for p in Path(f"/proc/{runner.proc.pid}/task/{runner.proc.pid}/children").read_text().split()]
    for pid in (runner.proc.pid, *workers):
        os.kill(pid, signal.SIGKILL)
    runner.finish()
    wait_for(lambda: not tagged_processes(runner.tag), 10, "every process of the study, its tasks too, to die")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_records_queued_work_and_exits_128_plus_signal(start, tmp_path: Path, signum: int) -> None:
    runner = start("run", str(spec_file(tmp_path)), "--local", "--workers", "2", "--batch-size", "5",
                   "--grace", "0")
    ws = wait_until_some_done(tmp_path / "out")
    runner.signal(signum)
    rc, err = runner.finish()
    assert rc == 128 + signum, err
    assert "Traceback" not in err
    assert not tagged_processes(runner.tag)
    snap = assert_status_matches_disk(ws)
    assert snap["state"] == "interrupted"
    assert signal.Signals(signum).name in snap["message"]
    work = next(s for s in snap["steps"] if s["step"] == "work")
    assert work["counts"]["queued"] == 30 - work["counts"]["finished"] > 0
    _finish_with_restart(ws, tmp_path)


def test_the_grace_period_lets_running_tasks_finish(start, tmp_path: Path) -> None:
    # One task a unit; each takes 2 s. With a 60 s grace the units running at SIGTERM end normally.
    spec = spec_file(tmp_path, (Path(__file__).parent / "conftest.py").read_text().split('SAMPLED_STUDY = """')[1]
                     .split('"""')[0].replace('NAP: "0.3"', 'NAP: "2"'))
    runner = start("run", str(spec), "--local", "--workers", "2", "--batch-size", "1", "--grace", "60")
    ws = wait_until_some_done(tmp_path / "out", at_least=2)
    wait_for(lambda: len(list((ws / "work").rglob("runs.log"))) >= 4, 30, "two more tasks to start")
    started = {p.parent for p in (ws / "work").rglob("runs.log")}
    runner.signal(signal.SIGTERM)
    rc, err = runner.finish()
    assert rc == 128 + signal.SIGTERM, err
    assert all((d / "MERLIN_FINISHED").exists() for d in started), "a running task was cut short"
    snap = assert_status_matches_disk(ws)
    assert snap["state"] == "interrupted"


def test_the_early_warning_signal_is_configurable(start, tmp_path: Path) -> None:
    runner = start("run", str(spec_file(tmp_path)), "--local", "--workers", "2", "--batch-size", "5",
                   "--grace", "0", "--signal", "USR1")
    ws = wait_until_some_done(tmp_path / "out")
    runner.signal(signal.SIGUSR1)
    rc, err = runner.finish()
    assert rc == 128 + signal.SIGUSR1, err
    assert assert_status_matches_disk(ws)["state"] == "interrupted"


def test_repeated_kills_and_restarts_never_rerun_a_done_task_nor_lose_one(start, tmp_path: Path) -> None:
    runner = start("run", str(spec_file(tmp_path)), "--local", "--workers", "2", "--batch-size", "5")
    ws = wait_until_some_done(tmp_path / "out", at_least=2)
    for cycle, signum in enumerate([signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]):
        done_before = len(list((ws / "work").rglob("MERLIN_FINISHED")))
        runner.signal(signum)
        runner.finish()
        wait_for(lambda r=runner: not tagged_processes(r.tag), 10, "every process of the study to die")
        assert_status_matches_disk(ws)
        runner = start("restart", str(ws), "--workers", "2", "--grace", "0")
        wait_for(lambda n=done_before: len(list((ws / "work").rglob("MERLIN_FINISHED"))) >= min(30, n + 2), 60,
                 f"progress after restart {cycle + 1}")
    rc, err = runner.finish()
    assert rc == 0, err
    snap = assert_status_matches_disk(ws)
    assert snap["state"] == "finished"
    assert {s["step"]: s["counts"]["finished"] for s in snap["steps"]} == {"work": 30, "funnel": 1}


GENERATING = """
        description: {name: gen, description: slow generation}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples:
            generate: {cmd: "touch $(MERLIN_INFO)/generating; sleep 30; seq 0 3 > $(MERLIN_INFO)/s.csv"}
            file: $(MERLIN_INFO)/s.csv
            column_labels: [X]
        study:
          - name: work
            run: {cmd: "echo $(X)"}
    """


def test_sigterm_during_sample_generation_leaves_no_workspace(start, tmp_path: Path) -> None:
    runner = start("run", str(spec_file(tmp_path, GENERATING)), "--local")
    wait_for(lambda: bool(list((tmp_path / "out").glob("*/merlin_info/generating"))), 30, "the generator to start")
    runner.signal(signal.SIGTERM)
    rc, err = runner.finish()
    assert rc == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # the folder the run made for it went with it
    wait_for(lambda: not tagged_processes(runner.tag), 10, "the generator to die")


def test_sigkill_during_sample_generation_leaves_no_generator_running(start, tmp_path: Path) -> None:
    """The generator went on after `run` was SIGKILLed (its parent now init) and wrote into the workspace."""
    runner = start("run", str(spec_file(tmp_path, GENERATING)), "--local")
    wait_for(lambda: bool(list((tmp_path / "out").glob("*/merlin_info/generating"))), 30, "the generator to start")
    runner.signal(signal.SIGKILL)
    runner.finish()
    wait_for(lambda: not tagged_processes(runner.tag), 10, "the generator and its sleep to die")
    assert not list((tmp_path / "out").glob("*/merlin_info/s.csv"))


# One task that traps SIGTERM: it takes 1 s to "save its state" before it exits, as `mdm train-order` does.
SAVING_STUDY = """
    description: {name: saving, description: a task that saves its state on SIGTERM}
    env: {variables: {OUTPUT_PATH: ./out, AFTER_TERM: "1"}}
    study:
      - name: train
        run:
          cmd: |
            trap 'sleep $(AFTER_TERM); echo saved > SAVED; exit 143' TERM
            touch STARTED
            sleep 120 &
            wait
"""


def _stop_the_saving_task(start, tmp_path: Path, after_term: str) -> Path:
    spec = spec_file(tmp_path, SAVING_STUDY.replace('AFTER_TERM: "1"', f'AFTER_TERM: "{after_term}"'))
    runner = start("run", str(spec), "--local", "--workers", "1", "--grace", "0")
    wait_for(lambda: any((tmp_path / "out").glob("*/train/STARTED")), 60, "the task to start")
    (task,) = [p.parent for p in (tmp_path / "out").glob("*/train/STARTED")]
    runner.signal(signal.SIGTERM)
    rc, err = runner.finish()
    assert rc == 128 + signal.SIGTERM, err
    assert not tagged_processes(runner.tag), "a process of the study outlived the runner"
    assert assert_status_matches_disk(task.parent)["state"] == "interrupted"
    return task


def test_a_stopped_task_gets_time_to_save_its_state_after_sigterm(start, tmp_path: Path) -> None:
    task = _stop_the_saving_task(start, tmp_path, "1")
    assert (task / "SAVED").read_text() == "saved\n", "the task was killed before its SIGTERM handler ended"


def test_a_task_that_does_not_end_on_sigterm_is_killed_after_the_window(start, tmp_path: Path) -> None:
    task = _stop_the_saving_task(start, tmp_path, "300")
    assert not (task / "SAVED").exists()
