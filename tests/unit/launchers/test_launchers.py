"""Launchers are pure: resources in, the $(LAUNCHER) prefix out. One line each."""

from __future__ import annotations

import pytest

from merlin_mdm.errors import SpecError
from merlin_mdm.launchers import DEFAULT_LAUNCHER, LAUNCHERS, Resources, get_launcher

FULL = Resources(nodes=2, procs=8, cores_per_task=4, gpus=1)
RELAY_OUT = ("sh -c 'trap \"kill -INT \\$p\" USR2; trap \"kill -TERM \\$p\" TERM; \"$@\" & p=$!; "
             "while :; do wait $p; r=$?; kill -0 $p 2>/dev/null || exit $r; done' relay")
RELAY_IN = RELAY_OUT.replace("-INT \\$p\" USR2", "-USR2 \\$p\" INT")
MIN = Resources()


@pytest.mark.parametrize(("name", "res", "prefix"), [
    ("plain", FULL, ""),
    # srun, jsrun and flux: the lines Merlin 1.13's `run --dry` writes for the same resources
    ("srun", FULL, "srun -n 8 -N 2 -c 4 --gpus-per-task=1"),
    ("srun", MIN, "srun -n 1"),
    ("srun", Resources(2, 4), "srun -n 4 -N 2"),  # slurm_par
    ("srun", Resources(1, 2, None, 0), "srun -n 2 -N 1"),
    # jsrun's -c and -g count per resource set (here 4 tasks): Merlin wrote the per-task -c 4 -g 1 (4 tasks, 4 cores)
    ("jsrun", FULL, "jsrun --np 8 --nrs 2 -b rs -d plane:4 -X 1 -c 16 -g 4"),
    ("jsrun", Resources(1, 3, 2, 1), "jsrun --np 3 --nrs 1 -b rs -d plane:3 -X 1 -c 6 -g 3"),
    ("jsrun", Resources(2, 5, 2, resource_sets=4), "jsrun --np 5 --nrs 4 -b rs -d plane:2 -X 1 -c 4"),  # 2 a set
    ("jsrun", Resources("${N:-2}", "${P:-8}", "${C:-4}"),
     "jsrun --np ${P:-8} --nrs ${N:-2} -b rs -d plane:$(( ${P:-8} / ${N:-2} )) -X 1"
     " -c $(( ${C:-4} * ((${P:-8} + ${N:-2} - 1) / ${N:-2}) ))"),
    ("jsrun", MIN, "jsrun --np 1 --nrs 1 -b rs -d plane:1 -X 1"),
    ("jsrun", Resources(2, 4), "jsrun --np 4 --nrs 2 -b rs -d plane:2 -X 1"),  # lsf_par
    ("jsrun", Resources("${N:-2}", "${P:-4}"),
     "jsrun --np ${P:-4} --nrs ${N:-2} -b rs -d plane:$(( ${P:-4} / ${N:-2} )) -X 1"),
    ("flux", FULL, "flux run -n 8 -N 2 -c 4 -g 1"),
    ("flux", MIN, "flux run -n 1"),
    ("flux", Resources(1, 4, 1), "flux run -n 4 -N 1 -c 1"),  # flux_par
    ("srun", Resources(1, 2, walltime=5400.0), "srun -n 2 -N 1 -t 01:30:00"),  # Merlin's HH:MM:SS
    ("flux", Resources(1, 2, walltime=5400.0), "flux run -n 2 -N 1 -t 5400.0s"),  # Flux Standard Duration
    ("jsrun", Resources(1, 2, walltime=5400.0), "jsrun --np 2 --nrs 1 -b rs -d plane:2 -X 1"),  # as Merlin: none
    ("mpirun", FULL, "mpirun -np 8 --map-by ppr:4:node:PE=4"),
    ("mpirun", Resources(procs=4, cores_per_task=2), "mpirun -np 4 --map-by slot:PE=2"),
    ("mpirun", Resources(procs=4), "mpirun -np 4"),
    ("mpiexec", FULL, "mpiexec -n 8 -ppn 4 -bind-to core:4"),
    ("mpiexec", Resources(procs=4), "mpiexec -n 4"),
    ("mpiexec", Resources("${N:-2}", "${P:-8}"), "mpiexec -n ${P:-8} -ppn $(( ${P:-8} / ${N:-2} ))"),
    ("srun", Resources("${N:-2}", "${P:-8}"), "srun -n ${P:-8} -N ${N:-2}"),
    # Merlin's run keys for one launcher (`slurm`, `lsf`, `flux`, `bind`, `launch_distribution`, `exit_on_error`,
    # `num resource set`): Merlin 1.13's `run --dry` wrote "srun -n 4 -N 2  --exclusive --mem=0", "flux run -n 4
    # -N 2 -g 1  --setattr=foo=bar" and "jsrun --np 4 --nrs 2 -b none -d cyclic -X 1 -g 1  --smpiargs=off --nrs 4"
    # (a second --nrs where merlin-mdm writes one)
    ("srun", Resources(2, 4, flags="--exclusive --mem=0"), "srun -n 4 -N 2 --exclusive --mem=0"),
    ("flux", Resources(2, 4, gpus=1, flags="--setattr=foo=bar"), "flux run -n 4 -N 2 -g 1 --setattr=foo=bar"),
    ("jsrun", Resources(2, 4, gpus=1, flags="--smpiargs=off", resource_sets=4, distribution="cyclic", bind="none"),
     "jsrun --np 4 --nrs 4 -b none -d cyclic -X 1 -g 1 --smpiargs=off"),
    ("jsrun", Resources(2, 4, exit_on_error=0), "jsrun --np 4 --nrs 2 -b rs -d plane:2 -X 0"),
])  # fmt: skip
def test_prefix(name: str, res: Resources, prefix: str) -> None:
    assert get_launcher(name).prefix(res) == prefix


