"""Paired bootstrap confidence intervals over training seeds and evaluation examples.

Every method of a study is evaluated on the same examples (the evaluation seed fixes them) with models from the
same training seeds, so their per-example outcomes line up: ``correct[s, n]`` is run ``s`` (one training seed),
example ``n``. :func:`bootstrap_accuracy` resamples seeds and examples jointly with replacement from a generator
seeded by :data:`BOOTSTRAP_SEED` alone, so two methods with outcome arrays of the same shape get the *same*
resampled indices: the difference of their bootstrap draws is the paired bootstrap of the difference.
Deterministic: equal inputs give equal intervals.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BOOTSTRAP_SEED", "CI_LEVEL", "N_BOOT", "bootstrap_accuracy", "interval"]

N_BOOT = 1000  # bootstrap resamples
CI_LEVEL = 0.95  # two-sided confidence level of every interval reported
BOOTSTRAP_SEED = 20260  # the one seed of every resampling (same indices for same shapes: paired)


def bootstrap_accuracy(correct: np.ndarray, n_boot: int = N_BOOT) -> np.ndarray:
    """Bootstrap draws of the mean accuracy over runs and examples.

    Args:
        correct: (S, N) outcomes, 1 correct, 0 wrong, negative where a run has no such example.

    Returns:
        (n_boot,) float64 accuracies (fractions), NaN where a resample holds no outcome at all.
    """
    values = np.where(correct >= 0, correct, np.nan).astype(np.float64)  # (S, N)
    runs, examples = values.shape
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    pick_runs = rng.integers(0, runs, size=(n_boot, runs))  # (B, S)
    pick_examples = rng.integers(0, examples, size=(n_boot, examples))  # (B, N)
    drawn = values[pick_runs[:, :, None], pick_examples[:, None, :]]  # (B, S, N)
    counts = np.isfinite(drawn).sum(axis=(1, 2))
    totals = np.nansum(drawn, axis=(1, 2))
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def interval(draws: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap draws: (low, high); NaNs when there are none."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))
