"""Paired bootstrap confidence intervals over training seeds and evaluation examples.

Every method of a study is evaluated on the same examples (the evaluation seed fixes them) with models from the
same training seeds, so their per-example outcomes line up: ``correct[s, n]`` is run ``s``, example ``n``.
Runs fall into *clusters*: the runs of one training seed on one evaluation seed (by default every run is its own
cluster). A cluster holds several runs when a method is replicated on one denoiser, e.g. policies trained with
several policy seeds on the same denoiser. :func:`bootstrap_accuracy` resamples clusters and examples jointly with
replacement, from a generator seeded by :data:`BOOTSTRAP_SEED` alone, and then, within each drawn cluster, its runs
(a nested bootstrap, from a second generator). Two methods with the same number of clusters and examples get the
*same* cluster and example indices whatever their number of runs per cluster: the difference of their draws is
the paired bootstrap of the difference. Deterministic: equal inputs give equal intervals.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["BOOTSTRAP_SEED", "CI_LEVEL", "N_BOOT", "bootstrap_accuracy", "interval"]

N_BOOT = 1000  # bootstrap resamples
CI_LEVEL = 0.95  # two-sided confidence level of every interval reported
BOOTSTRAP_SEED = 20260  # the one seed of every resampling (same indices for same shapes: paired)
_WITHIN_SEED = BOOTSTRAP_SEED + 1  # the runs drawn within a cluster (apart, so that the outer draws stay paired)


def bootstrap_accuracy(correct: np.ndarray, n_boot: int = N_BOOT,
                       clusters: Sequence[Hashable] | None = None) -> np.ndarray:
    """Bootstrap draws of the mean accuracy over runs and examples.

    Args:
        correct: (S, N) outcomes, 1 correct, 0 wrong, negative where a run has no such example.
        n_boot: number of resamples.
        clusters: (S,) the cluster of each run (runs that share a training seed and the examples); None: every
            run is its own cluster. Clusters are ordered by first appearance.

    Returns:
        (n_boot,) float64 accuracies (fractions), NaN where a resample holds no outcome at all.
    """
    runs, examples = correct.shape
    members = _members(clusters if clusters is not None else range(runs), runs)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    pick_clusters = rng.integers(0, len(members), size=(n_boot, len(members)))  # (B, C)
    pick_examples = rng.integers(0, examples, size=(n_boot, examples))  # (B, N)
    weights = _run_weights(pick_clusters, members, runs)  # (B, S): how often each run is drawn
    example_weights = _counts(pick_examples, examples).astype(np.float64)  # (B, N)
    seen = (correct >= 0).astype(np.float64)  # (S, N)
    hits = np.where(correct > 0, 1.0, 0.0)  # (S, N)
    totals = ((example_weights @ hits.T) * weights).sum(axis=1)  # (B,)
    counts = ((example_weights @ seen.T) * weights).sum(axis=1)  # (B,)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def _members(clusters: Sequence[Hashable] | range, runs: int) -> list[list[int]]:
    """Run indices of each cluster, clusters in order of first appearance."""
    labels = list(clusters)
    if len(labels) != runs:
        raise ValueError(f"{len(labels)} cluster labels for {runs} runs")
    order: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        order.setdefault(label, []).append(index)
    return list(order.values())


def _counts(picks: np.ndarray, size: int) -> np.ndarray:
    """(B, K) indices in [0, size) -> (B, size) how often each index was drawn."""
    rows = np.repeat(np.arange(picks.shape[0]), picks.shape[1])
    out = np.zeros((picks.shape[0], size), dtype=np.int64)
    np.add.at(out, (rows, picks.ravel()), 1)
    return out


def _run_weights(pick_clusters: np.ndarray, members: list[list[int]], runs: int) -> np.ndarray:
    """(B, S): each draw's multiplicity of every run, with the runs of each drawn cluster resampled in it."""
    times = _counts(pick_clusters, len(members))  # (B, C): how often each cluster is drawn
    rng = np.random.default_rng(_WITHIN_SEED)
    out = np.zeros((pick_clusters.shape[0], runs), dtype=np.float64)
    for cluster, indices in enumerate(members):
        drawn = times[:, cluster] * len(indices)  # a drawn cluster brings as many runs as it holds
        if len(indices) == 1:
            out[:, indices[0]] = drawn
        else:
            out[:, indices] = rng.multinomial(drawn, np.full(len(indices), 1.0 / len(indices)))
    return out


def interval(draws: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap draws: (low, high); NaNs when there are none."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))
