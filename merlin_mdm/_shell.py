"""The one place that starts subprocesses for control purposes (batch systems, servers, probes).

Task commands themselves are started by :mod:`merlin_mdm.backends.execution`, which needs file
redirection and process groups; everything else goes through :func:`run` so tests can substitute it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ShellResult", "run"]


@dataclass(frozen=True)
class ShellResult:
    """What a finished command left behind."""

    rc: int
    stdout: str
    stderr: str


def run(
    cmd: Sequence[str],
    timeout: float | None = 60.0,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    cwd: str | None = None,
    watch: Callable[[int], None] | None = None,
) -> ShellResult:
    """Run ``cmd`` (no shell), capture its output and return its exit code.

    A command that cannot be found yields rc 127; one that runs past ``timeout`` yields rc 124. The command
    runs in a process group of its own, which is killed whole when it times out or when the caller is
    interrupted (a signal, Ctrl-C): nothing it started outlives the call. ``watch`` is told the group when it
    starts and 0 when it is gone: a task guard that kills it should the caller be SIGKILLed.
    """
    try:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE if stdin is not None else None,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
    except FileNotFoundError as exc:
        return ShellResult(127, "", str(exc))
    if watch is not None:
        watch(proc.pid)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        out, _ = _kill_group(proc)
        return ShellResult(124, out, f"timed out after {timeout} s")
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        if watch is not None:
            watch(0)
    return ShellResult(proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> tuple[str, str]:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    return out or "", err or ""
