"""Both backends against raw process spawning, costly samples, and `status`, all in one run (issue 10).

    python benchmarks/bench_throughput.py [--samples 10000] [--status-tasks 100000] [--skip-celery]

1. Raw spawning: N `bash -c 'echo'` processes, two at a time (xargs -P 2): the floor for N shell tasks.
2. Local: `merlin-mdm run null_samples.yaml --local --workers 2` with N samples, the whole command (workspace,
   samples, every task's script, logs and done-marker, the funnel).
3. Celery: the same spec queued by `merlin-mdm run` (--workers 2) and drained by one worker with 2 processes
   started beforehand, from the `run` command to the study's `finished` state.
4. Costly samples: 8 samples of `sleep 1`, 4 workers (local --workers 4; Celery -c 4 and run --workers 4).
5. `merlin-mdm status` as a whole command (process start to exit) on a local study of 100,000 tasks, with
   the default units and with one sample per unit (100,001 status rows, the worst case).

Each figure is wall time and CPU time (user + system of every process the measurement started and waited
for: the command, its workers, their tasks). On a shared machine the wall time follows the load of others;
the CPU time much less, so ratios are given for both.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CLI = [sys.executable, "-m", "merlin_mdm.cli.main"]
NULL_SPEC = REPO / "merlin_mdm/examples/null_samples/null_samples.yaml"
COSTLY = """
description: {{name: costly, description: eight one-second samples}}
env: {{variables: {{OUTPUT_PATH: ./out}}}}
merlin:
  samples: {{file: {samples}, column_labels: [V]}}
study:
  - name: sim
    run: {{cmd: "sleep 1 # $(V)"}}
