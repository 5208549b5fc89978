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
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

from merlin_mdm.results.collect import Discovery, Problem, Row, load_run

__all__ = ["READ_DEADLINE_S", "load_guarded", "read_deadline"]

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
    limit = read_deadline() if deadline is None else deadline
    out: list[Row | Problem] = []
    pending = list(names)
    while pending:
        got, why = _read_in_child(discovery, pending, limit, out, advance)
        if got < len(pending):  # the child is stuck on, or died on, pending[got]
            out.append(Problem(pending[got], "corrupt", why))
            advance()
        pending = pending[got + 1:]
    return out


def _read_in_child(discovery: Discovery, names: list[str], limit: float, out: list[Row | Problem],
                   advance: Callable[[], None]) -> tuple[int, str]:
    """Read ``names`` in one child until it finishes, stalls or dies; returns (files read, why it stopped)."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_reader, args=(discovery, names, send), daemon=True)
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


def _reader(discovery: Discovery, names: list[str], send: Connection) -> None:
    for name in names:
        send.send(load_run(discovery.resolve(name), name))
    send.close()
