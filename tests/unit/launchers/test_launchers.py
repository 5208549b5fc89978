"""Launchers are pure: resources in, the $(LAUNCHER) prefix out. One line each."""

from __future__ import annotations

import pytest

from merlin_mdm.errors import SpecError
from merlin_mdm.launchers import DEFAULT_LAUNCHER, LAUNCHERS, Resources, get_launcher

FULL = Resources(nodes=2, procs=8, cores_per_task=4, gpus=1)
MIN = Resources()


@pytest.mark.parametrize(("name", "res", "prefix"), [
    ("plain", FULL, ""),
    ("srun", FULL, "srun -N 2 -n 8 -c 4 --gpus-per-task=1"),
    ("srun", MIN, "srun -N 1 -n 1"),
    ("srun", Resources(1, 2, None, 0), "srun -N 1 -n 2"),
    ("jsrun", FULL, "jsrun -a 1 -n 8 -c 4 -g 1 --bind rs"),
    ("jsrun", MIN, "jsrun -a 1 -n 1 -c 1 -g 0 --bind rs"),
    ("flux", FULL, "flux run -N 2 -n 8 -c 4 -g 1"),
    ("flux", MIN, "flux run -N 1 -n 1"),
    ("mpirun", FULL, "mpirun -np 8"),
    ("mpiexec", FULL, "mpiexec -n 8"),
    ("srun", Resources("${N:-2}", "${P:-8}"), "srun -N ${N:-2} -n ${P:-8}"),
])  # fmt: skip
def test_prefix(name: str, res: Resources, prefix: str) -> None:
    assert get_launcher(name).prefix(res) == prefix


def test_registry_names_match_classes() -> None:
    assert set(LAUNCHERS) == {"plain", "srun", "jsrun", "flux", "mpirun", "mpiexec"}
    assert all(cls.name == name for name, cls in LAUNCHERS.items())


def test_default_launcher_per_batch_type() -> None:
    assert DEFAULT_LAUNCHER == {"local": "plain", "slurm": "srun", "lsf": "jsrun", "flux": "flux"}
    assert set(DEFAULT_LAUNCHER.values()) <= set(LAUNCHERS)


def test_unknown_launcher_lists_the_known_ones() -> None:
    known = r"\(known: flux, jsrun, mpiexec, mpirun, plain, srun\)"
    with pytest.raises(SpecError, match=rf"unknown launcher 'aprun' {known}"):
        get_launcher("aprun")
