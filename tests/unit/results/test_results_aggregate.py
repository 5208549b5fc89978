"""Aggregation: discovery, problems never dropped, typed columns, the results file, CSV, Table 1, the plot."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from merlin_mdm.cli.aggregate import aggregate_command
from merlin_mdm.errors import ResultsError, UsageError
from merlin_mdm.results.aggregate import aggregate, default_outputs
from merlin_mdm.results.collect import Problem, discover
from merlin_mdm.results.metrics import RESULTS_FILE_KIND
from merlin_mdm.results.mpi_gather import shard
from merlin_mdm.results.results_file import read_results
from merlin_mdm.results.tables import LEADING_COLUMNS, build_table, method_label, split_duplicates, task_label

from .conftest import MakeRun

BAD = {
    "eval/SAMPLER.iid.SEED.0.STEPS.2/metrics.h5": "missing",
    "eval/SAMPLER.iid.SEED.1.STEPS.2/metrics.h5": "corrupt",
    "eval/SAMPLER.iid.SEED.0.STEPS.4/metrics.h5": "truncated",
    "eval/SAMPLER.iid.SEED.1.STEPS.4/.metrics.h5.4242.deadbeef.tmp": "incomplete",
    "train/weights.h5": "not_metrics",
}


def _run(workspace: Path, tmp_path: Path) -> Any:
    report = aggregate(workspace, default_outputs(tmp_path / "out" / "results.h5"), progress=False)
    assert report is not None
    return report


def test_every_bad_file_is_listed_and_good_runs_kept(workspace: Path, tmp_path: Path) -> None:
    report = _run(workspace, tmp_path)
    assert report.table.n_rows == 8
    assert {p.path: p.kind for p in report.table.problems} == BAD
    assert {p.kind for p in report.failures} == {"missing", "corrupt", "truncated", "incomplete"}
    assert report.n_files == 8 + len(BAD)
    stored = read_results(report.outputs.results)
    assert {p.path: p.kind for p in stored.table.problems} == BAD
    assert stored.attrs["n_problems"] == len(BAD) and stored.attrs["n_runs"] == 8
    assert stored.attrs["file_kind"] == RESULTS_FILE_KIND


def test_a_step_folder_finds_its_missing_runs_too(workspace: Path, tmp_path: Path) -> None:
    report = aggregate(workspace / "eval", default_outputs(tmp_path / "out" / "results.h5"), progress=False)
    assert report is not None and report.table.n_rows == 8
    assert {p.path: p.kind for p in report.table.problems} == {
        path.removeprefix("eval/"): kind for path, kind in BAD.items() if path.startswith("eval/")}
    plain = tmp_path / "collected"  # a folder of the user's own: only <group>/<run>/<file> siblings count
    shutil.copytree(workspace / "eval", plain / "eval")
    assert {p.kind for p in discover(plain / "eval").problems} == set()
    assert {p.path for p in discover(plain).problems} == {"eval/SAMPLER.iid.SEED.0.STEPS.2/metrics.h5"}


def test_results_file_has_typed_columns_and_missing_masks(workspace: Path, tmp_path: Path) -> None:
    stored = read_results(_run(workspace, tmp_path).outputs.results)
    table = stored.table
    names = [column.name for column in table.columns]
    assert names[: len(LEADING_COLUMNS)] == list(LEADING_COLUMNS)
    kinds = {column.name: column.kind for column in table.columns}
    assert kinds["steps"] == kinds["seed"] == kinds["min_nfe"] == kinds["n_examples"] == "int"
    assert kinds["accuracy"] == kinds["mean_nfe"] == "float"
    assert kinds["sampler"] == kinds["path"] == "str"
    assert table.column("steps").values.dtype == np.int64
    tau = table.column("sampler.tau")
    assert tau.missing is not None
    samplers = table.column("sampler").values
    np.testing.assert_array_equal(tau.missing, samplers == "top_prob")
    assert np.isnan(tau.values[tau.missing]).all() and (tau.values[~tau.missing] == 0.9).all()
    paths = list(table.column("path").values)
    assert paths == sorted(paths) and all(not p.startswith("/") for p in paths)
    assert table.rows()[0]["path"] == paths[0]


def test_glob_source_and_the_results_file_itself(workspace: Path, tmp_path: Path) -> None:
    out = workspace / "results.h5"
    first = aggregate(str(workspace / "eval" / "*" / "*.h5"), default_outputs(out), progress=False)
    assert first is not None and first.table.n_rows == 8
    assert {p.kind for p in first.table.problems} == {"corrupt", "truncated"}  # a glob knows nothing missing
    again = aggregate(workspace, default_outputs(out), progress=False)  # the output is not read as input
    assert again is not None and all(p.path != "results.h5" for p in again.table.problems)
    other = aggregate(workspace, default_outputs(tmp_path / "elsewhere.h5"), progress=False)
    assert other is not None
    assert [p.kind for p in other.table.problems if p.path == "results.h5"] == ["results_file"]


def test_nothing_matching_and_nothing_usable_are_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="matches no file") as nothing:  # a path the user mistyped: exit 2
        discover(str(tmp_path / "*.h5"))
    assert nothing.value.exit_code == 2
    (tmp_path / "a.h5").write_text("junk")
    with pytest.raises(ResultsError, match=r"no usable metrics file.*\n.*a.h5: corrupt"):
        aggregate(str(tmp_path / "*.h5"), default_outputs(tmp_path / "r.h5"), progress=False)
    assert not (tmp_path / "r.h5").exists()


def test_markdown_has_the_shape_of_table_1(workspace: Path, tmp_path: Path) -> None:
    text = _run(workspace, tmp_path).outputs.markdown.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# Results"
    start = lines.index("## blocks (bl=4, nb=4)")
    assert lines[start + 2] == "| method | T | NFE @Avg | NFE @Max | accuracy (%) | 95% CI | seeds |"
    body = [line for line in lines[start + 4 :] if line.startswith("| ")]
    assert len(body) == 4  # 2 samplers x 2 budgets, 2 seeds each
    row = re.compile(r"^\| (top_prob|threshold \(tau=0\.9\)) \| (2|4) \| \d+\.\d\d \| \d+ \| "
                     r"\d+\.\d \| \[\d+\.\d, \d+\.\d\] \| 2 \|$")
    assert all(row.match(line) for line in body), body
    assert [line.split(" | ")[1] for line in body] == ["2", "2", "4", "4"]
    assert "5 files were not used" in text
    assert "![accuracy against mean NFE](results.png)" in text


def test_summary_averages_over_seeds(workspace: Path, tmp_path: Path) -> None:
    report = _run(workspace, tmp_path)
    rows = report.table.rows()
    group = [r for r in rows if r["sampler"] == "threshold" and r["steps"] == 4]
    line = next(s for s in report.summary if s.sampler == "threshold" and s.steps == 4)
    accuracy = [r["accuracy"] for r in group]
    assert line.n_seeds == 2 and line.method == "threshold (tau=0.9)"
    assert line.accuracy_mean == pytest.approx(np.mean(accuracy))
    assert line.accuracy_std == pytest.approx(np.std(accuracy, ddof=1))
    assert line.min_nfe == min(r["min_nfe"] for r in group) and line.max_nfe == max(r["max_nfe"] for r in group)
    assert read_results(report.outputs.results).summary == report.summary


def test_csv_has_one_line_per_run_and_empty_missing_cells(workspace: Path, tmp_path: Path) -> None:
    report = _run(workspace, tmp_path)
    text = report.outputs.csv.read_text(encoding="utf-8")
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == 8
    assert list(records[0])[: len(LEADING_COLUMNS)] == list(LEADING_COLUMNS)
    by_path = {r["path"]: r for r in records}
    top = by_path["eval/SAMPLER.top_prob.SEED.1.STEPS.4/metrics.h5"]
    assert top["sampler.tau"] == "" and top["steps"] == "4" and top["seed"] == "1"
    assert float(top["accuracy"]) == next(r for r in report.table.rows() if r["path"] == top["path"])["accuracy"]


def test_plot_is_a_real_png(workspace: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    path = _run(workspace, tmp_path).outputs.plot
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # not a blank canvas


def test_labels() -> None:
    assert task_label({"task": "blocks", "task.nb": 4, "task.bl": 2}) == "blocks (bl=2, nb=4)"
    assert method_label({"sampler": "top_prob"}) == "top_prob"
    assert method_label({"sampler": "threshold", "sampler.tau": 0.9}) == "threshold (tau=0.9)"
    learned = {"sampler": "learned", "sampler.policy_dir": "/ws/train_order/T.4", "policy.budget": 4}
    assert method_label(learned) == "learned (T=4)"
    assert method_label({**learned, "method": "learned order"}) == "learned order"


def test_column_types_are_inferred_from_all_runs() -> None:
    table = build_table([
        {"path": "b", "x": 1, "y": True, "z": 1, "w": "a"},
        {"path": "a", "x": 2.5, "y": False, "w": 3},
    ], [Problem("q", "corrupt", "junk")])
    kinds = {c.name: c.kind for c in table.columns}
    assert kinds == {"path": "str", "x": "float", "y": "bool", "z": "int", "w": "str"}
    assert list(table.column("path").values) == ["a", "b"]
    assert list(table.column("w").values) == ["3", "a"]
    z = table.column("z")
    assert z.missing is not None and list(z.missing) == [True, False] and z.cell(0) is None
    assert math.isnan(table.column("x").values[0]) is False


@pytest.mark.parametrize(("count", "size"), [(0, 2), (1, 2), (7, 3), (2000, 2), (5, 8)])
def test_shards_are_disjoint_contiguous_and_cover(count: int, size: int) -> None:
    parts = [shard(count, rank, size) for rank in range(size)]
    assert [i for part in parts for i in part] == list(range(count))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_cli_writes_every_output_and_lists_problems(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "r" / "res.h5"
    result = CliRunner().invoke(aggregate_command, [str(workspace), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["runs"] == 8 and len(payload["problems"]) == len(BAD)
    assert all((tmp_path / "r" / name).is_file() for name in ("res.h5", "res.csv", "res.md", "res.png"))
    assert (tmp_path / "r" / "res.svg").is_file()
    notes = tmp_path / "notes.md"
    notes.write_text("Nothing here beats anything.\n", encoding="utf-8")
    plain = CliRunner().invoke(aggregate_command, [str(workspace), "--out", str(out), "--title", "Quick",
                                                  "--command", "merlin-mdm run s.yaml --local", "--notes", str(notes),
                                                  "--markdown", str(tmp_path / "t1.md")])
    assert plain.exit_code == 0 and "Aggregated 8 runs" in plain.output and "truncated" in plain.output
    summary = next(line for line in plain.output.splitlines() if line.startswith("Aggregated"))
    assert str(tmp_path / "r" / "res.h5") in summary  # piped output never breaks a path across lines
    report = (tmp_path / "t1.md").read_text(encoding="utf-8")
    assert report.startswith("# Quick\n") and "    merlin-mdm run s.yaml --local\n" in report
    assert "## Notes\n\nNothing here beats anything.\n" in report


def test_paths_are_printed_as_they_are_never_read_as_markup(workspace: Path, tmp_path: Path) -> None:
    """`--out 'm[/red]k/r.h5'` wrote its files, then ended in rich's MarkupError; `study[ab]_1.out` was shown as
    `study_1.out`, a path that does not exist."""
    (workspace / "bad[/i]x").mkdir(parents=True)
    (workspace / "bad[/i]x" / "m.h5").write_text("junk")
    for folder in ("m[/red]k", "study[ab]_1.out"):
        out = tmp_path / folder / "r.h5"
        result = CliRunner().invoke(aggregate_command, [str(workspace), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert f"into {out} (and" in result.output.replace("\n", "")
        assert "bad[/i]x/m.h5" in result.output.replace("\n", "").replace(" ", "").replace("│", "")


def test_the_report_says_which_vars_the_study_ran_with(workspace: Path, tmp_path: Path) -> None:
    """The spec's REGENERATE variable cannot know the --vars of a run: the report adds them from the workspace's
    spec copy (a study run with --vars TRAIN_STEPS=150 reported the plain command)."""
    (workspace / "merlin_info" / "s.partial.yaml").write_text(
        "# run with --vars TRAIN_STEPS=150 'NAME=a b' (filled in below; the env.variables lines show the file's "
        "values)\ndescription: {name: s}\n", encoding="utf-8")
    result = CliRunner().invoke(aggregate_command, [str(workspace), "--out", str(tmp_path / "v.h5"),
                                                    "--command", "merlin-mdm run s.yaml --local"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "v.md").read_text(encoding="utf-8")
    assert "    merlin-mdm run s.yaml --local  # the study ran with --vars TRAIN_STEPS=150 'NAME=a b'\n" in report


def test_cli_strict_fails_on_lost_runs_only(workspace: Path, tmp_path: Path, make_run: MakeRun) -> None:
    result = CliRunner().invoke(aggregate_command, [str(workspace), "--out", str(tmp_path / "a.h5"), "--strict"])
    assert isinstance(result.exception, ResultsError) and result.exception.exit_code == 1
    assert "4 run file(s)" in str(result.exception)
    clean = tmp_path / "clean"
    make_run(clean / "one" / "metrics.h5")
    (clean / "foreign.h5").write_bytes((workspace / "train" / "weights.h5").read_bytes())
    ok = CliRunner().invoke(aggregate_command, [str(clean), "--out", str(tmp_path / "b.h5"), "--strict"])
    assert ok.exit_code == 0, ok.output


def test_cli_nothing_matching_exits_2_and_nothing_usable_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "none-*.h5")])
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    (tmp_path / "a.h5").write_text("junk")
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "*.h5"), "--out", str(tmp_path / "r.h5")])
    assert isinstance(result.exception, ResultsError) and result.exception.exit_code == 1


def test_a_clean_single_run_round_trips_with_no_problems(tmp_path: Path, make_run: MakeRun) -> None:
    make_run(tmp_path / "in" / "one.h5", seed=3)
    report = aggregate(str(tmp_path / "in" / "*.h5"), default_outputs(tmp_path / "res.h5"), progress=False)
    assert report is not None
    stored = read_results(tmp_path / "res.h5")
    assert stored.table.problems == () and stored.attrs["n_problems"] == 0
    assert stored.table.rows() == report.table.rows()
    (line,) = stored.summary
    assert line.n_seeds == 1 and math.isnan(line.accuracy_std)
    text = (tmp_path / "res.md").read_text(encoding="utf-8")
    assert "| top_prob | 4 |" in text and "±" not in text and "1 run aggregated." in text


def test_several_sources_list_each_file_once_and_keep_every_problem(workspace: Path, tmp_path: Path) -> None:
    glob_of_first = str(workspace / "eval" / "*" / "*.h5")  # the same files again, by another spelling
    links = tmp_path / "links"  # and through links, as a pooled folder of runs would hold them
    links.mkdir()
    for index, path in enumerate(sorted(workspace.glob("eval/*/*.h5"))):
        (links / f"{index}.h5").symlink_to(path)
    sources = [workspace, glob_of_first, links]
    report = aggregate(sources, default_outputs(tmp_path / "out" / "r.h5"), progress=False)
    assert report is not None and report.table.n_rows == 8
    assert {p.path: p.kind for p in report.table.problems} == {f"{workspace}/{name}": k for name, k in BAD.items()}
    assert read_results(report.outputs.results).attrs["source"] == shlex.join(map(str, sources))
    first = aggregate([links, workspace], default_outputs(tmp_path / "first" / "r.h5"), progress=False)
    assert first is not None and first.table.n_rows == 8  # each file under the first name found: the link's
    assert all(path.startswith(f"{links}/") for path in first.table.column("path").values)
    with pytest.raises(UsageError, match=r"nowhere/\*\.h5: no such workspace"):
        aggregate([workspace, str(tmp_path / "nowhere" / "*.h5")], default_outputs(tmp_path / "r.h5"), progress=False)


def test_a_run_held_by_two_sources_is_counted_once(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"  # a copy: two batches that both ran the same runs
    shutil.copytree(workspace, other)
    alone = aggregate(workspace, default_outputs(tmp_path / "alone" / "r.h5"), progress=False)
    both = aggregate([workspace, other], default_outputs(tmp_path / "both" / "r.h5"), progress=False)
    assert alone is not None and both is not None and both.table.n_rows == alone.table.n_rows == 8
    assert both.summary == alone.summary
    duplicates = {p.path: p.message for p in both.table.problems if p.kind == "duplicate"}
    kept = list(both.table.column("path").values)  # the first by path: here the copy's ("other" < "study_...")
    assert all(path.startswith(f"{other}/") for path in kept)
    assert sorted(duplicates) == sorted(path.replace(str(other), str(workspace)) for path in kept)
    assert all(f"the same run as {other}/" in message for message in duplicates.values())
    assert {p.kind for p in both.failures} == {"missing", "corrupt", "truncated", "incomplete"}  # not duplicates


def test_only_the_same_run_is_a_duplicate() -> None:
    def row(path: str, **changes: Any) -> dict[str, Any]:
        base = {"path": path, "task": "blocks", "sampler": "learned", "steps": 4, "seed": 0, "train_seed": 1,
                "policy.seed": 41, "_correct": np.array([True, False, True]), "_nfe": np.array([2, 3, 2])}
        return {**base, **changes}

    same = row("b", end_time="later", host="elsewhere", checkpoint="/other/denoiser")
    distinct = [row("c", **{"policy.seed": 42}), row("d", train_seed=2), row("e", seed=1), row("f", steps=8),
                row("g", _nfe=np.array([2, 3, 3])), row("h", _correct=np.array([True, True, True])),
                row("i", sampler="eb")]
    kept, duplicates = split_duplicates([row("a"), same, *distinct])
    assert [r["path"] for r in kept] == ["a", "c", "d", "e", "f", "g", "h", "i"]
    assert [(p.path, p.kind) for p in duplicates] == [("b", "duplicate")]


def test_the_command_takes_several_sources(workspace: Path, tmp_path: Path) -> None:
    shutil.copytree(workspace, tmp_path / "other")
    result = CliRunner().invoke(aggregate_command, [str(workspace), str(tmp_path / "other"), "--out",
                                                    str(tmp_path / "r.h5"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["runs"] == 8 and sum(p["kind"] == "duplicate" for p in payload["problems"]) == 8
    missing = CliRunner().invoke(aggregate_command, ["--out", str(tmp_path / "r.h5")])
    assert missing.exit_code == 2 and "Missing argument 'SOURCE...'" in missing.output


def test_pooling_runs_of_one_seed_from_two_denoisers_is_said(tmp_path: Path, make_run: MakeRun) -> None:
    for study, denoiser in (("small", "aaaa"), ("big", "bbbb")):  # two denoiser sizes trained with seed 0
        make_run(tmp_path / study / "eval" / "r" / "metrics.h5", seed=0, n=10 if study == "small" else 12,
                 train_seed=0, checkpoint_id=denoiser)
    report = aggregate([tmp_path / "small", tmp_path / "big"], default_outputs(tmp_path / "r.h5"), progress=False)
    assert report is not None and report.table.n_rows == 2
    assert report.mixed_denoisers == ("top_prob at T=4 on blocks (bl=4, nb=4): train_seed 0 holds runs of 2 "
                                      "denoisers (aaaa, bbbb), averaged as one; aggregate such studies separately",)
    one = aggregate(tmp_path / "small", default_outputs(tmp_path / "s.h5"), progress=False)
    assert one is not None and one.mixed_denoisers == ()
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "small"), str(tmp_path / "big"), "--out",
                                                    str(tmp_path / "c.h5")])
    assert result.exit_code == 0 and "warning: top_prob at T=4" in result.output, result.output


def test_runs_of_one_denoiser_on_several_example_sets_are_said(tmp_path: Path, make_run: MakeRun) -> None:
    """A pilot (`--seed 1`, or fewer examples) beside the real evaluation of one denoiser was averaged as two seeds
    without a word (an outside probe), where two denoisers under one seed are said (the test above)."""
    make_run(tmp_path / "g" / "real.h5", seed=0, n=10, train_seed=0, checkpoint_id="aaaa")
    make_run(tmp_path / "g" / "pilot.h5", seed=1, n=10, train_seed=0, checkpoint_id="aaaa")
    make_run(tmp_path / "g" / "other.h5", seed=0, n=10, train_seed=1, checkpoint_id="cccc")
    report = aggregate(tmp_path / "g", default_outputs(tmp_path / "r.h5"), progress=False)
    assert report is not None and report.table.n_rows == 3 and report.mixed_denoisers == ()
    assert report.repeated_evaluations == (
        "top_prob at T=4 on blocks (bl=4, nb=4): train_seed 0 holds runs on 2 example sets (--seed 0 --n-examples "
        "10, --seed 1 --n-examples 10), each counted as a seed of its own though one denoiser made them; aggregate "
        "them separately",)
    result = CliRunner().invoke(aggregate_command, [str(tmp_path / "g"), "--out", str(tmp_path / "c.h5")])
    assert result.exit_code == 0 and "warning: top_prob at T=4 on blocks (bl=4, nb=4): train_seed 0 holds runs on 2" \
        in result.output, result.output
    (tmp_path / "g" / "pilot.h5").unlink()
    one = aggregate(tmp_path / "g", default_outputs(tmp_path / "s.h5"), progress=False)
    assert one is not None and one.repeated_evaluations == ()
