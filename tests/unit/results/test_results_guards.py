"""What an outside probe of `merlin-mdm aggregate` broke: outputs written over inputs, runs lost without a word
(linked or unlisted folders, unreadable or busy files), runs at two temperatures averaged as one line, outputs of
two aggregations mixed, a confusing message and a warning that named the library's line."""

from __future__ import annotations

import errno
import fcntl
import multiprocessing
import os
import signal
import warnings
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

import merlin_mdm.results
from merlin_mdm.cli.aggregate import aggregate_command
from merlin_mdm.errors import Interrupted, ResultsError, UsageError
from merlin_mdm.results import aggregate as aggregate_module
from merlin_mdm.results import frames, metrics, tables
from merlin_mdm.results.aggregate import aggregate, default_outputs
from merlin_mdm.results.collect import discover
from merlin_mdm.results.metrics import read_metrics
from merlin_mdm.results.results_file import read_results
from merlin_mdm.signals import watch_signals

from .conftest import MakeRun

OUTPUTS = ("r.h5", "r.csv", "r.md", "r.png", "r.svg")


def _two_runs(folder: Path, make_run: MakeRun) -> list[Path]:
    return [make_run(folder / f"run{seed}.h5", seed=seed) for seed in (0, 1)]


# 1. An output never replaces an input.

@pytest.mark.parametrize("option", ["--out", "--csv", "--markdown", "--plot"])
def test_an_output_naming_an_input_is_refused_and_nothing_written(tmp_path: Path, make_run: MakeRun,
                                                                  option: str) -> None:
    first, _ = _two_runs(tmp_path / "g", make_run)
    before = first.read_bytes()
    args = [str(tmp_path / "g"), "--out", str(tmp_path / "o" / "r.h5"), option, str(first)]
    if option == "--out":
        args = [str(tmp_path / "g"), "--out", str(first)]
    result = CliRunner().invoke(aggregate_command, args)
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2, result.output
    message = str(result.exception)
    assert "\n" not in message and str(first) in message and option in message and "another path" in message
    assert first.read_bytes() == before and read_metrics(first).n_examples == 8
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["run0.h5", "run1.h5"]  # nothing written
    assert not (tmp_path / "o" / "r.h5").exists()


@pytest.mark.parametrize("args", [["--csv", "R.h5"], ["--markdown", "R.csv"], ["--plot", "x.png", "--csv", "x.svg"]])
def test_two_outputs_naming_one_file_are_refused_and_nothing_written(tmp_path: Path, make_run: MakeRun,
                                                                     args: list[str]) -> None:
    """`--csv r.h5` wrote the CSV over the results file, and exit 0 (an outside probe)."""
    _two_runs(tmp_path / "g", make_run)
    named = [str(tmp_path / a) if a[0] != "-" else a for a in args]
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--out", str(tmp_path / "R.h5"), *named])
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2, result.output
    assert "name the same file, and one would replace the other" in str(result.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_an_empty_output_name_is_a_usage_error(tmp_path: Path, make_run: MakeRun) -> None:
    _two_runs(tmp_path / "g", make_run)
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--out", ""])
    assert result.exit_code == 2 and "'' is empty: name a path" in result.output, result.output
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--csv", "."])
    assert result.exit_code == 2 and "'.' is a directory" in result.output, result.output


def test_a_metrics_file_outside_the_sources_is_not_replaced(tmp_path: Path, make_run: MakeRun) -> None:
    _two_runs(tmp_path / "g", make_run)
    other = make_run(tmp_path / "elsewhere" / "keep.h5", seed=5)
    before = other.read_bytes()
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "g" / "*.h5"), "--out", str(tmp_path / "r.h5"),
                                                    "--markdown", str(other)])
    assert isinstance(result.exception, UsageError) and "per-run metrics file" in str(result.exception)
    assert other.read_bytes() == before and not (tmp_path / "r.h5").exists()


def test_earlier_outputs_are_still_replaced_and_never_read(tmp_path: Path, make_run: MakeRun) -> None:
    _two_runs(tmp_path / "g", make_run)
    replaced = []
    for source in (str(tmp_path / "g"), str(tmp_path / "g" / "*")):  # the glob reaches r.csv, r.md, r.png ...
        report = aggregate(source, default_outputs(tmp_path / "g" / "r.h5"), progress=False)
        assert report is not None and report.table.n_rows == 2 and report.table.problems == ()
        replaced.append(report.replaced_runs)
    assert replaced == [None, 2]  # the second says what it wrote over


