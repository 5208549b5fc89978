"""Learned lines against each training seed's own best baseline: matched per denoiser, then averaged.

The pooled comparison (``compare_at_equal_compute`` in :mod:`merlin_mdm.results.report`) picks one baseline line for
every training seed and matches the calls only on average over the seeds. When a learned line spends more calls
on some denoisers than on others, its difference from that one line swings from denoiser to denoiser, and the
interval resamples the swing. Here every cluster (a training seed on its examples,
:func:`merlin_mdm.results.tables.run_cluster`) gets its own comparator: the most accurate baseline in that
cluster whose mean NFE there is at most the learned line's mean NFE there. The margin is the mean over clusters of
learned minus that baseline; its interval is a bootstrap over clusters and, within each, over examples (the same
example indices for both sides: paired), a cluster's several learned runs (policy seeds) resampled within it.
Taking each cluster's best baseline favours the baseline (a maximum over noisy lines), so the margin errs
against the learned order. Clusters where every baseline spends more calls are left out and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from merlin_mdm.results.roles import NFE_SLACK, is_baseline, is_learned, verdict
from merlin_mdm.results.statistics import BOOTSTRAP_SEED, N_BOOT, interval
from merlin_mdm.results.tables import GroupKey, RunTable, SummaryRow, group_runs, run_cluster

__all__ = ["MatchedComparison", "compare_per_seed"]


@dataclass(frozen=True)
class MatchedComparison:
    """A learned line against each cluster's best baseline at no more mean NFE in that cluster.

    Attributes:
        learned: the learned line.
        margin: mean over matched clusters of learned minus baseline accuracy (fraction); NaN when none matched.
        low: lower end of the bootstrap interval of the margin.
        high: upper end.
        margins: each matched cluster's difference, in cluster order.
        comparators: each matched cluster's baseline method, in the same order.
        unmatched: clusters where every baseline spends more calls than the learned line (left out).
    """

    learned: SummaryRow
    margin: float
    low: float
    high: float
    margins: tuple[float, ...]
    comparators: tuple[str, ...]
    unmatched: int

    @property
    def verdict(self) -> str:
        """``learned better`` / ``baseline better`` (the interval excludes 0) or ``no significant difference``."""
        return verdict(self.low, self.high, bool(self.margins))


@dataclass(frozen=True)
class _Cluster:
    """One cluster's outcomes: the learned runs' (R, N) and the chosen baseline's runs' (Q, N), -1 where unseen."""

    learned: np.ndarray
    baseline: np.ndarray
    method: str


def compare_per_seed(table: RunTable, summary: Sequence[SummaryRow], n_boot: int = N_BOOT,
                     seed: int = BOOTSTRAP_SEED) -> list[MatchedComparison]:
    """Every learned line of ``summary`` matched per cluster (see the module docstring); [] without outcomes.

    ``n_boot`` and ``seed`` set the bootstrap (the report uses the defaults; another seed shows how much an
    interval's ends move with the resampling alone)."""
    correct = table.examples.get("correct")
    if correct is None:
        return []
    rows = table.rows()
    runs = {key: _by_cluster(indices, rows) for key, indices in group_runs(table).items()}
    out = []
    for line in (r for r in summary if is_learned(r)):
        rivals = [r for r in summary if r.task == line.task and is_baseline(r)]
        clusters, unmatched = [], 0
        for cluster, indices in runs.get(_key(line), {}).items():
            found = _best_rival(indices, cluster, rivals, runs, rows, correct)
            if found is None:
                unmatched += 1
            else:
                clusters.append(found)
        out.append(_comparison(line, clusters, unmatched, n_boot, seed))
    return out


def _key(row: SummaryRow) -> GroupKey:
    return (row.task, row.method, row.steps)


def _by_cluster(indices: Sequence[int], rows: Sequence[dict[str, Any]]) -> dict[tuple[Any, ...], list[int]]:
    out: dict[tuple[Any, ...], list[int]] = {}
    for index in indices:
        out.setdefault(run_cluster(rows[index]), []).append(index)
    return out


def _mean(indices: Sequence[int], rows: Sequence[dict[str, Any]], name: str) -> float:
    return float(np.mean([float(rows[i][name]) for i in indices]))


def _best_rival(learned: list[int], cluster: tuple[Any, ...], rivals: Sequence[SummaryRow],
                runs: dict[GroupKey, dict[tuple[Any, ...], list[int]]], rows: Sequence[dict[str, Any]],
                correct: np.ndarray) -> _Cluster | None:
    """The most accurate baseline of ``cluster`` at no more mean NFE there than the learned runs (fewer calls
    breaks ties), on the same examples; None when there is none."""
    budget = _mean(learned, rows, "mean_nfe") + NFE_SLACK
    width = int((correct[learned[0]] >= 0).sum())
    best: tuple[float, float, SummaryRow, list[int]] | None = None
    for rival in rivals:
        indices = runs.get(_key(rival), {}).get(cluster)
        if not indices or _mean(indices, rows, "mean_nfe") > budget:
            continue
        if any(int((correct[i] >= 0).sum()) != width for i in indices):
            continue  # other examples: not paired with the learned runs
        score = (_mean(indices, rows, "accuracy"), -_mean(indices, rows, "mean_nfe"))
        if best is None or score > best[:2]:
            best = (*score, rival, indices)
    if best is None:
        return None
    return _Cluster(correct[learned].astype(np.int8), correct[best[3]].astype(np.int8), best[2].method)


def _comparison(line: SummaryRow, clusters: list[_Cluster], unmatched: int, n_boot: int,
                seed: int) -> MatchedComparison:
    if not clusters:
        return MatchedComparison(line, float("nan"), float("nan"), float("nan"), (), (), unmatched)
    margins = [_accuracy(c.learned) - _accuracy(c.baseline) for c in clusters]
    low, high = interval(_bootstrap(clusters, n_boot, seed))
    return MatchedComparison(line, float(np.mean(margins)), low, high, tuple(margins),
                             tuple(c.method for c in clusters), unmatched)


def _accuracy(outcomes: np.ndarray) -> float:
    seen = outcomes >= 0
    return float((outcomes > 0).sum() / max(1, seen.sum()))


def _bootstrap(clusters: list[_Cluster], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,) draws of the mean margin: clusters drawn with replacement; in each, examples (paired) and the
    learned and baseline runs drawn with replacement."""
    rng = np.random.default_rng(seed)
    times = np.zeros((n_boot, len(clusters)))
    np.add.at(times, (np.repeat(np.arange(n_boot), len(clusters)),
                      rng.integers(0, len(clusters), size=n_boot * len(clusters))), 1.0)
    margin = np.zeros((n_boot, len(clusters)))
    for index, cluster in enumerate(clusters):
        examples = cluster.learned.shape[1]
        weights = rng.multinomial(examples, np.full(examples, 1.0 / examples), size=n_boot).astype(np.float64)
        margin[:, index] = _drawn(cluster.learned, weights, rng) - _drawn(cluster.baseline, weights, rng)
    out: np.ndarray = (times * margin).sum(axis=1) / len(clusters)
    return out


def _drawn(outcomes: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(B,) accuracy of ``outcomes`` (R, N) under example weights (B, N), its R runs drawn with replacement."""
    picks = rng.multinomial(outcomes.shape[0], np.full(outcomes.shape[0], 1.0 / outcomes.shape[0]),
                            size=weights.shape[0]).astype(np.float64)  # (B, R)
    hits = weights @ np.where(outcomes > 0, 1.0, 0.0).T  # (B, R)
    seen = weights @ (outcomes >= 0).astype(np.float64).T
    out: np.ndarray = (picks * hits).sum(axis=1) / np.maximum((picks * seen).sum(axis=1), 1.0)
    return out
