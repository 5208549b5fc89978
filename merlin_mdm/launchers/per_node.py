"""Launch lines that start one process on each node of an allocation (how workers are spread).

Pure: a launcher name, a node count and extra arguments in, the command prefix out. Each line asks
for one task per node and leaves the node's cores to that one process (a Celery worker with its own
pool), without holding them, so that MPI steps the worker starts can use them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from merlin_mdm.errors import SpecError, SpecIssue

__all__ = ["PER_NODE", "per_node_prefix", "signal_relay"]


def signal_relay(relayed: dict[str, str]) -> str:
    """``sh -c SCRIPT relay``: runs the rest of the line as its child and sends it, for each signal it receives
    among ``relayed``'s keys, the signal named by the value (``{"USR2": "INT"}``); ends with the child's exit code.

    For launchers that pass on only some signals (``flux exec``: SIGINT and SIGTERM).
    """
    traps = "; ".join(f'trap "kill -{to} \\$p" {sig}' for sig, to in relayed.items())
    script = f'{traps}; "$@" & p=$!; while :; do wait $p; r=$?; kill -0 $p 2>/dev/null || exit $r; done'
    return f"sh -c {shlex.quote(script)} relay"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _srun(n: int, args: str) -> str:
    # --overlap: the worker step shares its cores with the MPI steps the worker's tasks start; the worker forgets
    # the one task a node it was started with, which the steps' own srun took for theirs (`srun: Warning: can't
    # honor --ntasks-per-node set to 1` on every MPI step)
    return _join(f"srun --overlap -N {n} -n {n} --ntasks-per-node=1", args, "env -u SLURM_NTASKS_PER_NODE")


def _jsrun(n: int, args: str) -> str:
    return _join(f"jsrun -n {n} -r 1 -a 1 -c ALL_CPUS -g ALL_GPUS --bind=none", args)


def _flux(n: int, args: str) -> str:
    # `flux exec` (as Merlin) starts the workers on the brokers of ranks 0..n-1, one a node, outside the scheduler:
    # a `flux run` holding every node would leave nothing to the steps' own `flux run`. It passes on SIGINT and
    # SIGTERM only, so the cold-stop signal (USR2) crosses it as SIGINT and is turned back into USR2 on each node.
    ranks = "0" if n == 1 else f"0-{n - 1}"
    return _join(signal_relay({"USR2": "INT", "TERM": "TERM"}), f"flux exec -r {ranks}", args,
                 signal_relay({"INT": "USR2", "TERM": "TERM"}))


def _mpiexec(n: int, args: str) -> str:
    return _join(f"mpiexec -n {n} -ppn 1", args)


def _mpirun(n: int, args: str) -> str:
    return _join(f"mpirun -np {n} --map-by ppr:1:node", args)


def _plain(n: int, args: str) -> str:
    return args


PER_NODE: dict[str, Callable[[int, str], str]] = {
    "srun": _srun, "jsrun": _jsrun, "flux": _flux, "mpiexec": _mpiexec, "mpirun": _mpirun, "plain": _plain,
}  # fmt: skip


def per_node_prefix(launcher: str, nodes: int, launch_args: str | None = None) -> str:
    """The prefix that runs a command once on each of ``nodes`` nodes through ``launcher`` (``launch_args``
    go to the launcher's own options)."""
    try:
        return PER_NODE[launcher](nodes, launch_args or "")
    except KeyError:
        issue = SpecIssue("", 0, 0, "batch.launcher",
                          f"unknown launcher '{launcher}' (known: {', '.join(sorted(PER_NODE))})")
        raise SpecError([issue]) from None
