"""The command's standard output: a write that fails says so in one line and fails the command.

Without this guard, `merlin-mdm status WS >/dev/full` ended in an ``OSError: [Errno 28]`` traceback, `status WS
>&-` (stdout closed: Python's ``sys.stdout`` is None) in ``AttributeError: 'NoneType' object has no attribute
'isatty'``, and `status WS --json >&-` exited 0 having written nothing. As ``ls`` and ``cat`` do, a command whose
output is lost now says `Error: cannot write to standard output: ...` on stderr and exits 1. A closed pipe
(`| head`) stays quiet, as everywhere in Unix.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from merlin_mdm.errors import MerlinMdmError

__all__ = ["OutputLost", "abandon_output", "finish_output", "guard_output", "release_output"]


class OutputLost(MerlinMdmError):
    """Standard output could not be written (a full disk, /dev/full, a closed descriptor)."""

    exit_code = 1


def _lost(exc: OSError | None) -> OutputLost:
    why = "it is closed" if exc is None else (exc.strerror or str(exc))
    return OutputLost(f"cannot write to standard output: {why}")


class _Guarded:
    """``sys.stdout`` as the commands see it: the real stream (None when it was closed), every other attribute
    passed through, a failed write raised as :class:`OutputLost`."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._failed: OutputLost | None = None  # once lost, every later write fails too (click's probe hid one)

    def write(self, text: str) -> int:
        written = self._guarded(lambda stream: stream.write(text))
        return written if isinstance(written, int) else 0

    def flush(self) -> None:
        if self._stream is not None or self._failed is not None:
            self._guarded(lambda stream: stream.flush())

    def _guarded(self, act: Callable[[TextIO], object]) -> object:
        if self._failed is not None:
            raise self._failed
        if self._stream is None:
            self._failed = _lost(None)
            raise self._failed
        try:
            return act(self._stream)
        except BrokenPipeError:
            raise
        except OSError as exc:
            if self._stream is sys.__stdout__:  # Python's flush at exit would fail (and report) again
                abandon_output()
            self._failed = _lost(exc)
            raise self._failed from None

    def wrapped(self) -> TextIO | None:
        """The stream the guard was put around (None: it was closed)."""
        return self._stream

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def fileno(self) -> int:
        if self._stream is None:
            raise OSError(errno.EBADF, "standard output is closed")
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            return {"encoding": "utf-8", "errors": "strict", "closed": False}.get(name)
        return getattr(self._stream, name)


def guard_output() -> None:
    """Put the guard around ``sys.stdout``; a closed stderr (`2>&-`) goes to /dev/null (the exit code still
    tells)."""
    if not isinstance(sys.stdout, _Guarded):
        sys.stdout = _Guarded(sys.stdout)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process


def finish_output() -> None:
    """Flush what the command wrote (:class:`OutputLost` when it cannot be written), before the exit code is
    decided: Python's own flush at exit comes too late to change it."""
    sys.stdout.flush()


def release_output() -> None:
    """Give ``sys.stdout`` back: the stream the guard wrapped (a caller's own, such as pytest's capture, stays
    theirs), for Python's own flush at exit, which after a failure goes to /dev/null instead of reporting again."""
    if isinstance(sys.stdout, _Guarded):
        sys.stdout = sys.stdout.wrapped()


def abandon_output() -> None:
    """Send what is left of standard output to /dev/null, so that Python's own flush at exit does not fail and
    report a second time."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.__stdout__.fileno() if sys.__stdout__ is not None else 1)
        os.close(null)
    except (OSError, ValueError):
        pass
