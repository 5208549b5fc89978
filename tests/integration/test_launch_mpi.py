"""An MPI step for real without a scheduler: `$(LAUNCHER)` with `batch.launcher: mpiexec` and `procs: 2`
runs an mpi4py program on 2 ranks through pip MPICH's mpiexec."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.integration.launching import merlin

pytestmark = [pytest.mark.mpi]


def test_an_mpi_step_runs_two_ranks_through_mpiexec(tmp_path: Path) -> None:
    pytest.importorskip("mpi4py", reason="pip install mpi4py mpich")
    bin_dir = str(Path(sys.executable).parent)
    if shutil.which("mpiexec", path=bin_dir + os.pathsep + os.environ["PATH"]) is None:
        pytest.skip("no mpiexec (pip install mpich)")
    (tmp_path / "mpi_hello.py").write_text(
        "from mpi4py import MPI\nc = MPI.COMM_WORLD\n"
        "open(f'rank{c.Get_rank()}.txt', 'w').write(f'rank {c.Get_rank()} of {c.Get_size()}')\n")
    (tmp_path / "mpi.yaml").write_text(f"""
description: {{name: mpi, description: two ranks}}
batch: {{type: local, launcher: mpiexec}}
env: {{variables: {{OUTPUT_PATH: ./out}}}}
study:
  - name: ranks
    description: an MPI program
    run: {{cmd: "echo $(LAUNCHER) > line.txt; $(LAUNCHER) {sys.executable} $(SPECROOT)/mpi_hello.py",
          nodes: 1, procs: 2, cores per task: 1}}
""")
    env = {"PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    result = merlin("run", "mpi.yaml", "--local", "--no-progress", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    [step_dir] = (tmp_path / "out").glob("mpi_*/ranks")
    assert (step_dir / "line.txt").read_text().strip() == "mpiexec -n 2 -ppn 2 -bind-to core:1"
    assert sorted(p.read_text() for p in step_dir.glob("rank*.txt")) == ["rank 0 of 2", "rank 1 of 2"]
