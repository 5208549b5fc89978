"""Stop signals whose raise Python swallows: the record survives, waits end on it, and nothing is printed."""

from __future__ import annotations

import signal
import sys
import weakref

import pytest

from merlin_mdm.errors import Interrupted
from merlin_mdm.signals import watch_signals


class _Target:
    pass


def _collect_unraisable(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    seen: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(info.exc_value))
    return seen


def test_a_signal_raised_inside_a_weakref_callback_is_recorded_and_ends_the_next_pause(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _collect_unraisable(monkeypatch)
    with watch_signals(signal.SIGUSR1) as watch:
        target = _Target()
        ref = weakref.ref(target, lambda _: signal.raise_signal(signal.SIGUSR1))
        del target  # the callback runs here; Python swallows what the handler raises in it
        assert ref() is None and watch.received == signal.SIGUSR1
        with pytest.raises(Interrupted) as caught:
            watch.pause(60)
    assert caught.value.exit_code == 128 + signal.SIGUSR1
    assert seen == []  # not reported as "Exception ignored in ..." with a traceback


def test_other_swallowed_errors_still_reach_the_previous_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _collect_unraisable(monkeypatch)
    previous = sys.unraisablehook

    def fail(_: object) -> None:
        raise ValueError("a real bug in a callback")

    with watch_signals() as watch:
        target = _Target()
        ref = weakref.ref(target, fail)
        del target
        assert ref() is None and watch.received is None
        watch.pause(0.05)  # no signal: returns after the time
    assert [type(exc) for exc in seen] == [ValueError]
    assert sys.unraisablehook is previous  # restored when the block ends


def test_a_signal_during_a_pause_ends_it() -> None:
    with watch_signals() as watch:
        previous = signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGTERM))
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        try:
            with pytest.raises(Interrupted) as caught:
                watch.pause(60)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    assert caught.value.signum == signal.SIGTERM and watch.count == 1
