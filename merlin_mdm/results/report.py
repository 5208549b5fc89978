"""The study report (``results.md``): Table 1 per task with confidence intervals, and the equal-compute verdicts.

Written by the aggregate step, so the Markdown that ``docs/results.md`` shows is generated, not typed: the
command that regenerates it is its first paragraph. For every learned-order line the report names the most
accurate *baseline* (any sampler but ``learned`` and the task-specific ``*_oracle`` references) that spends no
more denoiser calls on average, and the paired bootstrap interval of the accuracy difference; then the same
under a hard budget (the best baseline that never spends more calls on an example than the learned line's
worst one); and, where there are several training seeds, the comparison matched per seed
(:mod:`merlin_mdm.results.matched`). Whatever the verdict, it is printed: a learned order that loses is reported
as losing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from merlin_mdm.results.matched import MatchedComparison, compare_per_seed
from merlin_mdm.results.roles import DIAGNOSTIC_SAMPLER, NFE_SLACK, is_baseline, is_learned, verdict
from merlin_mdm.results.statistics import CI_LEVEL, interval
from merlin_mdm.results.tables import GroupKey, RunTable, SummaryRow, group_clusters, method_label, task_label

__all__ = ["Comparison", "compare_at_equal_compute", "is_baseline", "is_learned", "render_report"]

@dataclass(frozen=True)
class Comparison:
    """A learned line against the best baseline at no more mean NFE.

    Attributes:
        learned: the learned line.
        baseline: the best baseline, or None when every baseline spends more calls.
        low: lower end of the paired bootstrap interval of learned minus baseline accuracy (fraction).
        high: upper end.
        paired: whether the bootstrap draws of both lines are paired (the same clusters: training seeds on the
            same examples; see :mod:`merlin_mdm.results.statistics`).
    """

    learned: SummaryRow
    baseline: SummaryRow | None
    low: float
    high: float
    paired: bool

    @property
    def verdict(self) -> str:
        """``learned better`` / ``baseline better`` (the interval excludes 0) or ``no significant difference``."""
        return verdict(self.low, self.high, self.baseline is not None)


def _key(row: SummaryRow) -> GroupKey:
    return (row.task, row.method, row.steps)


def compare_at_equal_compute(summary: Sequence[SummaryRow], draws: Mapping[GroupKey, np.ndarray],
                             at: str = "avg", clusters: Mapping[GroupKey, Mapping[Any, int]] | None = None
                             ) -> list[Comparison]:
    """Every learned line against the most accurate baseline of its task that spends no more calls.

    Args:
        summary: the Table 1 rows.
        draws: bootstrap draws per group.
        at: ``avg``: baselines whose mean NFE is at most the learned line's mean NFE (@Avg); ``max``: at most
            its largest NFE (@Max, the paper's second column; differs from @Avg only for adaptive lines);
            ``cap``: baselines whose *largest* NFE is at most the learned line's (no example gets more calls than
            the learned line's worst one: the comparison under a hard budget of that many calls).
        clusters: each group's bootstrap clusters (:func:`merlin_mdm.results.tables.group_clusters`): two lines
            pair when theirs are equal, whatever their runs per cluster; None: when they have as many runs.
    """
    out = []
    for row in (r for r in summary if is_learned(r)):
        rivals = [r for r in summary if r.task == row.task and is_baseline(r) and _within(r, row, at)]
        best = max(rivals, key=lambda r: (r.accuracy_mean, -r.mean_nfe), default=None)
        low = high = math.nan
        paired = False
        if best is not None and _key(row) in draws and _key(best) in draws:
            low, high = interval(draws[_key(row)] - draws[_key(best)])
            paired = (list(clusters[_key(best)]) == list(clusters[_key(row)]) if clusters is not None
                      else best.n_seeds == row.n_seeds)
        out.append(Comparison(row, best, low, high, paired))
    return out


def _within(rival: SummaryRow, row: SummaryRow, at: str) -> bool:
    """Whether ``rival`` spends no more than ``row`` in the sense of ``at`` (see :func:`compare_at_equal_compute`)."""
    if at == "cap":
        return rival.max_nfe <= row.max_nfe
    budget = row.mean_nfe if at == "avg" else float(row.max_nfe)
    return rival.mean_nfe <= budget + NFE_SLACK


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"


def _ci(low: float, high: float, signed: bool = False) -> str:
    if math.isnan(low):
        return "–"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"[{fmt.format(100 * low)}, {fmt.format(100 * high)}]"


def _table_one(rows: Sequence[SummaryRow], clusters: Mapping[GroupKey, Mapping[Any, int]]) -> list[str]:
    lines = ["| method | T | NFE @Avg | NFE @Max | accuracy (%) | 95% CI | seeds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row.method.replace('|', '/')} | {row.steps} | {row.mean_nfe:.2f} | {row.max_nfe} | "
                     f"{_pct(row.accuracy_mean)} | {_ci(row.ci_low, row.ci_high)} | "
                     f"{_runs(row, list(clusters.get(_key(row), {}).values()))} |")
    return lines


def _runs(row: SummaryRow, sizes: Sequence[int]) -> str:
    """The runs of a line; ``12 (3 x 4)`` where 3 training seeds hold 4 runs each (e.g. policy seeds), ``14 (5
    training seeds)`` where they hold unequal numbers."""
    if not sizes or max(sizes) == 1:
        return str(row.n_seeds)
    if len(set(sizes)) == 1:
        return f"{row.n_seeds} ({len(sizes)} x {sizes[0]})"
    return f"{row.n_seeds} ({len(sizes)} training seeds)"


def _comparisons(found: Sequence[Comparison], capped: bool = False) -> list[str]:
    """Rows of a comparison table; ``capped`` adds the NFE @Max of both lines (the capped comparison)."""
    at_max = " / @Max" if capped else ""
    lines = [f"| learned | T | NFE @Avg{at_max} | accuracy (%) | best baseline at <= NFE | its NFE @Avg{at_max} "
             "| its accuracy (%) | difference, points (95% CI) | verdict |",
             "|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for item in found:
        row, base = item.learned, item.baseline
        name = "–" if base is None else base.method.replace("|", "/")
        nfe = "–" if base is None else f"{base.mean_nfe:.2f}" + (f" / {base.max_nfe}" if capped else "")
        acc = "–" if base is None else _pct(base.accuracy_mean)
        diff = "–" if base is None else f"{100 * (row.accuracy_mean - base.accuracy_mean):+.1f} " + _ci(
            item.low, item.high, signed=True) + ("" if item.paired else " (unpaired)")
        own = f"{row.mean_nfe:.2f}" + (f" / {row.max_nfe}" if capped else "")
        lines.append(f"| {row.method.replace('|', '/')} | {row.steps} | {own} | "
                     f"{_pct(row.accuracy_mean)} | {name} | {nfe} | {acc} | {diff} | {item.verdict} |")
    return lines


def _matched(found: Sequence[MatchedComparison]) -> list[str]:
    """Rows of the per-training-seed comparison (:mod:`merlin_mdm.results.matched`)."""
    lines = ["| learned | T | NFE @Avg | accuracy (%) | seeds matched | each seed's best baseline at <= its NFE "
             "| mean difference, points (95% CI) | per seed | verdict |",
             "|---|---:|---:|---:|---:|---|---:|---|---|"]
    for item in found:
        row = item.learned
        counts = Counter(item.comparators)
        names = ", ".join(f"{m.replace('|', '/')} x{n}" if n > 1 else m.replace("|", "/")
                          for m, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "–"
        matched = f"{len(item.margins)}" + (f" ({item.unmatched} without)" if item.unmatched else "")
        diff = "–" if not item.margins else f"{100 * item.margin:+.1f} " + _ci(item.low, item.high, signed=True)
        per_seed = " ".join(f"{100 * m:+.1f}" for m in item.margins) or "–"
        lines.append(f"| {row.method.replace('|', '/')} | {row.steps} | {row.mean_nfe:.2f} | "
                     f"{_pct(row.accuracy_mean)} | {matched} | {names} | {diff} | {per_seed} | {item.verdict} |")
    return lines


def render_report(summary: Sequence[SummaryRow], table: RunTable, draws: Mapping[GroupKey, np.ndarray],
                  title: str = "Results", command: str = "", figure: str = "", notes: str = "") -> str:
    """The whole Markdown report.

    Args:
        summary: the Table 1 rows.
        table: the runs (for the footer).
        draws: bootstrap draws per group.
        title: the first heading.
        command: the command that regenerates the report (shown first).
        figure: a relative path of the accuracy-against-NFE plot to embed, or "".
        notes: Markdown appended under "Notes" (what the numbers mean, what was not run), or "".

    Returns:
        Markdown text, deterministic in its inputs.
    """
    lines = [f"# {title}", ""]
    if command:
        lines += ["Generated by the study's aggregate step; regenerate with:", "", f"    {command}", ""]
    lines += [f"Accuracy: mean over runs; the {int(100 * CI_LEVEL)}% interval is a bootstrap over training seeds "
              "and evaluation examples jointly, and over the runs of one training seed where a method has "
              "several (e.g. policy seeds on one denoiser). Runs with the same evaluation seed and number of "
              "examples see the same examples, so their differences are paired; a difference marked as "
              "unpaired compares runs that saw other examples. NFE @Avg is the mean number of denoiser calls "
              "per sequence, NFE @Max the most any sequence used.", ""]
    if figure:
        lines += [f"![accuracy against mean NFE]({figure})", ""]
    clusters = group_clusters(table)
    comparisons = compare_at_equal_compute(summary, draws, clusters=clusters)
    at_max_all = compare_at_equal_compute(summary, draws, "max", clusters)  # once for every task, not per task
    capped_all = compare_at_equal_compute(summary, draws, "cap", clusters)
    matched_all = compare_per_seed(table, summary)
    for task in dict.fromkeys(row.task for row in summary):
        lines += [f"## {task}", "", *_table_one([r for r in summary if r.task == task], clusters), ""]
        found = [c for c in comparisons if c.learned.task == task]
        if found:
            lines += ["Learned order against the best baseline at equal or lower mean NFE (@Avg):", "",
                      *_comparisons(found), ""]
        per_seed = [c for c in matched_all if c.learned.task == task and len(c.margins) + c.unmatched > 1]
        if per_seed:
            lines += ["The same matched per training seed: on each seed, the best baseline whose mean NFE on that "
                      "seed is at most the learned line's there; the mean of those differences, with a bootstrap "
                      "over seeds and examples:", "", *_matched(per_seed), ""]
        at_max = [c for c in at_max_all
                  if c.learned.task == task and c.learned.max_nfe > c.learned.mean_nfe + NFE_SLACK]
        if at_max:
            lines += ["Adaptive learned lines against the best baseline whose mean NFE is at most their NFE @Max:",
                      "", *_comparisons(at_max), ""]
        capped = [c for c in capped_all if c.learned.task == task]
        if capped:
            lines += ["Learned lines against the best baseline that never spends more calls on an example (its NFE "
                      "@Max at most theirs: the comparison under a hard budget):", "",
                      *_comparisons(capped, capped=True), ""]
        lines += _state_dependence(table, task)
    if notes.strip():
        lines += ["## Notes", "", notes.strip(), ""]
    lines.append(_footer(table))
    return "\n".join(lines) + "\n"


def _state_dependence(table: RunTable, task: str) -> list[str]:
    """The diagnostic's figures per (method, T), averaged over its runs; [] when there is none."""
    groups: dict[tuple[str, int], list[dict[str, float]]] = {}
    for row in table.rows():
        if row.get("sampler") == DIAGNOSTIC_SAMPLER and task_label(row) == task:
            groups.setdefault((method_label(row), int(row["steps"])), []).append(row)
    if not groups:
        return []
    lines = ["State dependence: the policy's schedules per 100 prompts, and its accuracy when every prompt gets "
             "another prompt's schedule (same counts, same NFE):", "",
             "| learned | T | distinct schedules / 100 | distinct first steps / 100 | own schedules (%) "
             "| shuffled (%) | drop (points) | seeds |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (method, steps), runs in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        def mean(key: str, rows: list[dict[str, float]] = runs) -> float:
            return float(np.mean([float(r[key]) for r in rows]))

        own, shuffled = mean("diag.accuracy_unshuffled"), mean("accuracy")
        name = method.removesuffix(", schedules shuffled across prompts").replace("|", "/")
        lines.append(f"| {name} | {steps} | {mean('diag.distinct_schedules_per_100'):.1f} | "
                     f"{mean('diag.distinct_first_steps_per_100'):.1f} | {100 * own:.1f} | {100 * shuffled:.1f} | "
                     f"{100 * (own - shuffled):+.1f} | {len(runs)} |")
    return [*lines, ""]


def _footer(table: RunTable) -> str:
    runs = "1 run" if table.n_rows == 1 else f"{table.n_rows} runs"
    text = f"{runs} aggregated."
    if table.problems:
        kinds: dict[str, int] = {}
        for problem in table.problems:
            kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
        listed = ", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items()))
        count = len(table.problems)
        were = "file was" if count == 1 else "files were"
        text += f" {count} {were} not used ({listed}); see the results file's problems table."
    return text
