"""Results files named as sources are read as the runs they hold: batches pool, and report again, without workspaces."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from merlin_mdm.errors import ResultsError
from merlin_mdm.results.aggregate import AggregateReport, aggregate, default_outputs
from merlin_mdm.results.matched import compare_per_seed
from merlin_mdm.results.results_file import ResultsFileError, read_results

from .conftest import write_run

N = 400


def _batch(root: Path, seeds: range, n: int = N) -> Path:
    """One batch of a study: per training seed a learned line (2 policy seeds) and two EB settings, n examples."""
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for policy_seed in (0, 1):
            write_run(root / "eval_priced" / f"S.{seed}.P.{policy_seed}" / "m.h5", "learned", 16, seed,
                      rng.random(n) < 0.9, rng.integers(3, 5, n), method="learned (T=16)",
                      **{"policy.seed": policy_seed})
        for gamma, rate, calls in ((0.1, 0.8, 3), (0.01, 0.88, 5)):
            write_run(root / "eval_front" / f"S.{seed}" / f"eb_{gamma}.h5", "eb", 16, seed, rng.random(n) < rate,
                      np.full(n, calls), **{"sampler.gamma": gamma})
    return root


def _report(sources: list[Path], out: Path) -> AggregateReport:
    report = aggregate([str(s) for s in sources], default_outputs(out, title="T", command="c"), progress=False)
    assert report is not None
    return report


def test_results_files_pool_to_the_report_their_metrics_files_give(tmp_path: Path) -> None:
    first, second = _batch(tmp_path / "b1", range(0, 3)), _batch(tmp_path / "b2", range(3, 5), n=N - 150)
    kept = [_report([first], tmp_path / "k1" / "r.h5").outputs.results,
            _report([second], tmp_path / "k2" / "r.h5").outputs.results]
    direct = _report([first, second], tmp_path / "direct" / "r.h5")
    again = _report(kept, tmp_path / "again" / "r.h5")  # the workspaces could be gone now
    assert again.table.n_rows == direct.table.n_rows == 5 * 4 and not again.table.problems
    assert again.summary == direct.summary
    assert compare_per_seed(again.table, again.summary) == compare_per_seed(direct.table, direct.summary)
    for name in ("correct", "nfe"):  # the second batch's runs are padded with -1 in the pool, and come back cut
        assert np.array_equal(again.table.examples[name], direct.table.examples[name])
    assert sorted(set(again.table.column("n_examples").values)) == [N - 150, N]
    paths = list(again.table.column("path").values)
    assert paths[0] == f"{kept[0]}:eval_front/S.0/eb_0.01.h5" and paths[-1].startswith(f"{kept[1]}:eval_priced/")
    assert (tmp_path / "again" / "r.md").read_text() == (tmp_path / "direct" / "r.md").read_text()


def test_a_run_in_a_results_file_and_its_metrics_file_counts_once(tmp_path: Path) -> None:
    first, second = _batch(tmp_path / "b1", range(0, 2)), _batch(tmp_path / "b2", range(2, 3), n=N - 150)
    kept = _report([first, second], tmp_path / "k1" / "r.h5").outputs.results  # the shorter runs padded in it
    both = _report([first, second, kept], tmp_path / "both" / "r.h5")
    assert both.table.n_rows == 3 * 4
    duplicates = [p for p in both.table.problems if p.kind == "duplicate"]
    assert len(duplicates) == 3 * 4 and all(p.path.startswith(f"{kept}:") for p in duplicates)
    assert not both.failures


def test_a_results_file_lists_its_problems_again(workspace: Path, tmp_path: Path) -> None:
    kept = _report([workspace], tmp_path / "k" / "r.h5")
    again = _report([kept.outputs.results], tmp_path / "again" / "r.h5")
    assert again.summary == kept.summary
    assert ({(p.path, p.kind) for p in again.failures}
            == {(f"{kept.outputs.results}:{p.path}", p.kind) for p in kept.failures})
    assert {p.kind for p in again.failures} == {"missing", "corrupt", "truncated", "incomplete"}


def test_a_results_file_inside_a_workspace_is_not_read_as_runs(tmp_path: Path) -> None:
    first = _batch(tmp_path / "b1", range(0, 2))
    _report([first], first / "aggregate" / "results.h5")  # the study's own aggregate step
    walked = _report([first], tmp_path / "w" / "r.h5")
    assert walked.table.n_rows == 2 * 4
    assert [(p.path, p.kind) for p in walked.table.problems] == [("aggregate/results.h5", "results_file")]


def test_a_results_file_reached_by_a_glob_is_not_read_as_runs(tmp_path: Path) -> None:
    _report([_batch(tmp_path / "b1", range(0, 2))], tmp_path / "k1" / "r.h5")
    with pytest.raises(ResultsError, match=r"k1/r\.h5: results_file"):  # a glob could reach a stale report
        _report([tmp_path / "k*" / "r.h5"], tmp_path / "again" / "r.h5")
    named = _report([tmp_path / "k1" / "r.h5", tmp_path / "k1" / ".." / "k1" / "r.h5"], tmp_path / "two" / "r.h5")
    assert named.table.n_rows == 2 * 4 and not named.table.problems  # one file named twice is read once


def test_an_unreadable_results_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    kept = _report([_batch(tmp_path / "b1", range(0, 2))], tmp_path / "k" / "r.h5").outputs.results
    with h5py.File(kept, "a") as handle:
        handle.attrs["results_schema_version"] = 1
    with pytest.raises(ResultsError, match=r"r\.h5: unsupported_version: results_schema_version 1 is not supported"):
        _report([kept], tmp_path / "again" / "r.h5")
    mixed = _report([kept, _batch(tmp_path / "b2", range(2, 3))], tmp_path / "mixed" / "r.h5")
    assert mixed.table.n_rows == 4 and [p.kind for p in mixed.failures] == ["unsupported_version"]


@pytest.mark.parametrize(("spoil", "kind", "reason"), [
    ("version", "unsupported_version", "results_schema_version 1 is not supported"),
    ("kind", "corrupt", "not a merlin-mdm results file"),
    ("truncate", "corrupt", "cannot read the results file"),
])
def test_a_spoiled_results_file_is_named_by_its_kind(tmp_path: Path, spoil: str, kind: str, reason: str) -> None:
    kept = _report([_batch(tmp_path / "b1", range(0, 2))], tmp_path / "k" / "r.h5").outputs.results
    if spoil == "truncate":
        data = kept.read_bytes()
        kept.write_bytes(data[: len(data) // 2])
    else:
        with h5py.File(kept, "a") as handle:
            handle.attrs["results_schema_version" if spoil == "version" else "file_kind"] = 1
    with pytest.raises(ResultsFileError) as caught:
        read_results(kept)
    assert (caught.value.kind, caught.value.path) == (kind, kept) and caught.value.reason.startswith(reason)
    assert str(caught.value) == f"{kept}: {caught.value.reason}"
