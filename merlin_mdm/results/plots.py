"""Accuracy against mean NFE (the Pareto view), one panel per task (matplotlib, Agg canvas, no pyplot).

The x axis is the mean number of denoiser calls on a log2 scale; every series has its own marker; a shaded band is
the 95% paired bootstrap interval (an error bar for a single point); the caption gives the number of runs (training
seeds, or training x policy seeds) behind each line. A swept baseline (``eb``'s gamma, ``threshold``'s tau: knobs
that move its mean NFE) is drawn as its front, points joined in order of mean NFE and listed once in the legend,
or one front per cap when it was swept at several caps; its other settings (``blocks=4``, a temperature) are
series of their own, and every learned line is its own series. Long labels are wrapped and
the figure grows with its legend, so a study with dozens of lines stays readable. Written as PNG and SVG with no
timestamps, so equal inputs give equal files.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merlin_mdm.results.roles import is_baseline
from merlin_mdm.results.tables import SummaryRow

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MARKERS", "plot_accuracy_vs_nfe"]

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H", "1", "2", "3", "4")
_LABEL_WIDTH = 64  # characters per legend line
_LEGEND_LINE_INCHES = 0.16


def _series(rows: Sequence[SummaryRow]) -> dict[str, list[SummaryRow]]:
    """Rows per plotted series: a baseline's settings along its front together, each other method alone.

    A baseline's front joins the settings that differ only in knobs that move its mean NFE at one budget (EB's
    gamma, threshold's tau: :func:`_front_knobs`); settings that differ in anything else (``blocks=4``, another
    temperature) are series of their own, or a vertical line would join different methods. A front swept at
    several caps (e.g. EB capped at 2, 3, 4 and 16 calls) is one front per cap ("eb, at most 4 calls"): joined
    across caps its points would zigzag between fronts of different budgets.
    """
    baselines = [row for row in rows if is_baseline(row)]
    keys: dict[int, str] = {}
    for sampler in dict.fromkeys(row.sampler for row in baselines):
        mine = [row for row in baselines if row.sampler == sampler]
        front = _front_knobs(mine) | _constant_knobs(mine)  # a knob all of them share names no series apart
        for row in mine:
            name, knobs = _split_label(row.method)
            kept = [f"{k}={v}" for k, v in knobs.items() if k not in front]
            keys[id(row)] = f"{name} ({', '.join(kept)})" if kept else name
    per_cap = {key for key in set(keys.values())
               if _swept_at_several_caps([row for row in baselines if keys[id(row)] == key])}
    out: dict[str, list[SummaryRow]] = {}
    for row in rows:
        key = keys.get(id(row), row.method)
        if key in per_cap:
            key = f"{key}, at most {row.steps} calls"
        out.setdefault(key, []).append(row)
    return out


def _split_label(method: str) -> tuple[str, dict[str, str]]:
    """``eb (gamma=0.1, blocks=4)`` -> ("eb", {"gamma": "0.1", "blocks": "4"}); a label of another shape is all
    name."""
    if not method.endswith(")") or " (" not in method:
        return method, {}
    name, inner = method[:-1].split(" (", 1)
    parts = [part.partition("=") for part in inner.split(", ")]
    if not all(sep and key for key, sep, _ in parts):
        return method, {}
    return name, {key: value for key, _, value in parts}


def _constant_knobs(rows: Sequence[SummaryRow]) -> set[str]:
    """The knobs every row of one sampler has, with one value."""
    labelled = [_split_label(row.method)[1] for row in rows]
    return {k for k, v in labelled[0].items() if all(knobs.get(k) == v for knobs in labelled)} if labelled else set()


def _front_knobs(rows: Sequence[SummaryRow]) -> set[str]:
    """The knobs of one sampler's rows that are swept along its front: at one budget, settings differing only in
    the knob spend different mean NFE, or the knob takes three values or more there (a sweep that happens not to
    move the calls on this task is still one), or it follows the budget. Never the token temperature; a knob set
    once beside its absence (``blocks=4``) that leaves the calls alone is a setting of its own."""
    labelled = [(row, _split_label(row.method)[1]) for row in rows]
    front = set()
    for knob in {k for _, knobs in labelled for k in knobs} - {"temperature"}:
        spends: dict[tuple[Any, ...], set[float]] = {}
        values: dict[tuple[Any, ...], set[str | None]] = {}
        for row, knobs in labelled:
            at = (row.steps, tuple(sorted((k, v) for k, v in knobs.items() if k != knob)))
            spends.setdefault(at, set()).add(round(row.mean_nfe, 6))
            values.setdefault(at, set()).add(knobs.get(knob))
        if any(len(nfes) > 1 for nfes in spends.values()) or any(len(v) > 2 for v in values.values()) or \
                _follows_the_budget(knob, labelled):
            front.add(knob)
    return front


def _follows_the_budget(knob: str, labelled: Sequence[tuple[SummaryRow, dict[str, str]]]) -> bool:
    """Whether the knob takes one value at each budget and another at another (``learned_counts``' T: the counts
    of the policy trained for that budget), so that its settings are one method along the budget axis."""
    per_budget: dict[int, set[str | None]] = {}
    for row, knobs in labelled:
        per_budget.setdefault(row.steps, set()).add(knobs.get(knob))
    return all(len(v) == 1 for v in per_budget.values()) and len(set().union(*per_budget.values())) > 1


def _swept_at_several_caps(rows: Sequence[SummaryRow]) -> bool:
    """Whether the rows of one front have more than one setting at some cap and appear at more than one cap."""
    caps = {r.steps for r in rows}
    return len(caps) > 1 and len({(r.steps, r.method) for r in rows}) > len(caps)


def _series_label(name: str, points: Sequence[SummaryRow]) -> str:
    settings = len({r.method for r in points})
    extra = f", {settings} settings" if settings > 1 else ""
    return textwrap.fill(f"{name} (n={max(r.n_seeds for r in points)}{extra})", _LABEL_WIDTH,
                         subsequent_indent="  ")


def _caption(summary: Sequence[SummaryRow]) -> str:
    counts = ", ".join(str(n) for n in sorted({row.n_seeds for row in summary}))
    text = (f"Accuracy against mean denoiser calls (log2 axis). Bands/bars: 95% paired bootstrap intervals over "
            f"training seeds and evaluation examples. Runs per point (one per training seed, or per training and "
            f"policy seed): {counts}.")
    return textwrap.fill(text, 110)


def _panel(ax: Axes, rows: Sequence[SummaryRow], task: str) -> None:
    for index, (name, members) in enumerate(_series(rows).items()):
        points = sorted(members, key=lambda r: (r.mean_nfe, r.steps))
        xs = [max(r.mean_nfe, 1.0) for r in points]
        ys = [100 * r.accuracy_mean for r in points]
        lows = [100 * r.ci_low if not math.isnan(r.ci_low) else y for r, y in zip(points, ys, strict=True)]
        highs = [100 * r.ci_high if not math.isnan(r.ci_high) else y for r, y in zip(points, ys, strict=True)]
        line = ax.plot(xs, ys, label=_series_label(name, points), **_style(index))[0]
        if len(points) > 1:
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
        else:
            ax.errorbar(xs, ys, yerr=[[y - lo for y, lo in zip(ys, lows, strict=True)],
                                      [hi - y for y, hi in zip(ys, highs, strict=True)]],
                        fmt="none", ecolor=line.get_color(), capsize=3)
    ax.set_xscale("log", base=2)
    _label_short_axis(ax)
    ax.set_title(task, fontsize="medium")
    ax.set_xlabel("mean NFE (denoiser calls per sequence, log2)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _style(index: int) -> dict[str, Any]:
    """Series ``index``'s look, unlike every other's: ten colours, then the ten again dashed with hollow markers
    (then dotted, dash-dotted), each with its own marker (matplotlib's cycle repeats its colours after ten, and
    pairs such as a blue circle and a blue hexagon could not be told apart)."""
    rounds = index // 10
    style: dict[str, Any] = {"color": f"C{index % 10}", "marker": MARKERS[index % len(MARKERS)],
                                "linestyle": ("-", "--", ":", "-.")[rounds % 4]}
    if rounds % 2:
        style["markerfacecolor"] = "none"
    return style


_SHORT_TICKS = (1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)


def _label_short_axis(ax: Axes) -> None:
    """A log2 axis spanning less than three octaves shows one or two powers of two at most (2.2 to 4.7 calls had
    only "2²"): label plain numbers in between instead."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    low, high = ax.get_xlim()
    if low <= 0 or high / low >= 8:
        return
    ticks = [t for t in _SHORT_TICKS if low <= t <= high]
    if len(ticks) > 8:
        ticks = ticks[:: math.ceil(len(ticks) / 8)]
    if len(ticks) >= 2:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())


