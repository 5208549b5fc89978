"""``merlin-mdm compare``: one line of evaluation runs against others, paired over seeds and examples."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from merlin_mdm.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from merlin_mdm.results.paired import Difference, LineSummary, PairedComparison

__all__ = ["compare"]


@click.command("compare")
@click.argument("first")
@click.argument("others", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the lines and differences as JSON.")
@click.option("--other-denoisers", is_flag=True,
              help="Allow runs of one training seed evaluated with different denoisers (checkpoint_id), e.g. two "
                   "denoiser sizes trained with the same seeds; they are then paired by examples only.")
def compare(first: str, others: tuple[str, ...], as_json: bool, other_denoisers: bool) -> None:
    """Compare the runs of FIRST with those of each of OTHERS, paired over training seeds and examples.

    Each argument is one line: a method's metrics files, one per training seed, as a quoted glob or one
    file, optionally named with NAME=PATTERN. A learned line may hold several files per training seed, one
    per policy seed (files that record different policy.seed values). Every line must hold the same training
    seeds as FIRST and, seed by seed, runs on the same examples (task and knobs, --seed, --n-examples) with the
    same denoiser (checkpoint_id; see --other-denoisers); anything else is refused.

    For each line: accuracy with its 95% bootstrap interval (seeds and examples resampled jointly, as in
    the study report), NFE @Avg and @Max, and FIRST minus it in points with the paired interval.

    \b
    Example: a learned order against two baselines at T=5, three denoiser seeds:
      merlin-mdm compare 'learned=ev/seed*/clone_T5.h5' 'ev/seed*/thr_t0.99_T5.h5' 'ev/seed*/eb_g0.1_T5.h5'

    \b
    Examples:
      merlin-mdm compare 'm/learned_*.h5' 'm/eb_*.h5'                        learned against EB, paired
      merlin-mdm compare L='m/learned_*.h5' EB='m/eb_*.h5' TH='m/thr_*.h5'   named lines, two comparisons
      merlin-mdm compare 'm/learned_*.h5' 'm/eb_*.h5' --json                 for scripts
    """
    from merlin_mdm.results.paired import compare_lines, load_line, split_label

    _refuse_shared_labels([first, *others], split_label)
    head = load_line(first)
    result = compare_lines(head, [load_line(argument) for argument in others], other_denoisers)
    if as_json:
        click.echo(json.dumps(_payload(result), indent=2, sort_keys=True))
    else:
        _render(result)


def _refuse_shared_labels(arguments: list[str], split_label: Callable[[str], tuple[str, str]]) -> None:
    """Two lines under one name (`A=x A=y`, or one pattern given twice) made a table no reader could tell apart."""
    seen: dict[str, str] = {}
    for argument in arguments:
        label, _ = split_label(argument)
        if label in seen:
            raise UsageError(f"two lines are named {label!r} ({seen[label]!r} and {argument!r}): give each line "
                             "its own NAME=PATTERN")
        seen[label] = argument


def _render(result: PairedComparison) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from merlin_mdm.results.statistics import N_BOOT
    from merlin_mdm.status.render import console_width

    head = result.first.line
    table = Table(title=f"{escape(head.label)} against {len(result.differences)} line(s), paired",
                  title_justify="left")
    for name in ("line", "runs, examples", "accuracy [95% CI]", "NFE @Avg", "NFE @Max",
                 "first minus line, points [95% CI]", "verdict"):
        table.add_column(name, overflow="fold")
    rows: list[tuple[LineSummary, Difference | None]] = [
        (result.first, None), *((item.other, item) for item in result.differences)]
    for line, item in rows:
        diff = "" if item is None else f"{100 * item.value:+.1f} [{100 * item.low:+.1f}, {100 * item.high:+.1f}]"
        table.add_row(escape(line.line.label), f"{len(line.line.files)}, {line.n_examples}",
                      f"{100 * line.accuracy:.1f}% [{100 * line.low:.1f}, {100 * line.high:.1f}]",
                      f"{line.mean_nfe:.2f}", str(line.max_nfe), diff, "" if item is None else item.verdict)
    console = Console(width=console_width(sys.stdout))
    console.print(table)
    seeds = ", ".join(str(seed) for seed in dict.fromkeys(head.train_seeds))
    console.print(escape(f"Training seeds {seeds}; {head.task}, evaluation seed {head.examples[0][1]}. "
                         f"Intervals: {N_BOOT} bootstrap resamples of seeds and examples, the same for every line "
                         "(where a line holds several policy seeds per training seed, those are resampled within "
                         "it); accuracy and NFE pooled over every example."), soft_wrap=True)


def _payload(result: PairedComparison) -> dict[str, Any]:
    def line_json(summary: LineSummary) -> dict[str, Any]:
        line = summary.line
        return {"label": line.label, "files": [str(path) for path in line.files],
                "train_seeds": list(line.train_seeds), "n_examples": summary.n_examples,
                "accuracy": summary.accuracy, "ci": [summary.low, summary.high],
                "mean_nfe": summary.mean_nfe, "max_nfe": summary.max_nfe}

    return {
        "first": line_json(result.first),
        "others": [{**line_json(item.other), "first_minus_this": item.value,
                    "first_minus_this_ci": [item.low, item.high], "verdict": item.verdict}
                   for item in result.differences],
    }
