"""Batch systems: submit an allocation, ask its state, cancel it; and find the allocation we run in.

Registered by the name a spec's ``batch.type`` uses: slurm, lsf, flux, pbs, local.
"""

from __future__ import annotations

from collections.abc import Mapping

from merlin_mdm.batch.base import (
    TERMINAL_STATES,
    Allocation,
    AllocationRequest,
    BatchSystem,
    JobState,
    Runner,
    UnsupportedRequest,
    exit_file_state,
)
from merlin_mdm.batch.flux import FluxBatchSystem
from merlin_mdm.batch.local import LocalBatchSystem
from merlin_mdm.batch.psij_systems import LsfBatchSystem, PbsBatchSystem, SlurmBatchSystem
from merlin_mdm.errors import BatchError

__all__ = [
    "BATCH_SYSTEMS",
    "TERMINAL_STATES",
    "Allocation",
    "AllocationRequest",
    "BatchSystem",
    "JobState",
    "UnsupportedRequest",
    "detect_allocation",
    "exit_file_state",
    "get_batch_system",
]

BATCH_SYSTEMS: dict[str, type[BatchSystem]] = {
    cls.name: cls for cls in (SlurmBatchSystem, LsfBatchSystem, FluxBatchSystem, PbsBatchSystem, LocalBatchSystem)
}


def get_batch_system(name: str, runner: Runner | None = None) -> BatchSystem:
    """The batch system registered as ``name``; a BatchError listing the known ones otherwise."""
    try:
        return BATCH_SYSTEMS[name](runner)
    except KeyError:
        raise BatchError(f"unknown batch type '{name}' (known: {', '.join(sorted(BATCH_SYSTEMS))})") from None


def detect_allocation(env: Mapping[str, str]) -> Allocation | None:
    """The allocation ``env`` (a process environment) is inside of, or None on a login node or laptop."""
    for cls in BATCH_SYSTEMS.values():
        found = cls.detect(env)
        if found is not None:
            return found
    return None
