"""A task dies with the process that started it (a Celery pool process, a local runner's worker), at no cost
per task.

A redelivered unit must never race a task that its dead worker left running. The kernel's parent-death
signal (``PR_SET_PDEATHSIG``) does that per process, but it has to be set in the task's child before exec:
through ``setpriv`` (one more exec per task, about 1.1 ms of CPU: 11 s per 10,000 null tasks, the whole gap
between the Celery and the local backend) or through a preexec function (a full fork of the pool process
instead of vfork).

Instead each pool process starts one guard process, once, and tells it over a pipe the process group of the
task it runs now (0 when none; a task runs in its own session, so its group is its pid). The guard is a
shell in its own session: a signal to the worker's process group does not reach it. When the pool process
ends, however it ends (even SIGKILL), the kernel closes its end of the pipe; the guard then SIGKILLs the last
group it was told and exits. A pool process stopped while waiting for its task (billiard turns SIGTERM into
SystemExit) is told 0 as the wait unwinds while the task still exists, so the guard keeps that group.

The guard is started before the unit's first task (:meth:`TaskGuard.start`), so a task's notice is one
write. Not covered: a pool process killed in the few microseconds between its task's exec and that write
leaves that task running. (Started lazily on the first notice instead, the guard's own fork and exec, a few
milliseconds, fell inside that window: a worker SIGKILLed then left its first task running beside the
redelivered copy.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess

__all__ = ["GUARD_SCRIPT", "TaskGuard", "task_guard"]

GUARD_SCRIPT = 'g=0; while read -r n; do g=$n; done; [ "$g" -gt 0 ] 2>/dev/null && kill -s KILL -- "-$g"'


class TaskGuard:
    """The guard of this process: call it with each task's process group as it starts, and 0 at its end.

    It fits :func:`merlin_mdm.backends.execution.watch_tasks`.
    """

    def __init__(self) -> None:
        self.owner = 0  # the pid whose guard ``proc`` is (a forked child needs its own)
        self.proc: subprocess.Popen[bytes] | None = None
        self.group = 0  # the group the guard was last told

    def __call__(self, group: int) -> None:
        if group == 0 and self.group and _exists(self.group):
            return  # the wait was interrupted (the pool process is being stopped): the task dies with it
        self.group = group
        for _ in range(2):  # a guard that died (someone killed it) is replaced once
            proc = self._guard()
            try:
                os.write(proc.stdin.fileno(), b"%d\n" % group)  # type: ignore[union-attr]
                return
            except OSError:
                self._drop()

    def start(self) -> None:
        """Start the guard now, if this process has none running, so that telling it of a task is one write."""
        if self.proc is not None and self.owner == os.getpid() and self.proc.poll() is not None:
            self._drop()  # someone killed it
        self._guard()

    def _guard(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.owner != os.getpid():
            self.owner = os.getpid()
            # Its stdin is the read end of a pipe whose write end only this process holds (close-on-exec,
            # so tasks do not inherit it).
            self.proc = subprocess.Popen(["/bin/sh", "-c", GUARD_SCRIPT], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
        return self.proc

    def _drop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)

    def close(self) -> None:
        """End the guard, leaving the last task alone (for a process that stops guarding)."""
        if self.proc is not None and self.owner == os.getpid():
            self.group = 0
            with contextlib.suppress(OSError):
                os.write(self.proc.stdin.fileno(), b"0\n")  # type: ignore[union-attr]
            self._drop()


def _exists(group: int) -> bool:
    """Whether any process of the task's group is left: the group, not its leader (a task whose shell has exited
    while a process it started in the background runs on is still running; asking for the leader's pid let the
    guard forget it, and that process outlived a stopped worker beside the redelivered copy of its task)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_guard = TaskGuard()


def task_guard() -> TaskGuard:
    """The guard of the calling process (started on its first task)."""
    return _guard
