"""Reading the file list in parallel with mpi4py: each rank reads one contiguous shard, rank 0 gathers.

mpi4py is imported only when asked for, so the core never needs MPI. The gathered list is in the order of
the sorted file list, which is what makes the MPI aggregation byte-identical to the serial one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from merlin_mdm.errors import MerlinMdmError, ResultsError
from merlin_mdm.results.collect import Discovery, Problem, Row
from merlin_mdm.results.guarded import load_guarded

__all__ = ["ROOT", "broadcast_discovery", "gather_loaded", "shard", "world"]

ROOT = 0
"""The rank that discovers the files and writes every output."""


def world() -> Any:
    """``mpi4py.MPI.COMM_WORLD``.

    Raises:
        ResultsError: mpi4py (or an MPI library) is not installed.
    """
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ResultsError(f"--mpi needs mpi4py and an MPI library: pip install 'merlin-mdm[mpi]' ({err})") from err
    return MPI.COMM_WORLD


def shard(count: int, rank: int, size: int) -> range:
    """The contiguous block of ``range(count)`` that ``rank`` of ``size`` reads (sizes differ by at most one)."""
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def broadcast_discovery(comm: Any, discover: Callable[[], Discovery]) -> Discovery | None:
    """Rank 0 lists the files and sends the list to every rank.

    Returns:
        The discovery on every rank; None on the other ranks when rank 0 failed (rank 0 re-raises the error,
        so exactly one rank reports it).
    """
    found: Discovery | None = None
    failure: MerlinMdmError | None = None
    if comm.Get_rank() == ROOT:
        try:
            found = discover()
        except MerlinMdmError as err:
            failure = err
    found = comm.bcast(found, root=ROOT)
    if failure is not None:
        raise failure
    return found


def gather_loaded(
    comm: Any, discovery: Discovery, advance: Callable[[], None] = lambda: None
) -> list[Row | Problem] | None:
    """Read this rank's shard and gather every shard on rank 0, in file-list order.

    Returns:
        On rank 0, one row or problem per listed file; None on the other ranks.
    """
    names = discovery.files
    mine = shard(len(names), comm.Get_rank(), comm.Get_size())
    loaded = load_guarded(discovery, names[mine.start:mine.stop], advance)
    parts = comm.gather(loaded, root=ROOT)
    if comm.Get_rank() != ROOT:
        return None
    return [item for part in parts for item in part]
