"""The results a scientist picks up: xarray/pandas loading, paired bootstrap intervals, equal-compute verdicts,
and the plots (log2 axis, PNG and SVG, byte-stable)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from merlin_mdm.results import load, load_dataset
from merlin_mdm.results.aggregate import aggregate, default_outputs
from merlin_mdm.results.report import compare_at_equal_compute
from merlin_mdm.results.statistics import bootstrap_accuracy, interval

from .conftest import write_run as _write


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """3 training seeds x (learned at T=2, iid at 2, top_prob at 2 and 4) on 200 examples."""
    root = tmp_path / "ws"
    rng = np.random.default_rng(0)
    for seed in range(3):
        good = rng.random(200) < 0.9
        _write(root / "eval" / f"learned.{seed}" / "m.h5", "learned", 2, seed, good, np.full(200, 2),
               method="learned (T=2)")
        _write(root / "eval" / f"iid.{seed}" / "m.h5", "iid", 2, seed, good & (rng.random(200) < 0.5),
               np.full(200, 2))
        _write(root / "eval" / f"top.{seed}" / "m.h5", "top_prob", 4, seed, rng.random(200) < 0.97,
               np.full(200, 4))
        _write(root / "eval" / f"top2.{seed}" / "m.h5", "top_prob", 2, seed, rng.random(200) < 0.2,
               np.full(200, 2))
    return root


def _aggregate(study: Path, out: Path):
    report = aggregate(study, default_outputs(out, title="T", command="merlin-mdm run x.yaml"), progress=False)
    assert report is not None
    return report


def test_results_file_opens_with_xarray_with_named_dims_coords_and_units(study: Path, tmp_path: Path) -> None:
    import xarray as xr

    _aggregate(study, tmp_path / "r.h5")
    with xr.open_dataset(tmp_path / "r.h5", engine="h5netcdf") as ds:
        assert dict(ds.sizes) == {"run": 12, "example": 200}
        assert {"run", "example", "method_label", "task_label", "steps", "train_seed", "path"} <= set(ds.coords)
        assert ds["accuracy"].dims == ("run",) and ds["accuracy"].attrs["units"] == "1"
        assert ds["mean_nfe"].attrs["units"] == "denoiser calls"
        assert ds["correct"].dims == ("run", "example")
        learned = ds["accuracy"].where(ds["method_label"] == "learned (T=2)", drop=True)
        assert learned.size == 3
        np.testing.assert_allclose(ds["correct"].mean("example").values, ds["accuracy"].values)
    summary = load_dataset(tmp_path / "r.h5", group="summary")
    assert summary.sizes["row"] == 4 and summary["ci_low"].attrs["units"] == "1"


def test_a_run_with_fewer_examples_reads_as_nan_through_xarray(study: Path, tmp_path: Path) -> None:
    """The padding of a shorter run is the CF fill value: xarray masks it (float, NaN), so a mean over examples
    is each run's own accuracy; the stored int8 -1 is there with mask_and_scale=False."""
    import xarray as xr

    rng = np.random.default_rng(5)
    short = rng.random(150) < 0.6
    _write(study / "eval" / "short.0" / "m.h5", "margin", 2, 0, short, np.full(150, 2))
    _aggregate(study, tmp_path / "r.h5")
    ds = load_dataset(tmp_path / "r.h5")
    run = int(np.flatnonzero(ds["sampler"].values == "margin")[0])
    assert ds["correct"].dtype.kind == "f" and int(ds["correct"][run].isnull().sum()) == 50
    np.testing.assert_allclose(ds["correct"].mean("example").values, ds["accuracy"].values)
    assert float(ds["accuracy"][run]) == pytest.approx(short.mean())
    with xr.open_dataset(tmp_path / "r.h5", engine="h5netcdf", mask_and_scale=False) as raw:
        assert raw["correct"].dtype == np.int8 and (raw["correct"].values[run, 150:] == -1).all()


