"""The progress ticker: quick tasks reported together, and never held back until a slow one ends."""

from __future__ import annotations

import threading

from merlin_mdm.backends.progress import TaskTicker


def test_quick_tasks_are_reported_by_the_timer_while_the_next_task_runs() -> None:
    reports: list[int] = []
    arrived = threading.Event()
    ticker = TaskTicker(lambda n: (reports.append(n), arrived.set()), every=0.05)
    for _ in range(3):  # three tasks end well within one tick: none is reported at once
        ticker()
    assert reports == []
    assert arrived.wait(10), "the three quick tasks were never reported while no further task ended"
    assert reports == [3]
    ticker.close()


def test_nothing_is_reported_after_close() -> None:
    reports: list[int] = []
    ticker = TaskTicker(reports.append, every=0.05)
    ticker()
    ticker.close()  # the unit ended: its outcome reports the rest
    threading.Event().wait(0.2)
    assert reports == []
    assert ticker.pending == 1


def test_a_task_ending_a_tick_after_the_last_report_is_reported_at_once() -> None:
    reports: list[int] = []
    ticker = TaskTicker(reports.append, every=0.0)
    ticker()
    ticker()
    assert reports == [1, 1]
    ticker.close()
