"""`merlin-mdm aggregate --mpi` under a real mpiexec with 2 ranks equals the serial aggregation byte for byte."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

import merlin_mdm
from merlin_mdm import _shell
from merlin_mdm.results.aggregate import aggregate, default_outputs
from merlin_mdm.results.metrics import summarize, write_metrics
from tests.processes import process_alive

pytestmark = pytest.mark.mpi

REPO = Path(merlin_mdm.__file__).resolve().parent.parent


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec next to the Python interpreter or on PATH (pip install 'merlin-mdm[mpi]')")
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install 'merlin-mdm[mpi]')")
    return found


def _launch(*args: str, ranks: int = 2) -> _shell.ShellResult:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "merlin_mdm.cli.aggregate", *args]
    return _shell.run(cmd, timeout=120, env=env)


def _study(root: Path, runs: int = 25, rng_seed: int = 7) -> Path:
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    for index in range(runs):
        sampler, steps, seed = ("iid", "top_prob", "eb")[index % 3], 2 + index % 4, index // 12
        run_dir = root / "eval" / f"SAMPLER.{sampler}.SEED.{seed}.STEPS.{steps}.{index:03d}"
        run_dir.mkdir(parents=True)
        correct, nfe = rng.random(16) < 0.6, rng.integers(1, steps + 1, 16)
        attrs = {"task": "blocks", "sampler": sampler, "steps": steps, "seed": seed, **summarize(correct, nfe)}
        if sampler == "eb":
            attrs["sampler.gamma"] = 0.5
        write_metrics(run_dir / "metrics.h5", attrs, {"correct": correct, "nfe": nfe, "wall_time": rng.random(16)})
    (root / "eval" / "SAMPLER.iid.SEED.9.STEPS.2.999").mkdir()  # a lost run
    (root / "eval" / "SAMPLER.iid.SEED.0.STEPS.2.000" / "metrics.h5").write_text("corrupted")
    return root


def test_two_ranks_write_the_same_bytes_as_serial(tmp_path: Path) -> None:
    study = _study(tmp_path / "ws")
    serial = aggregate(study, default_outputs(tmp_path / "serial" / "results.h5"), progress=False)
    assert serial is not None and serial.table.n_rows == 24 and len(serial.table.problems) == 2
    result = _launch(str(study), "--out", str(tmp_path / "mpi" / "results.h5"), "--mpi")
    assert result.rc == 0, result.stderr
    assert result.stdout.count("Aggregated 24 runs") == 1  # rank 0 alone reports
    for suffix in (".h5", ".csv", ".md", ".png"):
        name = "results" + suffix
        assert (tmp_path / "mpi" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name


def test_more_ranks_than_files_and_nothing_usable(tmp_path: Path) -> None:
    study = _study(tmp_path / "ws", runs=1)  # one file, and it is corrupted
    result = _launch(str(study), "--out", str(tmp_path / "r.h5"), "--mpi", ranks=3)
    assert result.rc == 1
    assert result.stderr.count("Error: no usable metrics file") == 1
    assert not (tmp_path / "r.h5").exists()


def test_several_workspaces_under_mpi_match_serial(tmp_path: Path) -> None:
    first, second = _study(tmp_path / "ws1", runs=13), _study(tmp_path / "ws2", runs=12, rng_seed=8)
    serial = aggregate([first, second], default_outputs(tmp_path / "serial" / "results.h5"), progress=False)
    assert serial is not None and serial.table.n_rows == 23 and len(serial.table.problems) == 4
    result = _launch(str(first), str(second), "--out", str(tmp_path / "mpi" / "results.h5"), "--mpi", ranks=3)
    assert result.rc == 0, result.stderr
    assert result.stdout.count("Aggregated 23 runs") == 1
    for suffix in (".h5", ".csv", ".md", ".png"):
        name = "results" + suffix
        assert (tmp_path / "mpi" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name


_SLOW_RANK_1 = """
import os, sys, time
from merlin_mdm.results import guarded
marks, rank = sys.argv[1], os.environ.get("PMI_RANK", "0")
with open(os.path.join(marks, "rank." + rank), "w") as out:
    out.write(str(os.getpid()))
if rank == "1":
    def slow(path, shown):  # in rank 1's reader child: a file on a stalled file system
        with open(os.path.join(marks, "reader"), "w") as out:
            out.write(str(os.getpid()))
        time.sleep(300)
    guarded.load_run = slow
from merlin_mdm.cli.main import main
main(sys.argv[2:])
"""



def _pid(path: Path, deadline: float) -> int:
    import time

    while not path.is_file() or not path.read_text():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)
    return int(path.read_text())


def test_a_rank_killed_mid_read_ends_the_job_and_leaves_no_reader(tmp_path: Path) -> None:
    """SIGKILL of one rank while its reader child read a file: the job hung for ever (the orphaned reader kept the
    rank's output open) and the reader later printed a traceback: an outside probe."""
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor

    study, marks = _study(tmp_path / "ws", runs=6), tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-c", _SLOW_RANK_1, str(marks), "aggregate", str(study),
           "--out", str(tmp_path / "r.h5"), "--mpi"]
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(_shell.run, cmd, timeout=90, env=env)
        deadline = time.monotonic() + 60
        rank1, reader = _pid(marks / "rank.1", deadline), _pid(marks / "reader", deadline)
        os.kill(rank1, signal.SIGKILL)
        killed = time.monotonic()
        result = job.result()
    took = time.monotonic() - killed
    try:
        assert took < 30 and result.rc != 0, (took, result.rc, result.stderr)
        assert not process_alive(reader), "rank 1's reader outlived it"
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        assert not (tmp_path / "r.h5").exists()
    finally:
        if process_alive(reader):
            os.kill(reader, signal.SIGKILL)