"""


class Clock:
    """Wall and CPU time (of waited-for child processes) of what runs inside ``with``."""

    def __enter__(self) -> Clock:
        self.t0, self.c0 = time.perf_counter(), _children_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.t0, _children_cpu() - self.c0

    def __str__(self) -> str:
        return f"{self.wall:.2f} s wall, {self.cpu:.2f} s cpu"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str] | str, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, shell=isinstance(cmd, str), env=env, cwd=cwd, capture_output=True, text=True,
                         check=False)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{cmd} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return elapsed


def makespan(spec: Path) -> float:
    """First task start to last task end of the newest study of ``spec``, from its status store."""
    from merlin_mdm.studies import find_workspace, study_status

    snap = study_status(find_workspace(spec).root)
    return max(s.ended or 0.0 for s in snap.steps) - min(s.started or 0.0 for s in snap.steps)


def raw_spawn(n: int) -> float:
    return _timed(f"seq {n} | xargs -P 2 -n 1 bash -c 'echo $0 > /dev/null'")


def local_run(spec: Path, workers: int, extra: list[str]) -> float:
    return _timed([*CLI, "run", str(spec), "--local", "--workers", str(workers), "--no-progress", *extra])


def _worker(procs: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "celery", "-A", "merlin_mdm.backends.celery.worker", "worker", "-Q", "merlin",
           "-c", str(procs), "-l", "WARNING", "--without-gossip", "--without-mingle", "-O", "fair"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def celery_run(spec: Path, workers: int, extra: list[str], env: dict[str, str], tmp: Path) -> float:
    """From `merlin-mdm run` (queueing) to the study's final state, with a worker already running.

    Returns that wall time (the worker's 4 s start-up excluded).
    """
    from merlin_mdm.backends import get_backend
    from merlin_mdm.studies import find_workspace

    worker = _worker(workers, env, tmp / f"worker-{spec.stem}.log")
    try:
        time.sleep(4)  # worker start-up is not part of the throughput
        t0 = time.perf_counter()
        out = subprocess.run([*CLI, "run", str(spec), "--workers", str(workers), *extra], env=env,
                             capture_output=True, text=True, check=True)
        ws = find_workspace(Path(out.stderr.split("workspace: ", 1)[1].split()[0]))
        store = get_backend("celery").status_store(ws)
        while not store.snapshot().state.over:
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        state = store.snapshot().state
        store.close()
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
    if state != "finished":
        raise SystemExit(f"celery study ended {state}")
    return elapsed


def status_command(n: int, batch: int, tmp: Path) -> tuple[str, str]:
    """Median whole-command wall and CPU time of `status WS` and `status WS --json` on a finished local study."""
    ws = _status_workspace(n, batch, tmp / f"status{batch}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = []
    for extra in ([], ["--json"]):
        clocks = []
        for _ in range(7):
            with Clock() as clock:
                _timed([*CLI, "status", str(ws), *extra], env)
            clocks.append(clock)
        out.append(f"{statistics.median(c.wall for c in clocks):.3f} s wall, "
                   f"{statistics.median(c.cpu for c in clocks):.3f} s cpu")
    return out[0], out[1]


def _status_workspace(n: int, batch: int, root: Path) -> Path:
    import numpy as np

    from merlin_mdm.spec import load_spec_text
    from merlin_mdm.status.model import StudyState, UnitOutcome
    from merlin_mdm.status.sqlite_store import SqliteStatusStore
    from merlin_mdm.studies import BACKEND_FILE
    from merlin_mdm.study.workspace import create_workspace

    root.mkdir()
    np.save(root / "s.npy", np.arange(n).reshape(-1, 1))
    text = textwrap.dedent(f"""
        description: {{name: status_bench, description: x}}
        env: {{variables: {{OUTPUT_PATH: {root}/ws}}}}
        merlin: {{samples: {{file: {root}/s.npy, column_labels: [X]}}}}
        study:
          - {{name: work, run: {{cmd: "echo $(X)"}}}}
    """)
    ws, plan = create_workspace(load_spec_text(text, root / "spec.yaml"), batch_size=batch)
    (ws.info / BACKEND_FILE).write_text("local\n")
    store = SqliteStatusStore(ws.status_path)
    store.register(plan)
    for key in plan.units():
        store.unit_finished(key, UnitOutcome(len(plan.unit_samples(key)), 0, 0))
    store.set_state(StudyState.FINISHED)
    store.close()
    return ws.root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--status-tasks", type=int, default=100_000)
    parser.add_argument("--skip-celery", action="store_true")
    args = parser.parse_args()
    n = args.samples
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "null").mkdir()
        spec = tmp / "null" / "null_samples.yaml"
        spec.write_text(NULL_SPEC.read_text())
        costly = tmp / "costly" / "costly.yaml"
        costly.parent.mkdir()
        import numpy as np

        np.save(costly.parent / "s.npy", np.arange(8).reshape(-1, 1))
        costly.write_text(COSTLY.format(samples=costly.parent / "s.npy"))
        with Clock() as raw:
            raw_spawn(n)
        print(f"raw spawn: {n} x bash -c echo, xargs -P 2: {raw}")
        with Clock() as local:
            local_run(spec, 2, ["--vars", f"N_SAMPLES={n}"])
        print(f"local: null_samples {n} samples, --workers 2: {local} = {_ratios(local, raw)} raw (goal <= 1.2)")
        with Clock() as slow:
            local_run(costly, 4, [])
        print(f"local: 8 x sleep 1, --workers 4: {slow.wall:.2f} s = {slow.wall / 2:.2f}x the 2 s ideal (goal <= 1.3); "
              f"first task start to last task end {makespan(costly):.2f} s")
        if not args.skip_celery:
            _celery_figures(tmp, spec, costly, n, raw)
        for batch in (100, 1):
            table, as_json = status_command(args.status_tasks, batch, tmp)
            print(f"status: {args.status_tasks} tasks, batch {batch}: whole command {table} (table); {as_json} "
                  "(--json); medians of 7 (goal < 0.15 s)")


def _ratios(ours: Clock, raw: Clock) -> str:
    return f"{ours.wall / raw.wall:.2f}x (wall) / {ours.cpu / raw.cpu:.2f}x (cpu)"


def _celery_figures(tmp: Path, spec: Path, costly: Path, n: int, raw: Clock) -> None:
    from merlin_mdm.server import LocalRedisServer, free_port

    server = LocalRedisServer(tmp / "redis")
    port = free_port()
    server.start(port)
    (tmp / "app.yaml").write_text(f"broker: {{port: {port}, password_file: {server.password_file}}}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MERLIN_MDM_CONFIG": str(tmp / "app.yaml")}
    os.environ["MERLIN_MDM_CONFIG"] = env["MERLIN_MDM_CONFIG"]
    try:
        with Clock() as celery:
            elapsed = celery_run(spec, 2, ["--vars", f"N_SAMPLES={n}"], env, tmp)
        celery.wall = elapsed  # from `run` to finished, without the worker's start-up
        print(f"celery: null_samples {n} samples, 1 worker x 2 processes: {celery} = {_ratios(celery, raw)} raw "
              "(goal <= 1.5; wall from `run` to finished, cpu includes the worker's start-up)")
        slow = celery_run(costly, 4, [], env, tmp)
        print(f"celery: 8 x sleep 1, 1 worker x 4 processes: {slow:.2f} s = {slow / 2:.2f}x the 2 s ideal "
              f"(goal <= 1.3); first task start to last task end {makespan(costly):.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
