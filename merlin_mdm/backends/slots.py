"""Cores on this machine or allocation, and the worker slots a local run hands out to its tasks.

A local run has ``workers`` slots (default: the cores per node of the allocation it runs in, as
:func:`merlin_mdm.batch.detect_allocation` reads them: SLURM_CPUS_ON_NODE, LSB_MCPU_HOSTS, NCPUS, ...; else
the cores this process may use). A task of a step with ``procs`` x ``cores per task`` = n reserves n slots
while it runs, so two 2-core tasks on a 4-slot runner never share a slot. The slots a unit holds reach its tasks as
``MERLIN_MDM_SLOTS`` (comma-separated slot numbers), e.g. for pinning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SLOTS_VARIABLE", "SlotTable", "allocation_cores", "default_workers", "machine_cores", "runner_cores"]

SLOTS_VARIABLE = "MERLIN_MDM_SLOTS"


def allocation_cores(env: Mapping[str, str]) -> int | None:
    """The cores per node of the batch allocation ``env`` is inside of (each batch system's ``detect``)."""
    from merlin_mdm.batch import detect_allocation  # the batch systems load only when asked

    found = detect_allocation(env)
    return found.cores_per_node if found is not None and found.cores_per_node else None


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, which cgroups and batch systems narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(env: Mapping[str, str] | None = None) -> int:
    """``--workers`` when not given: the allocation's cores inside one, else this machine's."""
    return allocation_cores(os.environ if env is None else env) or machine_cores()


def runner_cores(workers: int | None) -> tuple[int, str]:
    """The runner's slots and where that number comes from: --workers, else the allocation's or machine's cores."""
    if workers:
        return workers, f"--workers {workers}"
    cores = allocation_cores(os.environ)
    return (cores, "this allocation's cores") if cores else (machine_cores(), "this machine's cores")


class SlotTable:
    """Which of ``size`` slots are free; a unit takes the lowest free ones and gives them back when it ends."""

    def __init__(self, size: int):
        self.size = size
        self.free = list(range(size))

    def acquire(self, n: int) -> tuple[int, ...] | None:
        """Reserve ``n`` slots (at least one, at most all); None while fewer are free.

        A task that asks for more than the runner has takes every slot and runs alone (the CLI refuses such a
        spec before it runs: LocalBackend.check_spec; this is for library callers that skip the check).
        """
        n = min(max(1, n), self.size)
        if n > len(self.free):
            return None
        taken, self.free = tuple(self.free[:n]), self.free[n:]
        return taken

    def release(self, slots: tuple[int, ...]) -> None:
        """Give ``slots`` back."""
        self.free = sorted({*self.free, *slots})