def test_replacing_an_earlier_results_file_is_said(tmp_path: Path, make_run: MakeRun) -> None:
    """`aggregate --out r.h5` wrote over an earlier results file without a word (an outside probe)."""
    runs = _two_runs(tmp_path / "g", make_run)
    args = [str(runs[0]), "--out", str(tmp_path / "r.h5")]
    first = CliRunner().invoke(aggregate_command, args)
    assert first.exit_code == 0 and "replaced" not in first.output, first.output
    again = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--out", str(tmp_path / "r.h5")])
    assert again.exit_code == 0 and "it replaced the earlier results file there (1 runs)" in again.output, again.output
    as_json = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--out", str(tmp_path / "r.h5"), "--json"])
    assert as_json.exit_code == 0 and '"replaced_runs": 2' in as_json.output, as_json.output


# 8. The output as the only source.

def test_aggregating_a_results_file_into_itself_says_so(tmp_path: Path, make_run: MakeRun) -> None:
    _two_runs(tmp_path / "g", make_run)
    aggregate(str(tmp_path / "g"), default_outputs(tmp_path / "r.h5"), progress=False)
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "r.h5"), "--out", str(tmp_path / "r.h5")])
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert "the only file it names is an output of this aggregation" in str(result.exception)


def test_the_load_warning_names_the_callers_line(tmp_path: Path, make_run: MakeRun) -> None:
    _two_runs(tmp_path / "g", make_run)
    (tmp_path / "g" / "bad.h5").write_bytes(b"not hdf5")
    aggregate(str(tmp_path / "g"), default_outputs(tmp_path / "r.h5"), progress=False)
    for load in (merlin_mdm.results.load, frames.load):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load(tmp_path / "r.h5")
        assert [Path(w.filename).name for w in caught] == [Path(__file__).name]


# 3. Temperatures are never averaged as seeds.

def test_runs_at_two_temperatures_are_two_lines(tmp_path: Path, make_run: MakeRun) -> None:
    for seed in (0, 1):
        for temperature in (0.0, 1.0):
            make_run(tmp_path / "g" / f"t{temperature:g}.s{seed}.h5", seed=seed, temperature=temperature)
    report = aggregate(str(tmp_path / "g"), default_outputs(tmp_path / "r.h5"), progress=False)
    assert report is not None
    assert sorted((row.method, row.n_seeds) for row in report.summary) == [
        ("top_prob", 2), ("top_prob (temperature=0)", 2)]
    assert tables.method_label(
        {"sampler": "threshold", "sampler.tau": 0.9, "temperature": 0.5}) == "threshold (tau=0.9, temperature=0.5)"
    assert tables.method_label({"sampler": "iid", "temperature": 1.0}) == "iid"


# 4, 5. Linked and unlisted folders of a workspace.

def test_a_linked_run_folder_is_followed_and_a_link_loop_ends(tmp_path: Path, make_run: MakeRun) -> None:
    ws = tmp_path / "ws"
    for name in ("a", "b"):
        make_run(ws / "eval" / name / "metrics.h5")
    make_run(tmp_path / "ext" / "c" / "metrics.h5", seed=3)
    (ws / "eval" / "c").symlink_to(Path("..", "..", "ext", "c"))
    (ws / "eval" / "a" / "loop").symlink_to(Path(".."))  # eval/a/loop -> eval
    found = discover(ws)
    assert found.files == ("eval/a/metrics.h5", "eval/b/metrics.h5", "eval/c/metrics.h5")
    assert found.problems == ()


def test_a_folder_that_cannot_be_listed_is_an_unreadable_failure(tmp_path: Path, make_run: MakeRun,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    for name in ("a", "b", "c"):
        make_run(ws / "eval" / name / "metrics.h5", seed=ord(name))
    locked = ws / "eval" / "c"
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:  # as for a folder of mode 000 (the tests run as root)
        if os.fspath(path) == os.fspath(locked):  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(locked))  # type: ignore[arg-type]
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    report = aggregate(ws, default_outputs(tmp_path / "out" / "r.h5"), progress=False)
    assert report is not None and report.table.n_rows == 2
    assert [(p.path, p.kind) for p in report.failures] == [("eval/c", "unreadable")]
    assert "Permission denied" in report.failures[0].message
    stored = read_results(tmp_path / "out" / "r.h5")
    assert [(p.path, p.kind) for p in stored.table.problems] == [("eval/c", "unreadable")]


# 6. Unreadable and busy files.

def test_a_file_without_read_permission_is_unreadable(tmp_path: Path, make_run: MakeRun,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_run(tmp_path / "m.h5")
    real = metrics.open_h5

    def open_h5(src: object, mode: str = "r") -> h5py.File:  # what h5py raises for a file of mode 000
        if Path(src) == path:  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, f"Unable to synchronously open file (unable to open file: name = "
                                                f"'{path}', errno = 13, error message = 'Permission denied')")
        return real(src, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics, "open_h5", open_h5)
    with pytest.raises(metrics.MetricsFileError) as caught:
        read_metrics(path)
    assert caught.value.kind == "unreadable" and "permission" in caught.value.reason


