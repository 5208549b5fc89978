"""Starting, waiting for and killing the process of one task: the cost every task pays, kept small.

A task runs as ``<shell...> <script>`` in its own session (its process group is its pid, so one ``killpg``
takes every process it started), stdin from /dev/null, stdout and stderr appended to its logs.

It is started with ``os.posix_spawn`` (glibc's clone with ``CLONE_VFORK``, argv and environment converted in
C): about half the CPU of ``subprocess.Popen``, whose per-call Python work (environment encoding, error pipe,
descriptor bookkeeping) is a large part of a null task's overhead. posix_spawn cannot change the directory or
close descriptors, so the calling process enters the task's directory itself (:func:`kept_cwd` restores it)
and marks every descriptor above stderr close-on-exec (:func:`close_on_exec`), which is what ``close_fds``
did. Where ``os.posix_spawn`` is missing, tasks start through ``subprocess.Popen``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "LOG_FLAGS",
    "TERM_WINDOW",
    "WalltimeExceeded",
    "close_on_exec",
    "kept_cwd",
    "kill_current_group",
    "kill_group",
    "spawn",
    "terminate_current",
    "wait",
    "watch_tasks",
]

LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
TERM_WINDOW = 5.0  # seconds a stopped task's processes get between SIGTERM and SIGKILL
_SPAWN = hasattr(os, "posix_spawn") and sys.platform.startswith("linux")
_current: int | None = None  # the process group (= pid) of the task this process runs now
_popen: subprocess.Popen[bytes] | None = None  # the same task when it was started by Popen (it reaps it)
_watcher: Callable[[int], None] | None = None  # told the process group of each task as it starts (0 at its end)


def watch_tasks(watcher: Callable[[int], None] | None) -> None:
    """Have ``watcher`` told the process-group id of each task this process starts (and 0 when it ends)."""
    global _watcher
    _watcher = watcher


def terminate_current(signum: int = signal.SIGTERM) -> None:
    """Signal the running task's process group (used by signal handlers when a worker is stopped)."""
    pgid = _current
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def kill_current_group(window: float = TERM_WINDOW) -> None:
    """SIGTERM the running task's process group; SIGKILL whatever of it is left once ``window`` s have passed.

    The wait ends as soon as no process of the group is left, so a task that exits on SIGTERM costs nothing
    and one that saves its state first (``mdm train-order`` finishes its iteration and writes it) has the
    window to do so. Called from signal handlers while the task is being waited for, so it polls instead of
    waiting again, and reaps the task's own process (the group leader, this process's child) as it ends, so
    that an exited leader is not taken for a live member.
    """
    pgid = _current
    if pgid is None:
        return
    terminate_current(signal.SIGTERM)
    deadline = time.monotonic() + window
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    kill_group(pgid)


def kill_group(pgid: int, timeout: float = 2.0) -> None:
    """SIGKILL the process group ``pgid`` and wait (up to ``timeout`` s) until none of it is left alive, so that
    whoever returns next has nothing of it running (a killed process takes a moment to die)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)  # the shell may be gone while a child it started is not
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is left (its leader reaped first if it has exited)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def kept_cwd() -> Iterator[None]:
    """Restore this process's working directory after tasks were spawned from their own directories."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # it was removed: nothing to go back to
        cwd = None
    try:
        yield
    finally:
        if cwd is not None:
            with contextlib.suppress(OSError):
                os.chdir(cwd)


def close_on_exec() -> None:
    """Mark every inheritable descriptor above stderr close-on-exec, so tasks get only stdin/out/err."""
    if not _SPAWN:
        return
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):  # the listing's own descriptor is already closed
                if fd > 2 and os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


@functools.lru_cache(maxsize=64)
def _executable(name: str, path: str | None) -> str:
    """The file to execute for argv[0], searched in the task's PATH as subprocess does."""
    if os.sep in name:
        return name
    return shutil.which(name, path=path) or name


def spawn(argv: list[str], directory: str | Path, out: int, err: int, env: dict[str, str]) -> int:
    """Start ``argv`` in ``directory`` in its own session, stdout/stderr to ``out``/``err``; its pid.

    Raises OSError when it cannot start (a missing interpreter, a directory that is gone).
    """
    global _current, _popen
    if _SPAWN:
        os.chdir(directory)
        pid = os.posix_spawn(_executable(argv[0], env.get("PATH")), argv, env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, err, 2),
        ])
    else:
        _popen = subprocess.Popen(argv, cwd=directory, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        pid = _popen.pid
    _current = pid
    _keep_niceness(pid)
    if _watcher is not None:
        _watcher(pid)
    return pid


def _keep_niceness(pid: int) -> None:
    """Give the task's session the niceness of this process, so that ``nice merlin-mdm run`` yields the CPU.

    The task inherits the nice value, but its own session is its own autogroup under Linux's autogroup
    scheduling, and between autogroups only the group's niceness counts: without this a niced study's tasks
    take as much CPU as anyone else's. Only ever raises niceness; a no-op where there is no autogroup.

    Without CAP_SYS_ADMIN the kernel takes one such write per 100 ms on the whole machine and refuses the
    others with EAGAIN (measured: a second write within 100 ms fails), so several tasks started at once, or
    another user's writes, would leave tasks at full priority: the write is tried again for up to
    :data:`NICE_PATIENCE` seconds.
    """
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    if nice <= 0:
        return
    deadline = time.monotonic() + NICE_PATIENCE
    while True:
        try:
            with open(f"/proc/{pid}/autogroup", "w", encoding="utf-8") as group:  # no codec to import
                group.write(str(nice))
            return
        except BlockingIOError:  # the kernel's rate limit: another write came less than 100 ms ago
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)
        except OSError:  # no autogroup, or the task has ended already
            return


NICE_PATIENCE = 2.0
"""Seconds a task's start waits at most for the kernel to take its autogroup's niceness (niced runs only)."""


class WalltimeExceeded(Exception):
    """The task was still running when its walltime ran out, and its whole process group was killed."""


def wait(pid: int, timeout: float | None) -> int:
    """Wait for the task ``pid`` and every process it left in its group; its return code (-N: signal N).

    A task ends when its last process does, as in Merlin: a command that starts a process in the background
    and exits is done once that process is (its output is written before the done-marker), so nothing of a
    task outlives it. A process that leaves the group (``setsid``) is no longer the task's.

    Raises:
        WalltimeExceeded: ``timeout`` s passed first; the group was killed (SIGKILL) and the task reaped.
    """
    global _current, _popen
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        try:
            code = _wait(pid, timeout)
            _wait_for_group(pid, deadline)
            return code
        except subprocess.TimeoutExpired:
            terminate_current(signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # reaped already when the background outlasted it
                _wait(pid, None)
            raise WalltimeExceeded(timeout) from None
    finally:
        _current = _popen = None
        if _watcher is not None:
            _watcher(0)


def _wait_for_group(pgid: int, deadline: float | None) -> None:
    """Until no process of the task's group is left (most tasks leave none: one ``killpg`` answers ESRCH)."""
    delay = 0.001
    while _group_alive(pgid):
        if deadline is not None and time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(str(pgid), 0)
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _wait(pid: int, timeout: float | None) -> int:
    if _popen is not None:
        return _popen.wait(timeout)
    if timeout is None:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    deadline, delay = time.monotonic() + timeout, 0.0005
    while True:  # as subprocess waits with a timeout: poll, sleeping a little longer each time
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired(str(pid), timeout)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
