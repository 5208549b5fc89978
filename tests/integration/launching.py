"""Shared by the `launch` tests: the CLI in a subprocess and a samples study with a funnel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.integration.conftest import REPO


def merlin(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`merlin-mdm ARGS` from this checkout, output captured."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "merlin_mdm.cli.main", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def samples_study(path: Path, name: str, batch: str, worker: str, n: int, work: str, funnel: str) -> Path:
    """Write a study of ``n`` samples (column V) whose step `work` runs ``work`` (a YAML run mapping body)
    and whose funnel runs ``funnel``, served by one worker group ``worker`` (a YAML mapping body)."""
    path.write_text(textwrap.dedent(f"""
        description: {{name: {name}, description: samples and a funnel}}
        batch: {batch}
        env: {{variables: {{OUTPUT_PATH: ./out, N: {n}}}}}
        merlin:
          samples:
            generate: {{cmd: "python3 -c \\"import numpy as np; np.save('s.npy', np.arange($(N)).reshape(-1, 1))\\""}}
            file: $(MERLIN_INFO)/s.npy
            column_labels: [V]
          resources:
            workers:
              {worker}
        study:
          - name: work
            description: one task per sample
            run: {{{work}}}
          - name: funnel
            description: after every sample
            run: {{cmd: "{funnel}", depends: [work]}}
    """), encoding="utf-8")
    return path
