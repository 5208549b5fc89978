"""The user's terminal goes away: a closed window or a lost ssh connection hangs up the runner's terminal (SIGHUP
to its foreground process group, and every later write there fails with EIO), and `nohup` asks for SIGHUP to be
ignored. Either way nothing is lost: the grace period is kept and the state recorded, or the run goes on."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from .conftest import (
    CLI,
    SAMPLED_STUDY,
    TAG,
    assert_status_matches_disk,
    merlin,
    spec_file,
    tagged_processes,
    wait_for,
)


def _slow_study(tmp_path: Path, nap: str) -> Path:
    return spec_file(tmp_path, SAMPLED_STUDY.replace('NAP: "0.3"', f'NAP: "{nap}"'))


def _read_until(fd: int, ready, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Drain the terminal (a full one would block the runner) until ``ready()``."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the runner did not start its tasks"
        if select.select([fd], [], [], 0.2)[0]:
            try:
                os.read(fd, 65536)
            except OSError:
                return


def _wait_exit(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the runner did not exit after its terminal hung up")


def test_a_closed_terminal_stops_a_local_run_with_its_grace_and_records_it(tmp_path: Path) -> None:
    """The runner's goodbye to a hung-up terminal raised (EIO): it ended at once with exit 1, its running tasks
    killed without the grace period, and `status` said `gone without recording an end (killed?)`."""
    spec = _slow_study(tmp_path, "2")
    tag = uuid.uuid4().hex
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session whose controlling terminal is the pty, as a login shell's command
        os.chdir(tmp_path)
        os.execve(sys.executable, [*CLI, "run", str(spec), "--local", "--workers", "2", "--batch-size", "1",
                                   "--grace", "60"], {**os.environ, TAG: tag})
    try:
        _read_until(fd, lambda: len(list((tmp_path / "out").rglob("runs.log"))) >= 3, 60)
    finally:
        os.close(fd)  # the window closes: SIGHUP to the foreground group, EIO for every later write
    started = {p.parent for p in (tmp_path / "out").rglob("runs.log")}
    assert _wait_exit(pid, 120) == 128 + signal.SIGHUP
    wait_for(lambda: not tagged_processes(tag), 10, "every process of the study to end")
    assert all((d / "MERLIN_FINISHED").exists() for d in started if d.name != "funnel"), "a running task was cut"
    (ws,) = [p.parent.parent for p in (tmp_path / "out").glob("*/merlin_info/plan.json")]
    snap = assert_status_matches_disk(ws)
    assert snap["state"] == "interrupted" and "SIGHUP" in snap["message"], snap["message"]
    finished = merlin("restart", str(ws), "--workers", "2", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert assert_status_matches_disk(ws)["state"] == "finished"


def test_a_run_under_nohup_goes_on_after_a_hangup(tmp_path: Path) -> None:
    """`nohup merlin-mdm run ...`: the inherited SIG_IGN was replaced by the stop handler, so the hangup stopped
    the run it was meant to spare (8 of 12 tasks left queued, exit 129)."""
    spec = _slow_study(tmp_path, "0.2")
    tag = uuid.uuid4().hex
    with (tmp_path / "nohup.out").open("w") as out:
        proc = subprocess.Popen([*CLI, "run", str(spec), "--local", "--workers", "2", "--batch-size", "1"],
                                cwd=tmp_path, env={**os.environ, TAG: tag}, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        try:
            wait_for(lambda: len(list((tmp_path / "out").rglob("runs.log"))) >= 2, 60, "two tasks to start")
            proc.send_signal(signal.SIGHUP)
            assert proc.wait(timeout=120) == 0, (tmp_path / "nohup.out").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    (ws,) = [p.parent.parent for p in (tmp_path / "out").glob("*/merlin_info/plan.json")]
    snap = assert_status_matches_disk(ws)
    assert snap["state"] == "finished", snap
    assert len(list((ws / "work").rglob("MERLIN_FINISHED"))) == 30
