"""Cores of an allocation, and the slot table of the local runner."""

from __future__ import annotations

import pytest

from merlin_mdm.backends.slots import SlotTable, allocation_cores, default_workers, runner_cores


@pytest.mark.parametrize(("env", "cores"), [
    ({"SLURM_JOB_ID": "1", "SLURM_CPUS_ON_NODE": "12"}, 12),
    ({"SLURM_JOB_ID": "1", "SLURM_JOB_CPUS_PER_NODE": "16(x2),8"}, 16),
    ({"LSB_JOBID": "1", "LSB_MCPU_HOSTS": "launch 1 node1 40 node2 40"}, 40),
    ({"PBS_JOBID": "1", "NCPUS": "24"}, 24),
    ({"SLURM_CPUS_ON_NODE": "6"}, None),  # not inside a job
    ({}, None),
])
def test_allocation_cores(env: dict[str, str], cores: int | None) -> None:
    assert allocation_cores(env) == cores


def test_default_workers_prefers_the_allocation() -> None:
    assert default_workers({"SLURM_JOB_ID": "1", "SLURM_CPUS_ON_NODE": "7"}) == 7
    assert default_workers({}) >= 1


def test_slots_are_reserved_until_given_back() -> None:
    table = SlotTable(4)
    assert table.acquire(2) == (0, 1)
    assert table.acquire(3) is None  # only 2 free: the caller waits
    assert table.acquire(1) == (2,)
    table.release((0, 1))
    assert table.acquire(3) == (0, 1, 3)
    assert table.acquire(0) is None  # every task takes at least one slot, none is free
    assert SlotTable(4).acquire(6) == (0, 1, 2, 3)  # larger than the runner: it takes every slot


def test_the_runner_says_where_its_slots_come_from(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner_cores(5) == (5, "--workers 5")
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "3")
    assert runner_cores(None) == (3, "this allocation's cores")
