"""Benchmarks of the embedded local runner (issue 2). Prints figures; not a test.

    python benchmarks/bench_local.py [--samples 10000] [--status-tasks 100000] [--expand 1000000]

1. Throughput: the null_samples example (an `echo` per sample plus a funnel) with N samples, 2 workers, against
   the raw cost of spawning N `bash -c 'echo'` processes two at a time (xargs -P 2).
2. `merlin-mdm status` on a workspace with 100,000 tasks (per-sample units: worst case 100,000 status rows).
3. Expanding a 1,000,000-sample spec into its task list: time and peak memory (run in a child process).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "merlin_mdm.cli.main"]


def bench_throughput(n: int, workdir: Path) -> None:
    subprocess.run([*CLI, "example", "null_samples", "-o", str(workdir / "null")], check=True, capture_output=True)
    spec = workdir / "null" / "null_samples.yaml"
    t0 = time.perf_counter()
    out = subprocess.run([*CLI, "run", str(spec), "--local", "--workers", "2", "--no-progress", "--vars",
                          f"N_SAMPLES={n}"], capture_output=True, text=True, check=False)
    ours = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    t0 = time.perf_counter()
    subprocess.run(f"seq {n} | xargs -P 2 -n 1 bash -c 'echo $0 > /dev/null'", shell=True, check=True)
    raw = time.perf_counter() - t0
    print(f"[throughput] null_samples, {n} samples, 2 workers: {ours:.2f} s end to end "
          f"({n / ours:.0f} samples/s, including workspace creation and sample generation)")
    print(f"[throughput] raw: {n} `bash -c echo` spawned two at a time: {raw:.2f} s ({n / raw:.0f}/s)")
    print(f"[throughput] ratio ours/raw = {ours / raw:.2f}  (goal <= 1.5); vs Merlin 1.13 --local ~67 samples/s: "
          f"{n / ours / 67:.1f}x")


def _status_workspace(n: int, workdir: Path) -> Path:
    from merlin_mdm.spec import load_spec_text
    from merlin_mdm.status.model import TaskFailure, TaskState
    from merlin_mdm.status.sqlite_store import SqliteStatusStore
    from merlin_mdm.study.workspace import create_workspace

    np.save(workdir / "s.npy", np.arange(n).reshape(-1, 1))
    text = textwrap.dedent(f"""
        description: {{name: status_bench, description: x}}
        env: {{variables: {{OUTPUT_PATH: {workdir}/ws}}}}
        merlin: {{samples: {{file: {workdir}/s.npy, column_labels: [X]}}}}
        study:
          - {{name: work, run: {{cmd: "echo $(X)"}}}}
          - {{name: funnel, run: {{cmd: "echo", depends: [work]}}}}
    """)
    loaded = load_spec_text(text, workdir / "spec.yaml")
    ws, plan = create_workspace(loaded, batch_size=1)
    store = SqliteStatusStore(ws.status_path)
    store.register(plan)
    store.db.execute("BEGIN")
    for key in plan.units():
        failed = key.unit % 1000 == 0
        failures = (TaskFailure(key.unit, TaskState.FAILED, 1, "exit code 1", "x.err"),) if failed else ()
        store.db.execute("UPDATE units SET state='done', finished=?, failed=?, started=?, ended=?, run_s=1.0, "
                         "run_n=1 WHERE instance=? AND unit=?", (0 if failed else 1, int(failed), 1.0, 2.0,
                                                                 key.instance, key.unit))
        if failures:
            store.db.execute("INSERT INTO failures VALUES (?, ?, ?, 'failed', 1, 'exit code 1', 'x.err')",
                             (key.instance, key.unit, key.unit))
    store.db.execute("COMMIT")
    store.set_state("running")
    store.close()
    return ws.root


def bench_status(n: int, workdir: Path) -> None:
    root = _status_workspace(n, workdir)
    from merlin_mdm.studies import study_status

    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        snap = study_status(root)
        times.append(time.perf_counter() - t0)
    assert snap.total == n + 1
    print(f"[status] {snap.total} tasks, {n + 1} status rows: in-process snapshot best {min(times) * 1000:.1f} ms")
    cmd = []
    for args in (["status", str(root)], ["status", str(root), "--json"]):
        t0 = time.perf_counter()
        subprocess.run([*CLI, *args], capture_output=True, check=True)
        cmd.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import merlin_mdm.cli.main"], check=True)
    startup = time.perf_counter() - t0
    print(f"[status] whole `merlin-mdm status` command: table {cmd[0]:.3f} s, --json {cmd[1]:.3f} s "
          f"(of which Python start-up + imports {startup:.3f} s)  (goal < 0.5 s)")


EXPAND_CHILD = """
import resource, sys, time, textwrap
from pathlib import Path
import numpy as np
from merlin_mdm.spec import load_spec_text
from merlin_mdm.study.workspace import create_workspace
n, workdir = int(sys.argv[1]), Path(sys.argv[2])
np.save(workdir / "big.npy", np.arange(n, dtype=np.int64).reshape(-1, 1))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
text = textwrap.dedent(f'''
    description: {{name: expand_bench, description: x}}
    env: {{variables: {{OUTPUT_PATH: {workdir}/ws}}}}
    global.parameters: {{P: {{values: [a, b], label: P.%%}}}}
    merlin: {{samples: {{file: {workdir}/big.npy, column_labels: [X]}}}}
    study:
      - {{name: sim, run: {{cmd: "echo $(X) $(P)"}}}}
      - {{name: post, run: {{cmd: "echo $(X)", depends: [sim]}}}}
      - {{name: collect, run: {{cmd: "echo", depends: [post_*]}}}}
''')
t0 = time.perf_counter()
ws, plan = create_workspace(load_spec_text(text, workdir / 'spec.yaml'))
t1 = time.perf_counter()
tasks = 0
for key in plan.units():
    for sample in plan.unit_samples(key):
        tasks += 1
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{tasks} {t1 - t0:.3f} {t2 - t1:.3f} {base / 1024:.1f} {peak / 1024:.1f} {len(plan.instances)}")
"""


def bench_expand(n: int, workdir: Path) -> None:
    out = subprocess.run([sys.executable, "-c", EXPAND_CHILD, str(n), str(workdir)], capture_output=True,
                         text=True, check=True)
    tasks, t_plan, t_iter, base, peak, insts = out.stdout.split()
    print(f"[expand] {n} samples x 2 parameter values, 3 steps -> {insts} instances, {int(tasks):,} tasks")
    print(f"[expand] workspace + plan: {float(t_plan):.2f} s; walking every task: {float(t_iter):.2f} s; "
          f"peak RSS {float(peak):.0f} MiB (after imports and the samples file: {float(base):.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--status-tasks", type=int, default=100_000)
    parser.add_argument("--expand", type=int, default=1_000_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="merlin-mdm-bench-"))
    try:
        bench_throughput(args.samples, workdir)
        bench_status(args.status_tasks, workdir)
        bench_expand(args.expand, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
