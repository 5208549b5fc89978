"""Run the real `merlin-mdm` command in a subprocess, with the distributed commands wired in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import REPO

# The lead wires these into merlin_mdm.cli.main; adding them here when missing keeps the tests independent.
_ENTRY = """
import sys
from merlin_mdm.cli import distributed as d
from merlin_mdm.cli.main import cli, main
for cmd in (d.run_workers, d.queue_info, d.query_workers, d.stop_workers, d.purge, d.monitor, d.info, d.server):
    if cmd.name not in cli.commands:
        cli.add_command(cmd)
main(sys.argv[1:])
"""


def merlin(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`merlin-mdm ARGS` with captured output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", _ENTRY, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, input=stdin, check=False)