def test_registry_names_match_classes() -> None:
    assert set(LAUNCHERS) == {"plain", "srun", "jsrun", "flux", "mpirun", "mpiexec"}
    assert all(cls.name == name for name, cls in LAUNCHERS.items())


def test_default_launcher_per_batch_type() -> None:
    assert DEFAULT_LAUNCHER == {"local": "plain", "slurm": "srun", "lsf": "jsrun", "lsf-srun": "srun", "flux": "flux",
                                "pbs": "mpiexec"}
    assert set(DEFAULT_LAUNCHER.values()) <= set(LAUNCHERS)


def test_unknown_launcher_lists_the_known_ones() -> None:
    known = r"\(known: flux, jsrun, mpiexec, mpirun, plain, srun\)"
    with pytest.raises(SpecError, match=rf"unknown launcher 'aprun' {known}"):
        get_launcher("aprun")


@pytest.mark.parametrize(("name", "nodes", "args", "prefix"), [
    ("srun", 4, None, "srun --overlap -N 4 -n 4 --ntasks-per-node=1 env -u SLURM_NTASKS_PER_NODE"),
    ("srun", 1, "--mpi=pmi2", "srun --overlap -N 1 -n 1 --ntasks-per-node=1 --mpi=pmi2 env -u SLURM_NTASKS_PER_NODE"),
    ("jsrun", 2, None, "jsrun -n 2 -r 1 -a 1 -c ALL_CPUS -g ALL_GPUS --bind=none"),
    # flux exec (as Merlin) holds no node: a `flux run -N 3 --exclusive` left the steps' `flux run` nothing. It passes
    # on SIGINT and SIGTERM only: the cold stop (USR2) crosses it as INT and is turned back into USR2 on each node.
    ("flux", 3, "-v", f"{RELAY_OUT} flux exec -r 0-2 -v {RELAY_IN}"),
    ("flux", 1, None, f"{RELAY_OUT} flux exec -r 0 {RELAY_IN}"),
    ("mpiexec", 2, None, "mpiexec -n 2 -ppn 1"),
    ("mpirun", 2, None, "mpirun -np 2 --map-by ppr:1:node"),
    ("plain", 1, None, ""),
])  # fmt: skip
def test_per_node_prefix(name: str, nodes: int, args: str | None, prefix: str) -> None:
    from merlin_mdm.launchers.per_node import per_node_prefix

    assert per_node_prefix(name, nodes, args) == prefix


def test_per_node_prefix_knows_every_launcher() -> None:
    from merlin_mdm.launchers.per_node import PER_NODE

    assert set(PER_NODE) == set(LAUNCHERS)


@pytest.mark.parametrize("name", ["jsrun", "flux", "mpiexec", "mpirun"])
def test_fewer_procs_than_nodes_is_refused_naming_the_step(name: str) -> None:
    # it wrote `mpiexec -n 1 -ppn 0`, `jsrun ... -d plane:0`, `flux run -n 1 -N 2`
    with pytest.raises(SpecError, match=r"study.single.run: step 'single' asks for procs: 1 on nodes: 2: .*"
                                        r"\(procs must be >= nodes\)"):
        get_launcher(name).prefix(Resources(nodes=2, procs=1, step="single"))
