"""Reading metrics files in a child process, with a deadline per file.

Some damaged HDF5 files make the HDF5 library loop for ever inside one call (seen with h5py 3.16 / HDF5 2.0:
a run of zeroed bytes in an attribute's heap). No Python code runs meanwhile, so neither a signal handler nor
a timer can stop it, and one such file among thousands would hang the whole aggregation. So the files are read
by a forked child that sends each row (or problem) back; when a file takes longer than the deadline, or the
child dies on it (a crash in the library), the file is reported as a `corrupt` problem, the child is killed,
and a new one reads the files after it. The parent only waits on a pipe, so a stop signal still ends it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from merlin_mdm.errors import Interrupted
from merlin_mdm.results.collect import Discovery, Problem, Row, load_run
from merlin_mdm.results.metrics import Metrics, MetricsFileError, read_metrics
from merlin_mdm.signals import parent_death_signal

__all__ = ["READ_DEADLINE_S", "load_guarded", "read_deadline", "read_metrics_guarded"]

READ_DEADLINE_S = 300.0  # seconds one file may take; a healthy metrics file reads in milliseconds


def read_deadline() -> float:
    """The per-file deadline: MERLIN_MDM_READ_DEADLINE (seconds) when set, else :data:`READ_DEADLINE_S`."""
    text = os.environ.get("MERLIN_MDM_READ_DEADLINE", "")
    try:
        value = float(text) if text else READ_DEADLINE_S
    except ValueError:
        value = READ_DEADLINE_S
    return value if value > 0 else READ_DEADLINE_S


def load_guarded(discovery: Discovery, names: Sequence[str], advance: Callable[[], None] = lambda: None,
                 deadline: float | None = None) -> list[Row | Problem]:
    """:func:`~merlin_mdm.results.collect.load_run` for every name, in order, each within ``deadline`` seconds."""
    out: list[Row | Problem] = []
    for name, got in zip(names, _map_guarded(lambda n: load_run(discovery.resolve(n), n), names, deadline,
                                             advance), strict=True):
        out.append(got if not isinstance(got, _Stuck) else Problem(name, "corrupt", got.why))
    return out


def read_metrics_guarded(paths: Sequence[str], deadline: float | None = None) -> list[Metrics]:
    """:func:`~merlin_mdm.results.metrics.read_metrics` of every path, in order, each within ``deadline`` seconds.

    Raises:
        MetricsFileError: a file is not a usable metrics file, or reading it hangs or crashes the library.
    """
    out = []
    for path, got in zip(paths, _map_guarded(_metrics_or_problem, paths, deadline), strict=True):
        if isinstance(got, _Stuck):
            raise MetricsFileError(Path(path), "corrupt", got.why)
        if isinstance(got, Problem):
            raise MetricsFileError(Path(got.path), got.kind, got.message)
        out.append(got)
    return out


def _metrics_or_problem(path: str) -> Metrics | Problem:
    try:
        return read_metrics(path)
    except MetricsFileError as err:  # sent back as plain data: the exception itself does not pickle
        return Problem(str(err.path), err.kind, err.reason)


@dataclass(frozen=True)
class _Stuck:
    why: str  # reading the item did not end within the deadline, or the child died on it


def _map_guarded(read: Callable[[str], Any], names: Sequence[str], deadline: float | None,
                 advance: Callable[[], None] = lambda: None) -> list[Any]:
    """``read`` of every name in a forked child, in order; a name it stalls or dies on gives a :class:`_Stuck`."""
    limit = read_deadline() if deadline is None else deadline
    out: list[Any] = []
    pending = list(names)
    while pending:
        got, why = _read_in_child(read, pending, limit, out, advance)
        if got < len(pending):  # the child is stuck on, or died on, pending[got]
            out.append(_Stuck(why))
            advance()
        pending = pending[got + 1:]
    return out


def _read_in_child(read: Callable[[str], Any], names: list[str], limit: float, out: list[Any],
                   advance: Callable[[], None]) -> tuple[int, str]:
    """Read ``names`` in one child until it finishes, stalls or dies; returns (files read, why it stopped)."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_reader, args=(read, names, send, receive, os.getpid()), daemon=True)
    child.start()
    send.close()
    got, why = 0, ""
    try:
        while got < len(names):
            if not receive.poll(limit):
                why = (f"reading it did not end within {limit:g} s (a damaged HDF5 file can make the library "
                       "loop; MERLIN_MDM_READ_DEADLINE sets the limit)")
                break
            out.append(receive.recv())
            got += 1
            advance()
    except EOFError:
        why = "the HDF5 library crashed reading it"
    finally:
        child.kill()
        child.join()
        receive.close()
    return got, why


def _reader(read: Callable[[str], Any], names: list[str], send: Connection, receive: Connection, parent: int) -> None:
    """The child: send ``read`` of every name; die with the parent, and never print a traceback on a stop.

    The child closes its copy of the pipe's read end, so that with its parent gone a send fails instead of
    blocking for ever; and asks the kernel for SIGKILL when the parent dies (an MPI rank killed mid-read), so an
    orphan never keeps the rank's output open, which ``mpiexec`` waits on. The parent decides what a stop
    signal does (it kills this child on its way out), so here SIGINT is ignored and SIGTERM/SIGHUP end it quietly.
    """
    try:
        receive.close()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        parent_death_signal(signal.SIGKILL, parent)
        for name in names:
            send.send(read(name))
        send.close()
    except (BrokenPipeError, EOFError, Interrupted, KeyboardInterrupt):
        os._exit(1)  # the parent is gone or stopping: nothing to report to anyone
