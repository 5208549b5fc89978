"""Aggregate N small metrics files serially and with ``--mpi`` on R ranks; print seconds.

Usage::

    python3 benchmarks/bench_aggregate.py [--files 2000] [--ranks 2] [--examples 64] [--repeat 3]

Measures, on one freshly written study workspace:
  - writing the N metrics files with ``write_metrics`` (in process),
  - ``aggregate()`` in process (reading + all four outputs), serial,
  - the CLI end to end (``python -m merlin_mdm.cli.aggregate``, interpreter start included), serial,
  - the same CLI under ``mpiexec -n R ... --mpi``,
and checks the MPI outputs are byte-identical to the serial ones. Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from merlin_mdm import _shell  # noqa: E402
from merlin_mdm.results.aggregate import aggregate, default_outputs  # noqa: E402
from merlin_mdm.results.metrics import summarize, write_metrics  # noqa: E402

SAMPLERS = ("iid", "top_prob", "margin", "entropy", "threshold", "eb", "learned")


def write_study(root: Path, files: int, examples: int) -> None:
    """N runs as eval/<labels>/metrics.h5, spread over samplers, budgets and seeds."""
    rng = np.random.default_rng(0)
    for index in range(files):
        sampler, steps, seed = SAMPLERS[index % 7], (2, 4, 8, 16)[(index // 7) % 4], index // 28
        run_dir = root / "eval" / f"SAMPLER.{sampler}.SEED.{seed}.STEPS.{steps}"
        run_dir.mkdir(parents=True)
        correct, nfe = rng.random(examples) < 0.7, rng.integers(1, steps + 1, examples)
        attrs = {"task": "blocks", "task.nb": 4, "task.bl": 4, "sampler": sampler, "steps": steps, "seed": seed,
                 "checkpoint_id": "bench", **summarize(correct, nfe)}
        write_metrics(run_dir / "metrics.h5", attrs,
                      {"correct": correct, "nfe": nfe, "wall_time": rng.random(examples)})


def best_of(repeat: int, action: Callable[[], object]) -> float:
    """Fastest wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def cli(args: list[str], ranks: int = 0) -> None:
    """Run the aggregate CLI (under mpiexec when ranks > 0); raise on failure."""
    cmd = [sys.executable, "-m", "merlin_mdm.cli.aggregate", *args]
    if ranks:
        mpiexec = Path(sys.executable).parent / "mpiexec"
        cmd = [str(mpiexec if mpiexec.is_file() else shutil.which("mpiexec")), "-n", str(ranks), *cmd, "--mpi"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = _shell.run(cmd, timeout=600, env=env)
    if result.rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.rc}): {result.stderr}")


def main() -> None:
    """Parse options, build the study, time every variant, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_aggregate_") as tmp:
        root, out = Path(tmp) / "ws", Path(tmp) / "out"
        start = time.perf_counter()
        write_study(root, opts.files, opts.examples)
        written = time.perf_counter() - start
        in_process = best_of(opts.repeat, lambda: aggregate(root, default_outputs(out / "inproc.h5"), progress=False))
        serial = best_of(opts.repeat, lambda: cli([str(root), "--out", str(out / "serial.h5"), "--json"]))
        mpi = best_of(opts.repeat, lambda: cli([str(root), "--out", str(out / "mpi.h5"), "--json"], opts.ranks))
        same = all((out / f"serial{s}").read_bytes() == (out / f"mpi{s}").read_bytes()
                   for s in (".h5", ".csv", ".md", ".png"))
    print(f"files={opts.files} examples/file={opts.examples} ranks={opts.ranks} cpus={os.cpu_count()}")
    print(f"write_metrics x{opts.files}: {written:.2f} s ({opts.files / written:.0f} files/s)")
    print(f"aggregate in process, serial: {in_process:.2f} s ({opts.files / in_process:.0f} files/s)")
    print(f"CLI serial (interpreter start included): {serial:.2f} s")
    print(f"CLI mpiexec -n {opts.ranks} --mpi: {mpi:.2f} s (speed-up {serial / mpi:.2f}x)")
    print(f"MPI outputs byte-identical to serial: {same}")


if __name__ == "__main__":
    main()
