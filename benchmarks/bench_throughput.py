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
for: the command, its workers, their tasks), with user and system time also printed apart. On a shared
machine the wall time follows the load of others; the CPU time much less, so ratios are given for both.
The load average is printed at the start, before the local and Celery runs and at the end.

First the script waits (--fs-wait) until its previous run's cleanup is 6 minutes old: on ext4 without a
journal, creating a file costs 10-40x more kernel time for minutes after many files were deleted nearby
(RECENTLY_DELETED_S). It prints, for each backend, the kernel time beyond the raw spawn's per file-system
entry created, which shows whether a run met that state anyway (others' deletions: --tmp puts the studies
elsewhere than the system's temporary folder).
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
    """Wall time, and user and system CPU time of waited-for child processes, of what runs inside ``with``."""

    def __enter__(self) -> Clock:
        self.t0, (self.u0, self.s0), self.m0 = time.perf_counter(), _children_cpu(), _machine_idle()
        return self

    def __exit__(self, *exc: object) -> None:
        user, system = _children_cpu()
        self.wall, self.user, self.sys = time.perf_counter() - self.t0, user - self.u0, system - self.s0
        self.idle, self.iowait, self.steal = (b - a for a, b in zip(self.m0, _machine_idle(), strict=True))

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    def __str__(self) -> str:
        return (f"{self.wall:.2f} s wall, {self.cpu:.2f} s cpu ({self.user:.2f} user + {self.sys:.2f} sys); "
                f"all cores: {self.idle:.2f} s idle, {self.iowait:.2f} s iowait, {self.steal:.2f} s stolen")


def _children_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def _machine_idle() -> tuple[float, float, float]:
    """Idle, I/O-wait and stolen (by the hypervisor) seconds of all cores since boot (zeros without /proc/stat).

    A runner that takes more wall time than its CPU time explains left cores idle, waiting on I/O, or to a
    neighbour virtual machine.
    """
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return 0.0, 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[4]) / tick, int(fields[5]) / tick, int(fields[8]) / tick


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# On ext4 without a journal (this VM's root file system) the inode allocator will not reuse an inode freed less than
# 60 s ago (360 s while its inode-table block is not yet written back) and, for each new file, checks every such
# inode of the block group again (fs/ext4/ialloc.c: find_inode_bit -> recently_deleted). For minutes after tens of
# thousands of files were deleted, e.g. by this script's cleanup of its previous run, every file a runner creates
# costs 0.3-1 ms of kernel time instead of about 0.02 ms, while the raw spawn, which creates no file, pays nothing.
RECENTLY_DELETED_S = 360
CLEANUP_STAMP = Path(tempfile.gettempdir()) / "merlin-mdm-bench-cleanup"  # when this script last deleted its files
ENTRIES_PER_TASK = 5  # a null task's folder, script, .out, .err and done-marker


def settled_file_system(wait: float) -> str:
    """Wait until this script's previous cleanup is ``RECENTLY_DELETED_S`` old (at most ``wait`` s); for the record."""
    os.sync()
    try:
        age = time.time() - float(CLEANUP_STAMP.read_text())
    except (OSError, ValueError):
        return "no cleanup by an earlier run recorded"
    pause = max(0.0, min(wait, RECENTLY_DELETED_S - age))
    time.sleep(pause)
    return f"the previous run's cleanup was {age:.0f} s ago; waited {pause:.0f} s"


def _entry_cost(ours: Clock, raw: Clock, n: int) -> str:
    """Kernel time beyond the raw spawn's per file-system entry the runner created (20-30 us on a settled file
    system, 0.3-1 ms while it skips recently deleted inodes)."""
    return f"{(ours.sys - raw.sys) / (ENTRIES_PER_TASK * n) * 1e6:.0f} us sys beyond raw per file-system entry"


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
    t0 = time.time() - 60.0  # a study that ran for a minute, so that the table's time column is realistic
    for key in plan.units():
        store.unit_finished(key, UnitOutcome(len(plan.unit_samples(key)), 0, 0, started=t0, ended=t0 + 60.0))
    store.set_state(StudyState.FINISHED)
    store.close()
    return ws.root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--status-tasks", type=int, default=100_000)
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="where to create the studies (default: the system's temporary folder, which others' test "
                             "suites and benchmarks also fill and empty)")
    parser.add_argument("--fs-wait", type=float, default=RECENTLY_DELETED_S,
                        help="wait at most this many seconds for the previous run's deleted files to stop slowing file "
                             "creation (see RECENTLY_DELETED_S; 0: measure as it is)")
    args = parser.parse_args()
    n = args.samples
    print(f"file system: {settled_file_system(args.fs_wait)}")  # before raw: raw and local stay back to back
    print(f"start: {_load()}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmpdir:
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
        print(f"before local: {_load()}")
        with Clock() as local:
            local_run(spec, 2, ["--vars", f"N_SAMPLES={n}"])
        print(f"local: null_samples {n} samples, --workers 2: {local} = {_ratios(local, raw)} raw (goal <= 1.2); "
              f"{_entry_cost(local, raw, n)}")
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
    os.sync()  # written back, the deleted inodes are skipped for 60 s instead of 360 s
    CLEANUP_STAMP.write_text(f"{time.time()}\n")
    print(f"end: {_load()}")


def _ratios(ours: Clock, raw: Clock) -> str:
    return (f"{ours.wall / raw.wall:.2f}x (wall) / {ours.cpu / raw.cpu:.2f}x (cpu: {ours.user / raw.user:.2f}x user, "
            f"{ours.sys / raw.sys:.2f}x sys)")


def _celery_figures(tmp: Path, spec: Path, costly: Path, n: int, raw: Clock) -> None:
    from merlin_mdm.server import LocalRedisServer, free_port

    server = LocalRedisServer(tmp / "redis")
    port = free_port()
    server.start(port)
    (tmp / "app.yaml").write_text(f"broker: {{port: {port}, password_file: {server.password_file}}}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MERLIN_MDM_CONFIG": str(tmp / "app.yaml")}
    os.environ["MERLIN_MDM_CONFIG"] = env["MERLIN_MDM_CONFIG"]
    try:
        print(f"before celery: {_load()}")
        with Clock() as celery:
            elapsed = celery_run(spec, 2, ["--vars", f"N_SAMPLES={n}"], env, tmp)
        celery.wall = elapsed  # from `run` to finished, without the worker's start-up
        print(f"celery: null_samples {n} samples, 1 worker x 2 processes: {celery} = {_ratios(celery, raw)} raw "
              "(goal <= 1.5; wall from `run` to finished, cpu includes the worker's start-up); "
              f"{_entry_cost(celery, raw, n)}")
        slow = celery_run(costly, 4, [], env, tmp)
        print(f"celery: 8 x sleep 1, 1 worker x 4 processes: {slow:.2f} s = {slow / 2:.2f}x the 2 s ideal "
              f"(goal <= 1.3); first task start to last task end {makespan(costly):.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
