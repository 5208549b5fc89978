"""Progress per sample: a unit's worker reports its tasks as they end, slow ones at once, quick ones in batches.

Shared by both backends: the local pool's workers send the count to the runner (its progress bar); Celery
workers write the unit's done-markers to the Redis status store, so `status` moves per sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TICK_SECONDS", "TaskTicker"]

TICK_SECONDS = 0.2  # quick tasks are reported together at most this often; a slower task at once


class TaskTicker:
    """Called as each task of a unit ends (``run_unit``'s ``on_task``); calls ``report(n)`` with the tasks
    ended since its last report when at least ``every`` seconds have passed since then.

    One report per task would wake the local runner, or write to Redis, 10,000 times for 10,000 null samples.
    What is left unreported when the unit ends is reported by the unit's outcome.
    """

    def __init__(self, report: Callable[[int], None], every: float = TICK_SECONDS):
        self.report = report
        self.every = every
        self.pending = 0
        self.last = time.monotonic()

    def __call__(self) -> None:
        self.pending += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.report(self.pending)
            self.pending, self.last = 0, now