def _hold_open_for_write(path: Path, ready: multiprocessing.synchronize.Event,
                         done: multiprocessing.synchronize.Event) -> None:
    with h5py.File(path, "w", libver="latest") as handle:  # an evaluation still writing its file in place
        handle.attrs["schema_version"] = 1
        handle.flush()
        ready.set()
        done.wait(30)


def test_a_file_another_process_is_writing_is_in_use(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    path = tmp_path / "busy.h5"
    holder = ctx.Process(target=_hold_open_for_write, args=(path, ready, done))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(metrics.MetricsFileError) as caught:
            read_metrics(path)
    finally:
        done.set()
        holder.join(30)
    assert caught.value.kind == "in_use", caught.value.reason
    assert "another process has it open for writing" in caught.value.reason
    assert "aggregate again when it has finished" in caught.value.reason


# 7. The outputs of one aggregation, whole, and one aggregation at a time.

def test_a_second_aggregate_to_the_same_out_is_refused_naming_the_first(tmp_path: Path, make_run: MakeRun) -> None:
    _two_runs(tmp_path / "g", make_run)
    fd = os.open(tmp_path / ".r.h5.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        result = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--out", str(tmp_path / "r.h5")])
    finally:
        os.close(fd)
    assert isinstance(result.exception, ResultsError) and result.exception.exit_code == 1, result.output
    assert "another aggregate (pid 4242) is writing it now" in str(result.exception)
    assert not (tmp_path / "r.h5").exists()
    again = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--out", str(tmp_path / "r.h5")])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g", *sorted(OUTPUTS)]  # the lock file is gone


def _outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def test_a_stop_while_writing_leaves_the_outputs_of_one_aggregation(tmp_path: Path, make_run: MakeRun,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _two_runs(tmp_path / "g", make_run)
    aggregate(str(tmp_path / "g"), default_outputs(tmp_path / "o" / "r.h5"), progress=False)
    before = _outputs(tmp_path / "o")
    make_run(tmp_path / "g" / "run2.h5", seed=2)

    def stopped(*args: object, **kwargs: object) -> None:  # SIGTERM after results.h5 and the CSV were written
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(aggregate_module, "plot_accuracy_vs_nfe", stopped)
    with pytest.raises(Interrupted):
        aggregate(str(tmp_path / "g"), default_outputs(tmp_path / "o" / "r.h5"), progress=False)
    assert _outputs(tmp_path / "o") == before
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(OUTPUTS)  # no temporary left


def test_a_signal_during_the_renames_waits_for_the_last(tmp_path: Path, make_run: MakeRun,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from merlin_mdm.results import outputs

    _two_runs(tmp_path / "g", make_run)
    real_replace = os.replace
    renamed: list[str] = []

    def replace(src: object, dst: object) -> None:
        if not renamed:  # arrives between the first rename and the others, through the other thread
            signal.pthread_kill(other.ident or 0, signal.SIGTERM)
        real_replace(src, dst)  # type: ignore[arg-type]
        renamed.append(Path(dst).name)  # type: ignore[arg-type]

    monkeypatch.setattr(outputs.os, "replace", replace)
    # another thread runs meanwhile (as in a test session, or a progress bar's): the process's signal goes to a
    # thread that does not block it, and a mask on this one held nothing back (the CI saw 2 of 5 renamed)
    import threading

    done = threading.Event()
    other = threading.Thread(target=done.wait, args=(30,), daemon=True)
    other.start()
    try:
        with watch_signals(), pytest.raises(Interrupted):
            aggregate(str(tmp_path / "g"), default_outputs(tmp_path / "o" / "r.h5"), progress=False)
    finally:
        done.set()
        other.join()
    assert sorted(renamed) == sorted(OUTPUTS)
    assert read_results(tmp_path / "o" / "r.h5").table.n_rows == 2


def test_a_plot_named_other_than_png_is_refused(tmp_path: Path, make_run: MakeRun) -> None:
    """`--plot fig.pdf` wrote PNG bytes into fig.pdf, and the report linked to it."""
    make_run(tmp_path / "g" / "a.h5")
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--out", str(tmp_path / "r.h5"),
                                                    "--plot", str(tmp_path / "fig.pdf")])
    assert isinstance(result.exception, UsageError) and "the figure is written as PNG" in str(result.exception)
    assert not (tmp_path / "fig.pdf").exists() and not (tmp_path / "r.h5").exists()