def test_load_gives_a_dataframe_of_runs(study: Path, tmp_path: Path) -> None:
    _aggregate(study, tmp_path / "r.h5")
    frame = load(tmp_path / "r.h5")
    assert len(frame) == 12 and {"accuracy", "mean_nfe", "method_label", "train_seed"} <= set(frame.columns)
    by_method = frame.groupby("method_label")["accuracy"].mean()
    assert by_method["learned (T=2)"] > by_method["iid"]
    assert frame["method"].isna().sum() == 9  # only the learned runs set a method


def test_load_names_the_runs_it_could_not_use_and_the_units(study: Path, tmp_path: Path) -> None:
    """A frame from an aggregation that met a corrupt file was silent about it, and carried no units (accuracy is
    a fraction, the reports show %): an outside probe."""
    from merlin_mdm.results.frames import ResultsWarning

    (study / "eval" / "broken.0").mkdir(parents=True)
    (study / "eval" / "broken.0" / "m.h5").write_bytes(b"not hdf5 at all")
    _aggregate(study, tmp_path / "r.h5")
    with pytest.warns(ResultsWarning, match=r"1 run\(s\) could not be used .*broken\.0/m\.h5"):
        frame = load(tmp_path / "r.h5")
    assert len(frame) == 12 and [p["path"] for p in frame.attrs["problems"]] == ["eval/broken.0/m.h5"]
    assert frame.attrs["units"]["accuracy"] == "1" and frame.attrs["units"]["mean_nfe"] == "denoiser calls"
    assert frame.attrs["source"] == str(tmp_path / "r.h5")


def test_loading_works_while_the_file_is_open_elsewhere_in_the_process(study: Path, tmp_path: Path) -> None:
    """A notebook holds the file through xarray (HDF5's default locking) or through our reader (none): HDF5
    shares one open file per process and refuses a second open with other locking flags."""
    import xarray as xr

    from merlin_mdm.results.metrics import open_h5

    _aggregate(study, tmp_path / "r.h5")
    alone = load(tmp_path / "r.h5")
    with xr.open_dataset(tmp_path / "r.h5", engine="h5netcdf") as held:
        assert held.sizes["run"] == 12
        assert load(tmp_path / "r.h5").equals(alone)
        assert load_dataset(tmp_path / "r.h5")["accuracy"].size == 12
    with open_h5(tmp_path / "r.h5") as handle:
        assert handle.attrs["file_kind"]
        assert load_dataset(tmp_path / "r.h5", group="summary").sizes["row"] == 4


def test_bootstrap_is_deterministic_and_paired() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random((3, 300)) < 0.7).astype(np.int8)
    b = a.copy()
    b[:, :30] = 0  # b is a minus some successes: every paired resample has a >= b
    draws_a, draws_b = bootstrap_accuracy(a), bootstrap_accuracy(b)
    np.testing.assert_array_equal(draws_a, bootstrap_accuracy(a))
    assert (draws_a - draws_b >= 0).all()
    low, high = interval(draws_a)
    assert low < a.mean() < high and high - low < 0.15
    assert np.isnan(interval(np.array([np.nan]))[0])


