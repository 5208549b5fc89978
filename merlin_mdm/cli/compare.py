"""``merlin-mdm compare``: one line of evaluation runs against others, paired over seeds and examples."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from merlin_mdm.results.paired import Difference, Line

__all__ = ["compare"]


@click.command("compare")
@click.argument("first")
@click.argument("others", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the lines and differences as JSON.")
def compare(first: str, others: tuple[str, ...], as_json: bool) -> None:
    """Compare the runs of FIRST with those of each of OTHERS, paired over training seeds and examples.

    Each argument is one line: a method's metrics files, one per training seed, as a quoted glob or one
    file, optionally named with NAME=PATTERN. Every line must hold the same training seeds as FIRST and,
    seed by seed, runs on the same examples (task and knobs, --seed, --n-examples); anything else is refused.

    For each line: accuracy with its 95% bootstrap interval (seeds and examples resampled jointly, as in
    the study report), NFE @Avg and @Max, and FIRST minus it in points with the paired interval.

    \b
    Example: a learned order against two baselines at T=5, three denoiser seeds:
      merlin-mdm compare 'learned=ev/seed*/clone_T5.h5' 'ev/seed*/thr_t0.99_T5.h5' 'ev/seed*/eb_g0.1_T5.h5'
    """
    from merlin_mdm.results.paired import compare_lines, load_line

    head = load_line(first)
    lines = [load_line(argument) for argument in others]
    differences = compare_lines(head, lines)
    if as_json:
        click.echo(json.dumps(_payload(head, differences), indent=2, sort_keys=True))
    else:
        _render(head, differences)


def _render(head: Line, differences: tuple[Difference, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    from merlin_mdm.results.statistics import N_BOOT, interval
    from merlin_mdm.status.render import console_width

    table = Table(title=f"{head.label} against {len(differences)} line(s), paired", title_justify="left")
    for name in ("line", "runs x examples", "accuracy [95% CI]", "NFE @Avg", "NFE @Max",
                 "first minus line, points [95% CI]", "verdict"):
        table.add_column(name, overflow="fold")
    rows: list[tuple[Line, Difference | None]] = [(head, None), *((item.other, item) for item in differences)]
    for line, item in rows:
        low, high = interval(line.draws())
        diff = "" if item is None else f"{100 * item.value:+.1f} [{100 * item.low:+.1f}, {100 * item.high:+.1f}]"
        table.add_row(line.label, f"{len(line.files)} x {line.correct.shape[1]}",
                      f"{100 * line.accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}]", f"{line.mean_nfe:.2f}",
                      str(line.max_nfe), diff, "" if item is None else item.verdict)
    console = Console(width=console_width(sys.stdout))
    console.print(table)
    seeds = ", ".join(str(seed) for seed in head.train_seeds)
    console.print(f"Training seeds {seeds}; {head.examples[0][0]}, evaluation seed {head.examples[0][1]}. "
                  f"Intervals: {N_BOOT} bootstrap resamples of seeds and examples, the same for every line.",
                  soft_wrap=True)


def _payload(head: Line, differences: tuple[Difference, ...]) -> dict[str, Any]:
    from merlin_mdm.results.statistics import interval

    def line_json(line: Line) -> dict[str, Any]:
        low, high = interval(line.draws())
        return {"label": line.label, "files": [str(path) for path in line.files],
                "train_seeds": list(line.train_seeds), "accuracy": line.accuracy, "ci": [low, high],
                "mean_nfe": line.mean_nfe, "max_nfe": line.max_nfe}

    return {
        "first": line_json(head),
        "others": [{**line_json(item.other), "first_minus_this": item.value,
                    "first_minus_this_ci": [item.low, item.high], "verdict": item.verdict} for item in differences],
    }
