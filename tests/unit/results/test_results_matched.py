"""The comparison matched per training seed: each seed's own best baseline at no more calls on that seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from merlin_mdm.results.aggregate import aggregate, default_outputs
from merlin_mdm.results.matched import compare_per_seed
from merlin_mdm.results.report import compare_at_equal_compute
from merlin_mdm.results.tables import bootstrap_groups

from .conftest import write_run

N = 1000


def _hits(rate: float, shift: int) -> np.ndarray:
    """``rate`` of N examples correct, the wrong ones starting at ``shift`` (so two lines differ example by example)."""
    wrong = (np.arange(N) + shift) % N < round((1 - rate) * N)
    return ~wrong


def _swinging_study(root: Path) -> None:
    """Seeds 0, 1: the learned line spends 3 calls, seeds 2, 3: 5 calls (4 on average); seed 4: 1 call, below
    every baseline. EB 0.1 spends 3 calls on every seed (80%), EB 0.01 5 calls (88%)."""
    for seed in range(5):
        calls = {0: 3, 1: 3, 2: 5, 3: 5, 4: 1}[seed]
        for policy_seed in (0, 1):  # two policy seeds on every denoiser: 90% and 92%
            write_run(root / f"learned.{seed}.{policy_seed}" / "m.h5", "learned", 8, seed,
                      _hits(0.90 + 0.02 * policy_seed, 7 * seed + policy_seed), np.full(N, calls),
                      method="learned (T=8)", **{"policy.seed": policy_seed})
        write_run(root / f"eb01.{seed}" / "m.h5", "eb", 8, seed, _hits(0.80, 100 + seed), np.full(N, 3),
                  **{"sampler.gamma": 0.1})
        write_run(root / f"eb001.{seed}" / "m.h5", "eb", 8, seed, _hits(0.88, 200 + seed), np.full(N, 5),
                  **{"sampler.gamma": 0.01})


def test_each_seed_gets_its_own_comparator_at_no_more_calls_on_that_seed(tmp_path: Path) -> None:
    _swinging_study(tmp_path / "ws")
    report = aggregate(tmp_path / "ws", default_outputs(tmp_path / "r.h5", title="T", command="c"), progress=False)
    assert report is not None
    (pooled,) = compare_at_equal_compute(report.summary, bootstrap_groups(report.table))
    assert pooled.baseline is not None and pooled.baseline.method == "eb (gamma=0.1)"  # 3 calls <= 3.4 on average
    (matched,) = compare_per_seed(report.table, report.summary)
    assert matched.comparators == ("eb (gamma=0.1)",) * 2 + ("eb (gamma=0.01)",) * 2
    assert matched.unmatched == 1  # seed 4 spends 1 call: no baseline is that cheap
    assert np.allclose(matched.margins, [0.11, 0.11, 0.03, 0.03])  # the two policy seeds averaged: 91%
    assert np.isclose(matched.margin, 0.07)
    assert matched.low < matched.margin < matched.high and matched.verdict == "learned better"
    assert compare_per_seed(report.table, report.summary) == [matched]  # deterministic
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "matched per training seed" in text
    assert ("| 4 (1 without) | eb (gamma=0.01) x2, eb (gamma=0.1) x2 | +7.0 [" in text
            and "| +11.0 +11.0 +3.0 +3.0 | learned better |" in text)


def test_the_interval_resamples_seeds_examples_and_policy_seeds(tmp_path: Path) -> None:
    _swinging_study(tmp_path / "ws")
    report = aggregate(tmp_path / "ws", default_outputs(tmp_path / "r.h5"), progress=False)
    assert report is not None
    (wide,) = compare_per_seed(report.table, report.summary)
    (one,) = compare_per_seed(report.table, report.summary, n_boot=4000)
    assert abs(one.low - wide.low) < 0.01 and abs(one.high - wide.high) < 0.01  # enough draws to be stable
    # margins of 0.11 and 0.03 on two seeds each: the seed resampling alone spans most of [0.03, 0.11]
    assert wide.low < 0.055 and wide.high > 0.085
    (other,) = compare_per_seed(report.table, report.summary, seed=7)  # another bootstrap seed moves only the ends
    assert compare_per_seed(report.table, report.summary, seed=7) == [other]
    assert (other.margin, other.margins, other.comparators) == (wide.margin, wide.margins, wide.comparators)
    assert (other.low, other.high) != (wide.low, wide.high)


def test_a_single_seed_study_has_no_matched_table(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    write_run(root / "l" / "m.h5", "learned", 4, 0, _hits(0.9, 0), np.full(N, 4), method="learned (T=4)")
    write_run(root / "b" / "m.h5", "top_prob", 4, 0, _hits(0.8, 5), np.full(N, 4))
    aggregate(root, default_outputs(tmp_path / "r.h5"), progress=False)
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "best baseline at equal or lower mean NFE" in text and "matched per training seed" not in text