def test_the_runs_of_one_training_seed_are_resampled_within_it() -> None:
    both = np.stack([np.ones(100, np.int8), np.zeros(100, np.int8)])  # two policy seeds on one denoiser
    assert interval(bootstrap_accuracy(both, clusters=[0, 0])) == (0.0, 1.0)  # 0, 1/2 or 1: seed spread counts
    assert set(np.unique(bootstrap_accuracy(both, clusters=[0, 0]))) == {0.0, 0.5, 1.0}
    rng = np.random.default_rng(2)
    baseline = (rng.random((3, 200)) < 0.6).astype(np.int8)  # 3 denoiser seeds
    replicated = np.repeat(baseline, 2, axis=0)  # each denoiser seed twice (two policy seeds, same outcomes)
    draws = bootstrap_accuracy(replicated, clusters=[0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(draws, bootstrap_accuracy(baseline))  # the same seeds and examples drawn: paired
    np.testing.assert_array_equal(bootstrap_accuracy(baseline, clusters=["a", "b", "c"]), bootstrap_accuracy(baseline))
    with pytest.raises(ValueError, match="2 cluster labels for 3 runs"):
        bootstrap_accuracy(baseline, clusters=[0, 1])


def test_equal_compute_verdicts_and_the_report(study: Path, tmp_path: Path) -> None:
    report = _aggregate(study, tmp_path / "r.h5")
    from merlin_mdm.results.tables import bootstrap_groups

    (found,) = compare_at_equal_compute(report.summary, bootstrap_groups(report.table))
    assert found.baseline is not None and found.baseline.method == "iid"  # top_prob at T=4 spends more calls
    assert found.baseline.accuracy_mean > next(r for r in report.summary if r.method == "top_prob"
                                               and r.steps == 2).accuracy_mean
    assert found.verdict == "learned better" and found.paired and found.low > 0.3
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert text.startswith("# T\n") and "    merlin-mdm run x.yaml" in text
    assert "| learned (T=2) | 2 | 2.00 |" in text and "| learned better |" in text


def test_plots_are_png_and_svg_with_a_log2_axis_and_stable_bytes(study: Path, tmp_path: Path) -> None:
    _aggregate(study, tmp_path / "a" / "r.h5")
    _aggregate(study, tmp_path / "b" / "r.h5")
    for name in ("r.png", "r.svg", "r.md", "r.h5", "r.csv"):
        first, second = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        if name != "r.csv":  # the CSV holds written_at-free attributes only here, but compare the rest strictly
            assert first == second, name
    svg = (tmp_path / "a" / "r.svg").read_text(encoding="utf-8")
    assert svg.startswith("<?xml") and "log2" in svg and "policy seed): 3." in svg


def test_adaptive_lines_are_also_compared_at_their_max_nfe(study: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for seed in range(3):
        nfe = np.where(rng.random(200) < 0.5, 2, 4)  # mean 3, max 4
        _write(study / "eval" / f"adaptive.{seed}" / "m.h5", "learned", 4, seed, rng.random(200) < 0.9, nfe,
               method="learned (T=2|4, nfe_penalty=0.5)")
    report = _aggregate(study, tmp_path / "r.h5")
    from merlin_mdm.results.tables import bootstrap_groups

    draws = bootstrap_groups(report.table)
    at_avg = {c.learned.method: c for c in compare_at_equal_compute(report.summary, draws)}
    at_max = {c.learned.method: c for c in compare_at_equal_compute(report.summary, draws, at="max")}
    adaptive = "learned (T=2/4, nfe_penalty=0.5)"  # a run written with 2|4 reads as the reports show it
    assert at_avg[adaptive].baseline is not None and at_avg[adaptive].baseline.method == "iid"
    assert at_max[adaptive].baseline is not None and at_max[adaptive].baseline.method == "top_prob"
    assert at_max[adaptive].verdict == "baseline better"  # top_prob at T=4 is right 97% of the time
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "at most their NFE @Max" in text
    assert text.count("| learned (T=2/4, nfe_penalty=0.5) |") == 5  # Table 1, @Avg, @Max, capped, per seed


def test_the_capped_comparison_keeps_only_baselines_within_the_learned_lines_worst_case(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    rng = np.random.default_rng(3)
    for seed in range(3):
        hard = np.arange(200) % 5 == 0  # a fifth of the examples take 11 calls with the uncapped baseline
        _write(root / f"capped4.{seed}" / "m.h5", "learned", 4, seed, rng.random(200) < 0.85, np.full(200, 4),
               method="learned (T=4)")
        _write(root / f"eb16.{seed}" / "m.h5", "eb", 16, seed, rng.random(200) < 0.97, np.where(hard, 11, 2),
               **{"sampler.gamma": 0.03})  # mean 3.8 calls, at most 11
        _write(root / f"eb4.{seed}" / "m.h5", "eb", 4, seed, rng.random(200) < 0.7, np.where(hard, 4, 2),
               **{"sampler.gamma": 0.1})  # capped at 4
    report = _aggregate(root, tmp_path / "r.h5")
    from merlin_mdm.results.tables import bootstrap_groups

    draws = bootstrap_groups(report.table)
    (at_avg,) = compare_at_equal_compute(report.summary, draws)
    (capped,) = compare_at_equal_compute(report.summary, draws, at="cap")
    assert at_avg.baseline is not None and at_avg.baseline.max_nfe == 11 and at_avg.verdict == "baseline better"
    assert capped.baseline is not None and capped.baseline.max_nfe == 4 and capped.verdict == "learned better"
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "never spends more calls on an example" in text
    assert "| learned (T=4) | 4 | 4.00 / 4 |" in text and "| eb (gamma=0.1) | 2.40 / 4 |" in text


_REFINE = ("learned (T=16, tau=0.1, nfe_penalty=0.07, objective=reward, policy_kind=sequential, iterations=160, "
           "n_layers=2, rollouts=16, lr_policy=0.0003")  # the spec's refine step as labelled before lineages


def _two_stages(root: Path, lineage: bool) -> None:
    """3 training seeds x (EB, a refine stage, the same stage again from its result with --seed S+10), written as
    `mdm eval` writes them with (``lineage``) and without (the code before lineages) the policy's lineage."""
    rng = np.random.default_rng(7)
    for seed in range(3):
        _write(root / f"eb.{seed}" / "m.h5", "eb", 16, seed, rng.random(200) < 0.8, np.full(200, 4),
               **{"sampler.gamma": 0.05})
        for stage, policy_seed, init in ((3, seed, "reward-7374e7"), (4, seed + 10, "reward-6f1fd9")):
            extra: dict[str, object] = {"method": f"{_REFINE})", "policy.seed": policy_seed}
            if lineage:
                extra.update({"method": f"{_REFINE}, stage={stage}, init={init})", "policy.stage": stage,
                              "policy.init": init})
            _write(root / f"stage{stage}.{seed}" / "m.h5", "learned", 16, seed, rng.random(200) < 0.9,
                   np.full(200, 4), **extra)


def test_two_stages_with_the_same_arguments_are_separate_paired_lines_only_when_the_lineage_is_recorded(
        tmp_path: Path) -> None:
    from merlin_mdm.results.tables import bootstrap_groups, group_clusters

    _two_stages(tmp_path / "new", lineage=True)
    report = _aggregate(tmp_path / "new", tmp_path / "new.h5")
    learned = {r.method: r for r in report.summary if r.sampler == "learned"}
    assert sorted(learned) == [f"{_REFINE}, stage=3, init=reward-7374e7)", f"{_REFINE}, stage=4, init=reward-6f1fd9)"]
    assert all(r.n_seeds == 3 for r in learned.values())
    found = compare_at_equal_compute(report.summary, bootstrap_groups(report.table))
    assert len(found) == 2 and all(c.paired and c.baseline is not None and c.baseline.sampler == "eb" for c in found)
    # Files written before lineages keep their one label: both stages pooled as one line of 6 runs, two per
    # training seed; the bootstrap resamples those within each training seed, so it still pairs with EB.
    _two_stages(tmp_path / "old", lineage=False)
    old = _aggregate(tmp_path / "old", tmp_path / "old.h5")
    assert [(r.method, r.n_seeds) for r in old.summary if r.sampler == "learned"] == [(f"{_REFINE})", 6)]
    (pooled,) = compare_at_equal_compute(old.summary, bootstrap_groups(old.table),
                                         clusters=group_clusters(old.table))
    assert pooled.paired
    assert not compare_at_equal_compute(old.summary, bootstrap_groups(old.table))[0].paired  # by run count: not
    assert "(unpaired)" not in (tmp_path / "old.md").read_text(encoding="utf-8")
    assert "| 6 (3 x 2) |" in (tmp_path / "old.md").read_text(encoding="utf-8")
    (tmp_path / "old" / "stage4.2" / "m.h5").unlink()  # seeds 0, 1 hold two runs, seed 2 one: 5, not "5 (3 x 1)"
    _aggregate(tmp_path / "old", tmp_path / "uneven.h5")
    assert "| 5 (3 training seeds) |" in (tmp_path / "uneven.md").read_text(encoding="utf-8")
    assert "| 3 |" in (tmp_path / "new.md").read_text(encoding="utf-8")
    assert "(unpaired)" not in (tmp_path / "new.md").read_text(encoding="utf-8")


def test_a_swept_baseline_is_one_series_and_every_learned_line_its_own(study: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    for seed in range(3):
        for gamma, calls in ((0.1, 3), (0.01, 5)):
            _write(study / "eval" / f"eb{gamma}.{seed}" / "m.h5", "eb", 16, seed, rng.random(200) < 0.8,
                   np.full(200, calls), **{"sampler.gamma": gamma})
        _write(study / "eval" / f"other.{seed}" / "m.h5", "learned", 2, seed, rng.random(200) < 0.5,
               np.full(200, 2), method="learned (T=2, objective=reward)")
    report = _aggregate(study, tmp_path / "r.h5")
    from merlin_mdm.results.plots import _series, _series_label

    series = _series(report.summary)
    assert sorted(r.method for r in series["eb"]) == ["eb (gamma=0.01)", "eb (gamma=0.1)"]
    assert {"learned (T=2)", "learned (T=2, objective=reward)"} <= set(series)  # never merged
    assert _series_label("eb", series["eb"]) == "eb (n=3, 2 settings)"
    svg = (tmp_path / "r.svg").read_text(encoding="utf-8")
    assert svg.count("eb (n=3, 2 settings)") == 1 and "eb (gamma=0.1)" not in svg
    assert set(series) == {"eb", "learned (T=2)", "learned (T=2, objective=reward)", "iid", "top_prob"}


def test_a_baseline_swept_at_several_caps_is_one_front_per_cap(study: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    for seed in range(3):
        for cap, gamma, calls in ((4, 0.1, 3), (4, 0.01, 4), (16, 0.1, 3), (16, 0.01, 5)):
            _write(study / "eval" / f"eb{gamma}_T{cap}.{seed}" / "m.h5", "eb", cap, seed, rng.random(200) < 0.8,
                   np.full(200, calls), **{"sampler.gamma": gamma})
    report = _aggregate(study, tmp_path / "r.h5")
    from merlin_mdm.results.plots import _series

    series = _series(report.summary)
    assert {"eb, at most 4 calls", "eb, at most 16 calls"} <= set(series) and "eb" not in series
    assert {r.steps for r in series["eb, at most 4 calls"]} == {4} and len(series["eb, at most 16 calls"]) == 2
    assert "top_prob" in series and len(series["top_prob"]) == 2  # one setting per budget: still one line


def test_settings_of_a_baseline_that_do_not_move_its_calls_are_series_of_their_own(study: Path,
                                                                                      tmp_path: Path) -> None:
    """top_prob at temperatures 0, 0.5 and 1 was drawn as one vertical line, "top_prob (n=3, 3 settings)", and
    margin with blocks=4 joined plain margin's line."""
    rng = np.random.default_rng(9)
    for seed in range(3):
        for temperature in (0.0, 0.5):
            _write(study / "eval" / f"tp{temperature}.{seed}" / "m.h5", "top_prob", 4, seed, rng.random(200) < 0.6,
                   np.full(200, 4), temperature=temperature)
        for steps in (2, 4):
            _write(study / "eval" / f"margin_b4_T{steps}.{seed}" / "m.h5", "margin", steps, seed,
                   rng.random(200) < 0.3, np.full(200, steps), **{"sampler.blocks": 4})
            _write(study / "eval" / f"margin_T{steps}.{seed}" / "m.h5", "margin", steps, seed, rng.random(200) < 0.7,
                   np.full(200, steps))
        for gamma, calls in ((0.1, 3), (0.01, 5)):
            _write(study / "eval" / f"eb{gamma}.{seed}" / "m.h5", "eb", 16, seed, rng.random(200) < 0.8,
                   np.full(200, calls), **{"sampler.gamma": gamma, "sampler.blocks": 4})
        for tau in (0.5, 0.7, 0.9):  # a sweep that does not move the calls on this task is still a sweep
            _write(study / "eval" / f"thr{tau}.{seed}" / "m.h5", "threshold", 16, seed, rng.random(200) < 0.9,
                   np.full(200, 12), **{"sampler.tau": tau})
    report = _aggregate(study, tmp_path / "r.h5")
    from merlin_mdm.results.plots import _series

    series = _series(report.summary)
    assert len(series["threshold"]) == 3 and not any(key.startswith("threshold (") for key in series)
    assert {"top_prob", "top_prob (temperature=0)", "top_prob (temperature=0.5)", "margin", "margin (blocks=4)",
            "eb"} <= set(series), sorted(series)
    assert [r.steps for r in series["margin (blocks=4)"]] == [2, 4] and len(series["margin"]) == 2
    assert len(series["top_prob (temperature=0)"]) == 1 and len(series["eb"]) == 2


def test_studies_run_in_batches_aggregate_as_one(study: Path, tmp_path: Path) -> None:
    """The same runs in two workspaces (training seeds 0-1, then 2) give the report and Table 1 of one."""
    whole = _aggregate(study, tmp_path / "whole" / "r.h5")
    for name in sorted(p.relative_to(study) for p in study.rglob("*.h5")):
        batch = "batch1" if int(name.parent.name.rsplit(".", 1)[1]) < 2 else "batch2"
        (tmp_path / batch / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(study / name, tmp_path / batch / name)
    pooled = aggregate([tmp_path / "batch1", tmp_path / "batch2"],
                       default_outputs(tmp_path / "pooled" / "r.h5", title="T", command="merlin-mdm run x.yaml"),
                       progress=False)
    assert pooled is not None and pooled.table.n_rows == whole.table.n_rows == 12
    assert pooled.summary == whole.summary
    assert pooled.outputs.markdown.read_text() == whole.outputs.markdown.read_text()
    paths = list(load(tmp_path / "pooled" / "r.h5")["path"])
    assert sum(p.startswith(f"{tmp_path}/batch1/eval/") for p in paths) == 8
    assert sum(p.startswith(f"{tmp_path}/batch2/eval/") for p in paths) == 4
    one = aggregate([tmp_path / "batch1"], default_outputs(tmp_path / "one" / "r.h5"), progress=False)
    assert one is not None and one.table.n_rows == 8


def test_load_dataset_refuses_what_load_refuses(study: Path, tmp_path: Path) -> None:
    from merlin_mdm.errors import ResultsError

    _aggregate(study, tmp_path / "r.h5")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "text.csv").write_text("a,b\n1,2\n")
    metrics = next(study.rglob("*.h5"))
    for path, why in ((metrics, "not a merlin-mdm results file"), (tmp_path / "nope.h5", "cannot read"),
                      (tmp_path / "a_dir", "cannot read"), (tmp_path / "text.csv", "cannot read")):
        for reader in (load, load_dataset):
            with pytest.raises(ResultsError, match=why) as caught:
                reader(path)
            assert "\n" not in str(caught.value), str(caught.value)  # one line, no HDF5 error stack
    with pytest.raises(ResultsError, match="'summary', 'problems'"):
        load_dataset(tmp_path / "r.h5", group="bogus")
    assert load_dataset(tmp_path / "r.h5", group="runs_missing").sizes["run"] == 12


def test_every_series_of_a_crowded_plot_looks_unlike_the_others() -> None:
    """matplotlib's colours repeat after ten: series 0 and 10 were a blue circle and a blue hexagon."""
    from merlin_mdm.results.plots import _style

    looks = [tuple(sorted((k, str(v)) for k, v in _style(i).items())) for i in range(40)]
    assert len(set(looks)) == 40
    assert _style(0)["color"] == _style(10)["color"] and _style(0)["linestyle"] != _style(10)["linestyle"]


def test_a_log2_axis_shorter_than_three_octaves_labels_plain_numbers() -> None:
    """2.2 to 4.7 calls showed one label, 2²."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from merlin_mdm.results.plots import _label_short_axis

    fig, ax = plt.subplots()
    ax.plot([2.2, 3.1, 4.7], [50, 70, 90])
    ax.set_xscale("log", base=2)
    _label_short_axis(ax)
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert len(shown) >= 3 and any("3" in t for t in shown), shown


def test_seeds_carry_units_and_say_which_seed_they_are(study: Path, tmp_path: Path) -> None:
    """`seed` (the evaluation's) was easy to take for the training seed: an outside probe."""
    _aggregate(study, tmp_path / "r.h5")
    ds = load_dataset(tmp_path / "r.h5")
    assert ds["seed"].attrs["units"] == "1" and "evaluation seed" in ds["seed"].attrs["long_name"]
    assert "training" in ds["train_seed"].attrs["long_name"]


def test_runs_on_another_number_of_examples_are_not_paired(tmp_path: Path) -> None:
    """One evaluation seed draws other prompts for another --n-examples (the candidates come in a batch sized by
    it): a learned run on 200 examples and a baseline on 1000 were reported as a paired difference."""
    from merlin_mdm.results.tables import bootstrap_groups, group_clusters

    rng = np.random.default_rng(3)
    _write(tmp_path / "runs" / "iid.h5", "iid", 2, 0, rng.random(1000) < 0.2, np.full(1000, 2), n_examples=1000)
    _write(tmp_path / "runs" / "learned.h5", "learned", 2, 0, rng.random(200) < 0.9, np.full(200, 2),
           n_examples=200)
    report = _aggregate(tmp_path / "runs", tmp_path / "out.h5")
    (found,) = compare_at_equal_compute(report.summary, bootstrap_groups(report.table),
                                        clusters=group_clusters(report.table))
    assert found.baseline is not None and found.baseline.sampler == "iid" and not found.paired
    assert "(unpaired)" in (tmp_path / "out.md").read_text(encoding="utf-8")
    _write(tmp_path / "same" / "iid.h5", "iid", 2, 0, rng.random(200) < 0.2, np.full(200, 2), n_examples=200)
    _write(tmp_path / "same" / "learned.h5", "learned", 2, 0, rng.random(200) < 0.9, np.full(200, 2),
           n_examples=200)
    same = _aggregate(tmp_path / "same", tmp_path / "same.h5")
    (paired,) = compare_at_equal_compute(same.summary, bootstrap_groups(same.table),
                                         clusters=group_clusters(same.table))
    assert paired.paired and "(unpaired)" not in (tmp_path / "same.md").read_text(encoding="utf-8")


def test_a_lines_interval_does_not_depend_on_the_runs_beside_it(tmp_path: Path) -> None:
    """Runs are padded to the most examples of any run of their task; the bootstrap drew example indices over
    the padding too, so a 50-example line's interval moved ([74.0, 94.0] alone, [73.3, 93.8] beside a
    100-example run of another method)."""
    rng = np.random.default_rng(11)
    small = rng.random(50) < 0.84
    _write(tmp_path / "alone" / "iid.h5", "iid", 2, 0, small, np.full(50, 2), n_examples=50)
    _write(tmp_path / "beside" / "iid.h5", "iid", 2, 0, small, np.full(50, 2), n_examples=50)
    _write(tmp_path / "beside" / "top.h5", "top_prob", 4, 0, rng.random(100) < 0.5, np.full(100, 4), n_examples=100)
    alone = _aggregate(tmp_path / "alone", tmp_path / "alone.h5")
    beside = _aggregate(tmp_path / "beside", tmp_path / "beside.h5")
    (line,) = [r for r in alone.summary if r.sampler == "iid"]
    (same,) = [r for r in beside.summary if r.sampler == "iid"]
    assert (line.ci_low, line.ci_high) == (same.ci_low, same.ci_high)
    assert (line.ci_low, line.ci_high) == interval(bootstrap_accuracy(small[None].astype(np.int8)))
