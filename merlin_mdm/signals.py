"""What SIGTERM, SIGINT, SIGHUP and the early-warning signal do to a long-running command.

Every command that runs or waits for a study (`run --local`, `restart`, `run-workers`, `monitor`) watches
these signals. Before its work loop starts a signal raises :class:`~merlin_mdm.errors.Interrupted` at once,
so that half-written state is removed by the ``finally`` blocks on the way out. Inside the loop the signal
is only recorded (:meth:`SignalWatch.deferred`); the loop stops taking work, gives running tasks the grace
period and records them as queued. A second signal ends the grace period early.

A raised :class:`~merlin_mdm.errors.Interrupted` can be lost: when the signal arrives while Python runs a
weakref callback or a finaliser (the import system's module-lock cleanup is one), the exception is "ignored"
and the code it interrupted goes on. The record is never lost, so waits poll it (:meth:`SignalWatch.pause`), and
the swallowed exception is not printed as a traceback. Commands that wait (`monitor`, and `run`/`restart`,
whose runner polls :attr:`SignalWatch.received`) still stop, at their next check; a command with no such
check (a training step run by a task) goes on to its end.

This module also owns the parent-death signal (Linux ``PR_SET_PDEATHSIG``) that ties a worker process to
its runner: nothing of a study outlives the process that owns it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType

from merlin_mdm.errors import Interrupted, UsageError

__all__ = ["STOP_SIGNALS", "SignalWatch", "kept_ignored", "leave_hung_up_terminal", "parent_death_signal",
           "parse_signal", "remember_terminal", "watch_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_KEPT_IGNORED = (signal.SIGHUP, signal.SIGINT)  # left ignored when inherited so (SIGTERM always stops a command)
_TERMINAL_FDS: set[int] = set()  # standard streams that were a terminal when a command began watching signals
_PR_SET_PDEATHSIG = 1


def parse_signal(text: str | None) -> int | None:
    """A signal given as `USR1`, `SIGUSR1` or `10` (Slurm's ``--signal`` spelling); None when empty."""
    if not text:
        return None
    name = text.strip().upper()
    if name.isdigit():
        number = int(name)
        if number in {s.value for s in signal.Signals}:
            return number
    else:
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise UsageError(f"unknown signal '{text}' (use a name such as USR1 or TERM, or a number)")


@dataclass
class SignalWatch:
    """The stop signals received so far (``received`` is the first one)."""

    signals: tuple[int, ...]
    received: int | None = None
    count: int = 0
    raising: bool = True
    _old: dict[int, object] = field(default_factory=dict)
    _old_unraisable: Callable[[sys.UnraisableHookArgs], object] | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            leave_hung_up_terminal()
        self.count += 1
        if self.received is None:
            self.received = signum
        if self.raising:
            raise Interrupted(signum)

    def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``; raise :class:`Interrupted` as soon as a stop signal has been received.

        Waits use this rather than ``time.sleep``: it also ends on a signal whose raise was swallowed earlier.
        """
        end = time.monotonic() + seconds
        while self.received is None:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))
        raise Interrupted(self.received)

    def _unraisable(self, info: sys.UnraisableHookArgs) -> None:
        """A swallowed :class:`Interrupted` is already recorded: drop it quietly; pass anything else on."""
        if isinstance(info.exc_value, Interrupted):
            return
        (self._old_unraisable or sys.__unraisablehook__)(info)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[SignalWatch]:
        """Within this block a signal is only recorded; the caller polls :attr:`received`."""
        self.raising = False
        try:
            yield self
        finally:
            self.raising = True

    def install(self) -> None:
        remember_terminal()
        self._old_unraisable = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        for signum in self.signals:
            if not kept_ignored(signum):
                self._old[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._old.clear()
        if self._old_unraisable is not None:
            sys.unraisablehook = self._old_unraisable
            self._old_unraisable = None


@contextlib.contextmanager
def watch_signals(early_warning: int | None = None) -> Iterator[SignalWatch]:
    """Handle the stop signals (and ``early_warning``, e.g. Slurm's ``--signal=USR1@60``) in this block."""
    extra = (early_warning,) if early_warning and early_warning not in STOP_SIGNALS else ()
    watch = SignalWatch((*STOP_SIGNALS, *extra))
    watch.install()
    try:
        yield watch
    finally:
        watch.restore()


def kept_ignored(signum: int) -> bool:
    """Whether ``signum`` is SIGHUP or SIGINT and ignored by inheritance (`nohup`, or a shell's background job):
    the user asked for it to be ignored, so no command installs a handler for it. SIGTERM always stops one."""
    return signum in _KEPT_IGNORED and signal.getsignal(signum) is signal.SIG_IGN


def remember_terminal() -> None:
    """Note which of stdin, stdout and stderr are terminals now (after a hangup they no longer say so)."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                _TERMINAL_FDS.add(fd)


def leave_hung_up_terminal() -> None:
    """Point the standard streams that were a terminal which has hung up (its window closed, the ssh connection
    lost) at /dev/null: every write there fails with EIO, and a message printed on the way out raised, which
    ended a run at once, without its grace period or its state recorded. A terminal still open is kept (a
    SIGHUP sent with `kill`)."""
    gone = []
    for fd in sorted(_TERMINAL_FDS):
        try:
            if not os.isatty(fd):
                gone.append(fd)
        except OSError:
            gone.append(fd)
    if not gone:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in gone:
            os.dup2(null, fd)
            _TERMINAL_FDS.discard(fd)
    finally:
        os.close(null)


def parent_death_signal(signum: int, parent: int) -> None:
    """Ask the kernel to send ``signum`` to this process when ``parent`` dies (Linux); exit if it already has."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # only in processes that ask (worker processes), not in every command

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(128 + signum)
