"""The one place that starts subprocesses for control purposes (batch systems, servers, probes).

Task commands themselves are started by :mod:`merlin_mdm.backends.execution`, which needs file
redirection and process groups; everything else goes through :func:`run` so tests can substitute it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
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
) -> ShellResult:
    """Run ``cmd`` (no shell), capture its output and return its exit code.

    A command that cannot be found yields rc 127; one that runs past ``timeout`` yields rc 124.
    """
    try:
        proc = subprocess.run(
            list(cmd),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        return ShellResult(127, "", str(exc))
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return ShellResult(124, out, f"timed out after {timeout} s")
    return ShellResult(proc.returncode, proc.stdout, proc.stderr)