def _height(summary: Sequence[SummaryRow], tasks: Sequence[str]) -> float:
    """Inches: 6, or more when a panel's legend (wrapped labels) needs it."""
    lines = [sum(_series_label(name, points).count("\n") + 1
                 for name, points in _series([r for r in summary if r.task == task]).items()) for task in tasks]
    return max(6.0, 1.5 + _LEGEND_LINE_INCHES * max(lines, default=0))


def plot_accuracy_vs_nfe(summary: Sequence[SummaryRow], path: Path, svg: Path | None = None) -> list[Path]:
    """Write ``path`` (PNG) and the same figure beside it as SVG.

    Args:
        summary: the Table 1 rows.
        path: the PNG to write.
        svg: the SVG to write; by default ``path`` with ``.svg``.

    Returns:
        The files written (PNG, SVG).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(row.task for row in summary))
    figure = Figure(figsize=(13.0 * max(1, len(tasks)), _height(summary, tasks)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=False):
        _panel(ax, [row for row in summary if row.task == task], task)
    figure.supxlabel(_caption(summary), fontsize="small")
    svg = svg if svg is not None else path.with_suffix(".svg")
    figure.savefig(path, format="png", metadata={"Software": None})
    with matplotlib.rc_context({"svg.hashsalt": "merlin-mdm"}):  # fixed element ids: equal inputs, equal SVG
        figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return [path, svg]
