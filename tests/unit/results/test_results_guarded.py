"""Reading metrics files with a deadline per file: a file that makes the HDF5 library loop (or crash) is a
`corrupt` problem, and the files after it are still read (soft fail: one bad file never stops the collector)."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from merlin_mdm.results import guarded
from merlin_mdm.results.aggregate import aggregate, default_outputs
from merlin_mdm.results.collect import Problem, discover
from tests.processes import process_alive

from .conftest import MakeRun

DATA = Path(__file__).parents[2] / "data" / "hdf5"


def test_a_file_the_hdf5_library_loops_on_is_reported_and_the_rest_aggregated(
        tmp_path: Path, make_run: MakeRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real damaged metrics file (a run of zeroed bytes in its attribute heap, found by fuzzing an
    evaluation file): reading it with h5py 3.16 / HDF5 2.0 loops for ever, and neither SIGTERM nor Ctrl-C
    stops the loop. Whatever a later HDF5 does with it, it must come out as a problem, never hang."""
    root = tmp_path / "study"
    for seed in (0, 1):
        make_run(root / "eval" / f"good.{seed}" / "metrics.h5", seed=seed)
    (root / "eval" / "damaged").mkdir(parents=True)
    damaged = root / "eval" / "damaged" / "metrics.h5"
    with gzip.open(DATA / "metrics_loops_hdf5.h5.gz") as src, open(damaged, "wb") as dst:
        shutil.copyfileobj(src, dst)
    monkeypatch.setenv("MERLIN_MDM_READ_DEADLINE", "5")
    report = aggregate(root, default_outputs(tmp_path / "out" / "results.h5"), progress=False)
    assert report is not None and report.n_files == 3
    assert [(p.path, p.kind) for p in report.failures] == [("eval/damaged/metrics.h5", "corrupt")]


def test_a_stuck_or_crashed_read_is_a_problem_and_reading_goes_on(
        tmp_path: Path, make_run: MakeRun, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c", "d"):
        make_run(tmp_path / name / "metrics.h5")
    discovery = discover(tmp_path)
    read = guarded.load_run

    def flaky(path: Path, shown: str) -> object:  # runs in the forked reader
        if shown.startswith("b/"):
            while True:  # as the HDF5 library does on the damaged file: no return
                pass
        if shown.startswith("c/"):
            os._exit(139)  # as a crash inside the library
        return read(path, shown)

    monkeypatch.setattr(guarded, "load_run", flaky)
    ticks: list[int] = []
    out = guarded.load_guarded(discovery, discovery.files, lambda: ticks.append(1), deadline=1.0)
    assert [row.kind if isinstance(row, Problem) else row["path"] for row in out] == [
        "a/metrics.h5", "corrupt", "corrupt", "d/metrics.h5"]
    problems = [row for row in out if isinstance(row, Problem)]
    assert "did not end within 1 s" in problems[0].message and "crashed" in problems[1].message
    assert len(ticks) == 4  # progress advances once per file, read or not


@pytest.mark.parametrize(("value", "expected"), [("", 300.0), ("12.5", 12.5), ("0", 300.0), ("soon", 300.0)])
def test_the_deadline_comes_from_the_environment(value: str, expected: float,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERLIN_MDM_READ_DEADLINE", value)
    assert guarded.read_deadline() == expected


def test_compare_names_a_file_the_hdf5_library_loops_on_instead_of_hanging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from merlin_mdm.cli.main import cli

    with gzip.open(DATA / "metrics_loops_hdf5.h5.gz") as src, open(tmp_path / "damaged.h5", "wb") as dst:
        shutil.copyfileobj(src, dst)
    monkeypatch.setenv("MERLIN_MDM_READ_DEADLINE", "3")
    damaged = tmp_path / "damaged.h5"
    result = CliRunner().invoke(cli, ["compare", f"A={damaged}", f"B={damaged}"])
    assert result.exit_code == 1, result
    assert f"{tmp_path / 'damaged.h5'}: reading it did not end within 3 s" in result.output, result.output


def _read_in_a_child(discovery: object, stderr: Path) -> None:
    """An aggregation's process (as `merlin-mdm aggregate` runs it: stop signals watched) reading the files."""
    import sys

    from merlin_mdm.signals import watch_signals

    sys.stderr = open(stderr, "w", buffering=1)  # noqa: SIM115 - the process ends with it
    os.dup2(sys.stderr.fileno(), 2)
    with watch_signals():
        guarded.load_guarded(discovery, discovery.files, deadline=60)  # type: ignore[attr-defined]



@pytest.mark.parametrize("stop", ["kill the aggregation", "terminate the reader"])
def test_the_reader_dies_with_its_parent_and_never_prints_a_traceback(
        tmp_path: Path, make_run: MakeRun, monkeypatch: pytest.MonkeyPatch, stop: str) -> None:
    """An MPI rank killed mid-read left its reader child orphaned, blocked on the pipe, holding the rank's output
    open (so mpiexec waited for ever); the SIGTERM that finally reached it printed a traceback: an outside probe."""
    import multiprocessing
    import signal
    import time

    make_run(tmp_path / "runs" / "a" / "metrics.h5")
    discovery = discover(tmp_path / "runs")
    pid_file = tmp_path / "reader.pid"

    def slow(path: Path, shown: str) -> object:  # runs in the reader: a file on a slow file system
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)
        return None

    monkeypatch.setattr(guarded, "load_run", slow)
    parent = multiprocessing.get_context("fork").Process(target=_read_in_a_child, args=(discovery, tmp_path / "err"))
    parent.start()
    deadline = time.monotonic() + 30
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the reader never started"
        time.sleep(0.05)
    reader = int(pid_file.read_text())
    try:
        if stop == "kill the aggregation":
            os.kill(parent.pid, signal.SIGKILL)  # type: ignore[arg-type]
        else:
            os.kill(reader, signal.SIGTERM)
        parent.join(30)
        gone = time.monotonic() + 5
        while process_alive(reader) and time.monotonic() < gone:
            time.sleep(0.05)
        assert not process_alive(reader), "the reader outlived the aggregation"
    finally:
        if process_alive(reader):
            os.kill(reader, signal.SIGKILL)
        if parent.is_alive():
            parent.kill()
    assert "Traceback" not in (tmp_path / "err").read_text()
