"""Helpers for end-to-end runs of the real `merlin-mdm` command with the local backend."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "merlin_mdm.cli.main"]


def merlin(*args: str, cwd: Path, timeout: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run merlin-mdm in a subprocess, capturing output."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)


def workspace_of(result: subprocess.CompletedProcess[str]) -> Path:
    """The workspace path printed by run/restart."""
    for line in result.stderr.splitlines():
        if line.startswith("workspace: "):
            return Path(line.split(": ", 1)[1])
    raise AssertionError(f"no workspace line in:\n{result.stderr}")


def status_json(ws: Path) -> dict[str, Any]:
    """`merlin-mdm status --json` parsed."""
    out = merlin("status", str(ws), "--json", cwd=ws)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def counts(ws: Path) -> dict[str, dict[str, int]]:
    """Task counts by step and state."""
    return {s["step"]: {k: v for k, v in s["counts"].items() if v} for s in status_json(ws)["steps"]}


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a spec (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write
