"""Progress per sample: a unit's worker reports its tasks as they end, slow ones at once, quick ones in batches.

Shared by both backends: the local pool's workers send the count to the runner (its progress bar); Celery
workers write the unit's done-markers to the Redis status store, so `status` moves per sample.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TICK_SECONDS", "TaskTicker"]

TICK_SECONDS = 0.2  # quick tasks are reported together at most this often; a slower task at once


class TaskTicker:
    """Called as each task of a unit ends (``run_unit``'s ``on_task``); calls ``report(n)`` with the tasks
    ended since its last report, at most once per ``every`` seconds and at the latest ``every`` seconds after
    a task ended.

    One report per task would wake the local runner, or write to Redis, 10,000 times for 10,000 null samples.
    Tasks that end within ``every`` of the last report wait for a timer: without it, quick tasks ahead of a slow
    one in the same unit would be reported only when the slow one ends. ``report`` may run on the timer's
    thread, never at the same time as another report. Call :meth:`close` when the unit ends, before its outcome
    is sent: what is left unreported then is reported by the unit's outcome.
    """

    def __init__(self, report: Callable[[int], None], every: float = TICK_SECONDS):
        self.report = report
        self.every = every
        self.pending = 0
        self.last = time.monotonic()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def __call__(self) -> None:
        with self._lock:
            self.pending += 1
            wait = self.last + self.every - time.monotonic()
            if wait <= 0:
                self._report()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._on_timer)
                self._timer.daemon = True  # a worker that exits mid-unit does not wait for it
                self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self.pending and not self._closed:
                self._report()

    def _report(self) -> None:  # with the lock held
        self.report(self.pending)
        self.pending, self.last = 0, time.monotonic()

    def close(self) -> None:
        """No report after this returns (one in progress has ended)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
