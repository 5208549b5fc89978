"""The Celery pool process's task guard: a task dies with the process that started it, however that dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.conftest import wait_until
from tests.processes import process_alive

REPO = Path(__file__).resolve().parents[2]

# The owner starts a task the way execution does (its own session), tells the guard, and then either waits
# for it (SIGTERM turns into SystemExit there, as billiard does in a pool process) or lets it end first.
OWNER = textwrap.dedent("""
    import signal, subprocess, sys, time
    from merlin_mdm.backends.task_guard import task_guard

    def stop(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop)
    guard = task_guard()
    task = subprocess.Popen(["sleep", sys.argv[1]], start_new_session=True)
    guard(task.pid)
    print(task.pid, guard.proc.pid, flush=True)
    try:
        task.wait()
    finally:
        guard(0)
    print("ended", flush=True)
    time.sleep(60)
""")



def _owner(seconds: str) -> tuple[subprocess.Popen[str], int, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, seconds], stdout=subprocess.PIPE, text=True, env=env)
    assert owner.stdout is not None
    task, guard = (int(x) for x in owner.stdout.readline().split())
    return owner, task, guard


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_task_dies_with_the_process_that_runs_it(signum: int) -> None:
    owner, task, guard = _owner("60")
    try:
        assert process_alive(task) and process_alive(guard)
        owner.send_signal(signum)
        owner.wait(timeout=10)
        wait_until(lambda: not process_alive(task), 10, "the task to be killed by the guard")
        wait_until(lambda: not process_alive(guard), 10, "the guard to exit")
    finally:
        owner.kill()
        owner.wait()
        if process_alive(task):
            os.kill(task, signal.SIGKILL)


def test_a_task_that_ended_is_not_looked_for_and_the_guard_leaves_with_its_owner() -> None:
    owner, _, guard = _owner("0.2")
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ended"
        assert process_alive(guard)
        owner.kill()
        owner.wait(timeout=10)
        wait_until(lambda: not process_alive(guard), 10, "the guard to exit")
    finally:
        owner.kill()
        owner.wait()


# The owner starts its guard first, as a Celery unit does before its first task, and waits for a line on stdin
# before it starts the task: the guard exists (and is replaced if killed) while no task does.
STARTED_FIRST = textwrap.dedent("""
    import subprocess, sys, time
    from merlin_mdm.backends.task_guard import task_guard

    guard = task_guard()
    guard.start()
    print(guard.proc.pid, flush=True)
    sys.stdin.readline()
    guard.start()  # a killed guard is replaced; a live one is kept
    print(guard.proc.pid, flush=True)
    task = subprocess.Popen(["sleep", "60"], start_new_session=True)
    guard(task.pid)
    print(task.pid, flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("kill_guard", [False, True])
def test_the_guard_is_started_before_any_task_and_replaced_when_killed(kill_guard: bool) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    owner = subprocess.Popen([sys.executable, "-c", STARTED_FIRST], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)
    assert owner.stdin is not None and owner.stdout is not None
    task = 0
    try:
        first = int(owner.stdout.readline())
        assert process_alive(first)
        if kill_guard:
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: not process_alive(first), 10, "the guard to die")
        owner.stdin.write("go\n")
        owner.stdin.flush()
        second, task = int(owner.stdout.readline()), int(owner.stdout.readline())
        assert (second != first) == kill_guard
        assert process_alive(task) and process_alive(second)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        wait_until(lambda: not process_alive(task), 10, "the task to be killed by the guard")
    finally:
        owner.kill()
        owner.wait()
        if task and process_alive(task):
            os.kill(task, signal.SIGKILL)


# A task whose shell has exited while a process it started in the background runs on (`nohup sleep 61 &`): the
# owner waits for the group, as execution does, and is stopped there. The guard must keep the group, not its
# leader: asked for the leader's pid, it forgot the task, and the background process outlived the stopped
# worker beside the redelivered copy of its task (an outside probe).
BACKGROUND = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    from merlin_mdm.backends.task_guard import task_guard

    def stop(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop)
    guard = task_guard()
    task = subprocess.Popen(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    guard(task.pid)
    background = int(task.stdout.readline())
    task.wait()  # the shell has exited; its background process runs on in its group
    print(background, guard.proc.pid, flush=True)
    try:
        while True:
            os.killpg(task.pid, 0)
            time.sleep(0.05)
    finally:
        guard(0)
""")


def test_a_task_s_background_process_dies_with_the_process_that_waits_for_it() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    owner = subprocess.Popen([sys.executable, "-c", BACKGROUND], stdout=subprocess.PIPE, text=True, env=env)
    assert owner.stdout is not None
    background, guard = (int(x) for x in owner.stdout.readline().split())
    try:
        assert process_alive(background) and process_alive(guard)
        owner.send_signal(signal.SIGTERM)
        owner.wait(timeout=10)
        wait_until(lambda: not process_alive(background), 10, "the background process to be killed by the guard")
    finally:
        owner.kill()
        owner.wait()
        if process_alive(background):
            os.kill(background, signal.SIGKILL)
