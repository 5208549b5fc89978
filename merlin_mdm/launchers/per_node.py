"""Launch lines that start one process on each node of an allocation (how workers are spread).

Pure: a launcher name, a node count and extra arguments in, the command prefix out. Each line asks
for one task per node and leaves the node's cores to that one process (a Celery worker with its own
pool), without holding them, so that MPI steps the worker starts can use them.
"""

from __future__ import annotations

from collections.abc import Callable

from merlin_mdm.errors import SpecError, SpecIssue

__all__ = ["PER_NODE", "per_node_prefix"]


def _srun(n: int) -> str:
    # --overlap: the worker step shares its cores with the MPI steps the worker's tasks start
    return f"srun --overlap -N {n} -n {n} --ntasks-per-node=1"


def _jsrun(n: int) -> str:
    return f"jsrun -n {n} -r 1 -a 1 -c ALL_CPUS -g ALL_GPUS --bind=none"


def _flux(n: int) -> str:
    return f"flux run -N {n} -n {n} --exclusive"


def _mpiexec(n: int) -> str:
    return f"mpiexec -n {n} -ppn 1"


def _mpirun(n: int) -> str:
    return f"mpirun -np {n} --map-by ppr:1:node"


def _plain(n: int) -> str:
    return ""


PER_NODE: dict[str, Callable[[int], str]] = {
    "srun": _srun, "jsrun": _jsrun, "flux": _flux, "mpiexec": _mpiexec, "mpirun": _mpirun, "plain": _plain,
}  # fmt: skip


def per_node_prefix(launcher: str, nodes: int, launch_args: str | None = None) -> str:
    """The prefix that runs a command once on each of ``nodes`` nodes through ``launcher``."""
    try:
        base = PER_NODE[launcher](nodes)
    except KeyError:
        issue = SpecIssue("", 0, 0, "batch.launcher",
                          f"unknown launcher '{launcher}' (known: {', '.join(sorted(PER_NODE))})")
        raise SpecError([issue]) from None
    return " ".join(p for p in (base, launch_args or "") if p)
