"""What part a Table 1 line plays in the comparisons: a learned order, a baseline, or neither (a reference).

Baselines are every sampler but ``learned``, the task-specific ``*_oracle`` references (they read the task's
structure from the prompt) and the state-dependence diagnostic's runs.
"""

from __future__ import annotations

from merlin_mdm.results.tables import SummaryRow

__all__ = ["DIAGNOSTIC_SAMPLER", "NFE_SLACK", "is_baseline", "is_learned", "verdict"]

NFE_SLACK = 1e-9  # a baseline counts as "at most the same compute" up to float noise
DIAGNOSTIC_SAMPLER = "learned_shuffled"  # runs of `merlin-mdm mdm order-diagnostic`


def is_learned(row: SummaryRow) -> bool:
    """A learned-order line (the ``learned`` sampler, any decoding)."""
    return row.sampler == "learned"


def is_baseline(row: SummaryRow) -> bool:
    """A line the learned order is compared with: anything but ``learned``, task-specific oracles and the
    state-dependence diagnostic."""
    return not is_learned(row) and not row.sampler.endswith("_oracle") and row.sampler != DIAGNOSTIC_SAMPLER


def verdict(low: float, high: float, compared: bool) -> str:
    """``learned better`` / ``baseline better`` when the interval of learned minus baseline excludes 0, else ``no
    significant difference``; ``no baseline at this compute`` when nothing was ``compared``."""
    if not compared:
        return "no baseline at this compute"
    if low > 0:
        return "learned better"
    if high < 0:
        return "baseline better"
    return "no significant difference"
