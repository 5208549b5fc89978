"""Accuracy against mean NFE, one line per method, one panel per task (matplotlib, Agg canvas, no pyplot)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from merlin_mdm.results.tables import SummaryRow

__all__ = ["plot_accuracy_vs_nfe"]


def plot_accuracy_vs_nfe(summary: Sequence[SummaryRow], path: Path) -> Path:
    """Write a PNG of accuracy (%) against mean denoiser calls, one line per method, error bars over seeds.

    Args:
        summary: the Table 1 rows.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(row.task for row in summary))
    figure = Figure(figsize=(6.4 * max(1, len(tasks)), 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=False):
        rows = [row for row in summary if row.task == task]
        for method in dict.fromkeys(row.method for row in rows):
            points = sorted((r for r in rows if r.method == method), key=lambda r: (r.mean_nfe, r.steps))
            errors = [0.0 if math.isnan(r.accuracy_std) else 100 * r.accuracy_std for r in points]
            ax.errorbar([r.mean_nfe for r in points], [100 * r.accuracy_mean for r in points], yerr=errors,
                        marker="o", capsize=3, label=method)
        ax.set_title(task)
        ax.set_xlabel("mean NFE (denoiser calls per sequence)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    figure.savefig(path, format="png", metadata={"Software": None})
    return path
