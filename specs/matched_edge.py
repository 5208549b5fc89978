"""How firm a "matched per training seed" lower end is, when a reading lands near its bound.

    .venv/bin/python specs/matched_edge.py RESULTS.h5 'nfe_penalty=0.13' [--draws 20000] [--seeds 20] [--bound 5]

For each learned line whose label contains the given text, prints unrounded (in points): the report's margin and
interval (its bootstrap: seed 20260, 1000 draws), the same bootstrap seed with more draws, the lower end under
other bootstrap seeds (1000 draws each: the Monte Carlo spread of the report's lower end), and a Student t
interval over the per-seed margins (seeds as the only source of spread). Reads a results file written by
``merlin-mdm aggregate``; changes nothing. Used for set M (docs/mdm-order-learning.md, section 31).
"""

import argparse
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from merlin_mdm.results import matched
from merlin_mdm.results.aggregate import AggregateOutputs, aggregate
from merlin_mdm.results.roles import is_baseline
from merlin_mdm.results.statistics import BOOTSTRAP_SEED, N_BOOT

# two-sided 97.5% quantiles of Student's t for 1-30 degrees of freedom (numpy has no t distribution)
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results.h5 written by merlin-mdm aggregate")
    parser.add_argument("line", help="text that the learned lines' labels contain, e.g. nfe_penalty=0.13")
    parser.add_argument("--draws", type=int, default=20000, help="bootstrap draws for the long run")
    parser.add_argument("--seeds", type=int, default=20, help="other bootstrap seeds to try (1000 draws each)")
    parser.add_argument("--bound", type=float, default=5.0, help="the bound (points) the lower end is read against")
    args = parser.parse_args()
    with TemporaryDirectory() as scratch:
        report = aggregate(str(args.results), AggregateOutputs(Path(scratch, "r.h5"), None, None, None),
                           progress=False)
    assert report is not None
    chosen = [c.learned.method for c in matched.compare_per_seed(report.table, report.summary)
              if args.line in c.learned.method]
    for method in chosen:
        def line(n_boot: int = N_BOOT, seed: int = BOOTSTRAP_SEED, method: str = method) -> matched.MatchedComparison:
            rows = [r for r in report.summary if r.method == method or is_baseline(r)]  # only this line's bootstrap
            return next(c for c in matched.compare_per_seed(report.table, rows, n_boot, seed)
                        if c.learned.method == method)

        first = line()
        print(f"{method}\n  report: {100 * first.margin:+.3f} [{100 * first.low:+.3f}, {100 * first.high:+.3f}]"
              f" over {len(first.margins)} seeds: {' '.join(f'{100 * m:+.2f}' for m in first.margins)}")
        long = line(args.draws)
        print(f"  same bootstrap seed, {args.draws} draws: [{100 * long.low:+.3f}, {100 * long.high:+.3f}]")
        lows = [100 * line(seed=1000 + offset).low for offset in range(args.seeds)]
        print(f"  lower end under bootstrap seeds 1000-{999 + args.seeds}: {min(lows):+.3f} to {max(lows):+.3f},"
              f" median {np.median(lows):+.3f}; below {args.bound:+.1f} under {sum(low < args.bound for low in lows)}")
        margins = 100 * np.array(first.margins)
        half = T_975[len(margins) - 2] * margins.std(ddof=1) / np.sqrt(len(margins))
        print(f"  t interval over seeds: [{margins.mean() - half:+.3f}, {margins.mean() + half:+.3f}]"
              f" (spread {margins.std(ddof=1):.2f})")


if __name__ == "__main__":
    main()
