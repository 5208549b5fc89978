"""One runner per study: a second `run`/`restart` of a held workspace is refused naming the holder, or waits."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from merlin_mdm.errors import WorkspaceError
from merlin_mdm.study.lock import WorkspaceLock, lock_holder

from .conftest import assert_status_matches_disk, spec_file, status_json, wait_for, wait_until_some_done


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    first = WorkspaceLock(tmp_path, "restart")
    first.acquire()
    assert lock_holder(tmp_path)[0]
    with pytest.raises(WorkspaceError, match=r"in use by `merlin-mdm restart` \(pid \d+ on "):
        WorkspaceLock(tmp_path, "run").acquire(tries=1)
    first.release()
    assert not lock_holder(tmp_path)[0]
    second = WorkspaceLock(tmp_path, "run")
    second.acquire(tries=1)
    second.release()


def test_wait_takes_the_lock_when_the_holder_lets_go(tmp_path: Path) -> None:
    first = WorkspaceLock(tmp_path, "run")
    first.acquire()
    waiter = WorkspaceLock(tmp_path, "restart")
    thread = threading.Thread(target=waiter.acquire, kwargs={"wait": True})
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive(), "the waiter must block while the lock is held"
    first.release()
    thread.join(timeout=30)
    assert not thread.is_alive() and waiter.fd is not None
    waiter.release()


def test_two_restarts_at_once_run_each_task_once(start, tmp_path: Path) -> None:
    runner = start("run", str(spec_file(tmp_path)), "--local", "--workers", "2", "--batch-size", "5")
    ws = wait_until_some_done(tmp_path / "out")
    runner.signal(signal.SIGINT)
    runner.finish()
    first = start("restart", str(ws), "--workers", "2")
    wait_for(lambda: lock_holder(ws / "merlin_info")[0], 30, "the first restart to take the lock")
    second = start("restart", str(ws), "--workers", "2")
    third = start("restart", str(ws), "--workers", "2", "--wait")
    rc, err = second.finish()
    assert rc == 1 and "is in use by `merlin-mdm restart` (pid" in err, err
    assert first.finish()[0] == 0
    assert third.finish()[0] == 0  # it waited, then found nothing left to do
    assert_status_matches_disk(ws)
    # The Ctrl-C gave running tasks the default grace period, so no task was cut short: each ran exactly once.
    logs = list((ws / "work").rglob("runs.log"))
    assert len(logs) == 30 and all(len(log.read_text().splitlines()) == 1 for log in logs)
    assert (ws / "funnel" / "runs.log").read_text() == "run\n"


def _killed_study(start, tmp_path: Path) -> Path:
    """A study whose runner was SIGKILLed: recorded as running, its lock free, the file naming the runner."""
    runner = start("run", str(spec_file(tmp_path)), "--local", "--workers", "2", "--batch-size", "5")
    ws = wait_until_some_done(tmp_path / "out")
    runner.signal(signal.SIGKILL)
    runner.finish()
    return ws


def test_a_status_that_cannot_record_a_dead_runner_leaves_the_lock_naming_it(start, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk `status` failed to record the end and left its own name in the lock file: the next status
    said "the runner `merlin-mdm status` (pid ...) is gone"."""
    from merlin_mdm.errors import StatusError
    from merlin_mdm.status.sqlite_store import SqliteStatusStore
    from merlin_mdm.studies import study_status
    from merlin_mdm.study.lock import LockHolder

    ws = _killed_study(start, tmp_path)
    runner = LockHolder.read(ws / "merlin_info" / "runner.lock")
    assert runner is not None and runner.command == "run"

    def full(*_: object) -> None:
        raise StatusError("status database: database or disk is full")

    monkeypatch.setattr(SqliteStatusStore, "requeue", full)
    with pytest.raises(StatusError, match="disk is full"):
        study_status(ws)
    assert LockHolder.read(ws / "merlin_info" / "runner.lock") == runner
    monkeypatch.undo()
    snap = study_status(ws)
    assert snap.state.value == "interrupted" and f"`merlin-mdm run` (pid {runner.pid} on " in snap.message


@pytest.mark.parametrize("read_only", ["workspace", "records"])
def test_status_of_a_workspace_the_user_may_not_write_reads_it_and_records_nothing(start, tmp_path: Path,
                                                                                   read_only: str) -> None:
    """Another user's study, or one made read-only: `status` failed on "attempt to write a readonly database".
    A group's folder under umask 002 (merlin_info/ writable, its files not) said the dead runner's tasks were
    "ending", for ever."""
    import os
    import subprocess

    from tests.integration.local.conftest import CLI

    ws = _killed_study(start, tmp_path)
    drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []  # root writes all
    info = ws / "merlin_info"
    targets = [str(ws)] if read_only == "workspace" else [str(info / "status.db"), str(info / "runner.lock")]
    subprocess.run(["chmod", "-R", "a-w", *targets], check=True)
    try:
        for args in (["status", str(ws), "--json"], ["detailed-status", str(ws)]):
            result = subprocess.run([*drop, *CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                    check=False)
            assert result.returncode == 0, result.stderr
        snap = json.loads(subprocess.run([*drop, *CLI, "status", str(ws), "--json"], cwd=tmp_path,
                                         capture_output=True, text=True, timeout=120, check=True).stdout)
        assert snap["state"] == "interrupted" and "is gone" in snap["message"]
        assert "by one who may write the workspace" in snap["message"]
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(ws)], check=True)
    assert status_json(ws)["state"] == "interrupted"  # now recorded, by one who may
    assert_status_matches_disk(ws)


def test_a_lock_held_by_the_tasks_of_a_killed_runner_says_the_runner_is_gone(tmp_path: Path) -> None:
    """After a SIGKILL of `run` its task processes hold the lock for a moment: status said `running (run by
    merlin-mdm run (pid N ...))` and restart `in use by` that dead pid."""
    import os
    import subprocess
    import time

    from merlin_mdm.study.lock import LOCK_FILE, LockHolder

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / LOCK_FILE).touch()  # written by the runner
    held = WorkspaceLock(tmp_path, "run", record=False)  # the task processes' inherited descriptor
    held.acquire()
    record = {"pid": dead.pid, "host": os.uname().nodename, "command": "run", "since": time.time()}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    holder = LockHolder.read(tmp_path / LOCK_FILE)
    assert holder is not None and holder.gone()
    assert not LockHolder(os.getpid(), os.uname().nodename, "run", 0.0).gone()
    assert not LockHolder(dead.pid, "another-host", "run", 0.0).gone()
    with pytest.raises(WorkspaceError, match=rf"in use by the task processes of `merlin-mdm run` \(pid {dead.pid} "
                                             r".*which is gone \(they end within seconds\)"):
        WorkspaceLock(tmp_path, "restart").acquire(tries=1)
    held.release()


def test_a_lock_file_deleted_while_held_is_taken_again_or_said_lost(tmp_path: Path) -> None:
    holder = WorkspaceLock(tmp_path, "run")
    holder.acquire()
    assert holder.keep() is None  # nothing happened
    (tmp_path / "runner.lock").unlink()
    assert lock_holder(tmp_path)[0]  # the folder is held: `status` does not take the study for dead
    with pytest.raises(WorkspaceError, match="in use by another process"):
        WorkspaceLock(tmp_path, "restart").acquire(tries=1)
    assert "was deleted while this runner held it (by a task?): taken again" in str(holder.keep())
    assert holder.keep() is None  # the file taken again is the one it holds now
    with pytest.raises(WorkspaceError, match="in use by `merlin-mdm run`"):
        WorkspaceLock(tmp_path, "restart").acquire(tries=1)
    assert holder.folder_fd is not None
    os.close(holder.folder_fd)  # as on a file system that locks no folders (NFS): the file is all there is
    holder.folder_fd = None
    (tmp_path / "runner.lock").unlink()
    other = WorkspaceLock(tmp_path, "restart")
    other.acquire(tries=1)  # a second runner took the new file before the first looked
    with pytest.raises(WorkspaceError, match=r"took the study since: this runner starts nothing more"):
        holder.keep()
    other.release()
    holder.release()
    assert holder.retaken == [] and not lock_holder(tmp_path)[0]


def test_a_task_that_deletes_the_runner_lock_does_not_let_a_restart_run_beside_the_runner(start,
                                                                                          tmp_path: Path) -> None:
    """The file was gone, so a `restart` made a new one, locked it and ran the study beside its runner (an outside
    probe saw the unit run twice, even with the file taken again within a second). The runner locks merlin_info/
    too, and takes the file again, which names it."""
    spec = spec_file(tmp_path, """
        description: {name: lockrm, description: a task deletes the runner lock}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: a
            description: deletes the lock, then works a while
            run: {cmd: "echo run >> runs.log; rm $(MERLIN_INFO)/runner.lock; touch deleted; sleep 5"}
    """)
    runner = start("run", str(spec), "--local")
    wait_for(lambda: list((tmp_path / "out").glob("lockrm_*/a/deleted")), 60, "the task to delete the lock")
    ws = next((tmp_path / "out").glob("lockrm_*"))
    rc, err = start("restart", str(ws)).finish()  # at once: merlin_info/ itself is locked
    assert rc == 1 and "is in use by " in err, err
    assert status_json(ws)["state"] == "running"  # not taken for a dead runner's study
    wait_for(lambda: (ws / "merlin_info" / "runner.lock").exists(), 10, "the runner to take the lock again")
    rc, err = start("restart", str(ws)).finish()
    assert rc == 1 and "is in use by `merlin-mdm run` (pid" in err, err
    rc, err = runner.finish()
    assert rc == 0 and "runner.lock was deleted while this runner held it (by a task?): taken again" in err, err
    assert (ws / "a" / "runs.log").read_text() == "run\n"
    assert status_json(ws)["state"] == "finished"


def test_a_look_never_makes_a_deleted_lock_file_nor_takes_the_study_for_dead(tmp_path: Path) -> None:
    """Where the folder lock holds on its own machine only (NFS, another host), a `status` that found runner.lock
    deleted made a new one, took it, and recorded a live runner's study as interrupted (found by a review)."""
    runner = WorkspaceLock(tmp_path, "run")
    runner.acquire()
    assert runner.folder_fd is not None
    os.close(runner.folder_fd)  # as another host of an NFS mount sees it: no folder lock
    runner.folder_fd = None
    (tmp_path / "runner.lock").unlink()  # ... and a task deletes the file
    assert lock_holder(tmp_path) == (True, None)  # held, or cannot be told: never taken for a dead runner's
    with pytest.raises(WorkspaceError, match=r"is gone \(deleted\?\): whether a runner holds the study cannot be told"):
        WorkspaceLock(tmp_path, "status", record=False).acquire(tries=1)
    assert not (tmp_path / "runner.lock").exists()
    runner.release()
