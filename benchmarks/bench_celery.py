"""Benchmark of the Celery backend on a loopback redis-server. Prints figures; not a test.

    python3 benchmarks/bench_celery.py [--samples 10000] [--procs 2] [--batch-size 100] [--queue-sizes 100000,1000000]

1. End to end: the null_samples example (an `echo` per sample plus a funnel) with N samples, queued with the
   backend and drained by one worker with P processes; samples/s from launch to the study's `finished` state.
2. Bare Celery in the same run: N no-op tasks sent to the same broker and drained by one worker with P
   processes (acks_late, prefetch 1, JSON); tasks/s, and the ratio of (1) to it.
3. Queueing: `CeleryBackend.launch` (and the workspace creation before it) for each size in --queue-sizes,
   time and peak RSS of this process.
4. Status: `snapshot()` of the 100,000-task study of (3) (median of 20 reads).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from merlin_mdm.backends import RunOptions, get_backend  # noqa: E402
from merlin_mdm.server import LocalRedisServer, free_port  # noqa: E402
from merlin_mdm.spec import load_spec  # noqa: E402
from merlin_mdm.study.workspace import create_workspace  # noqa: E402

NOOP_APP = """
import os
from celery import Celery
app = Celery("noop", broker=os.environ["BENCH_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True, worker_prefetch_multiplier=1,
                task_ignore_result=True, worker_hijack_root_logger=False)

@app.task(name="noop", ignore_result=True)
def noop(i):
    return None
"""


def _worker(app: str, queues: str, procs: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, "-c", str(procs), "-l", "WARNING",
           "--without-gossip", "--without-mingle", "-O", "fair"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def bench_study(tmp: Path, samples: int, procs: int, batch: int, env: dict[str, str]) -> float:
    spec = tmp / "null" / "null_samples.yaml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text((REPO / "merlin_mdm/examples/null_samples/null_samples.yaml").read_text())
    ws, plan = create_workspace(load_spec(spec, {"N_SAMPLES": str(samples)}), batch_size=batch)
    worker = _worker("merlin_mdm.backends.celery.worker", "merlin", procs, env, tmp / "w.log")
    time.sleep(3)  # worker start-up is not part of the throughput
    backend = get_backend("celery")
    started = time.perf_counter()
    backend.launch(ws, plan, RunOptions())
    store = backend.status_store(ws)
    while store.snapshot().state not in ("finished", "failed"):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    state = store.snapshot().state
    store.close()
    _stop(worker)
    rate = samples / elapsed
    print(f"null_samples {samples} samples, batch {batch}, 1 worker x {procs} processes: {elapsed:.1f} s, "
          f"{rate:.0f} samples/s end to end ({state})")
    return rate


def bench_noop(tmp: Path, tasks: int, procs: int, env: dict[str, str]) -> float:
    (tmp / "noop_app.py").write_text(NOOP_APP)
    benv = {**env, "PYTHONPATH": f"{tmp}{os.pathsep}{env.get('PYTHONPATH', '')}"}
    worker = _worker("noop_app", "noop", procs, benv, tmp / "noop.log")
    time.sleep(3)
    from celery import Celery

    app = Celery("noop", broker=benv["BENCH_BROKER"], set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    client = get_backend("celery").config().broker.client()  # type: ignore[attr-defined]
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(tasks):
            app.send_task("noop", args=[i], queue="noop", producer=producer, ignore_result=True)
    while client.llen("noop") > 0:
        time.sleep(0.02)
    time.sleep(0.2)  # the last prefetched messages
    elapsed = time.perf_counter() - started
    _stop(worker)
    rate = tasks / elapsed
    print(f"bare Celery: {tasks} no-op tasks, 1 worker x {procs} processes: {elapsed:.1f} s, {rate:.0f} tasks/s")
    return rate


def bench_queueing(tmp: Path, sizes: list[int], batch: int) -> Path | None:
    ws_100k = None
    for n in sizes:
        spec = tmp / f"q{n}" / "null_samples.yaml"
        spec.parent.mkdir()
        spec.write_text((REPO / "merlin_mdm/examples/null_samples/null_samples.yaml").read_text())
        t0 = time.perf_counter()
        ws, plan = create_workspace(load_spec(spec, {"N_SAMPLES": str(n)}), batch_size=batch)
        t1 = time.perf_counter()
        get_backend("celery").launch(ws, plan, RunOptions())
        t2 = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"queue {n} samples: workspace {t1 - t0:.2f} s + launch {t2 - t1:.2f} s; peak RSS {peak:.0f} MiB")
        if n == 100_000:
            ws_100k = ws.root
    return ws_100k


def bench_status(root: Path) -> None:
    from merlin_mdm.study.workspace import Workspace

    backend = get_backend("celery")
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        store = backend.status_store(Workspace(root))
        snap = store.snapshot()
        store.close()
        times.append(time.perf_counter() - t0)
    print(f"status of a {snap.total}-task study: median {statistics.median(times) * 1000:.1f} ms "
          f"(open + snapshot, {len(snap.steps)} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--queue-sizes", default="100000,1000000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        server = LocalRedisServer(tmp / "redis")
        port = free_port()
        config = server.start(port)
        (tmp / "app.yaml").write_text(f"broker: {{port: {port}, password_file: {server.password_file}}}\n")
        os.environ["MERLIN_MDM_CONFIG"] = str(tmp / "app.yaml")
        env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_BROKER": config.url()}
        try:
            rate = bench_study(tmp, args.samples, args.procs, args.batch_size, env)
            noop = bench_noop(tmp, args.samples, args.procs, env)
            print(f"ratio end-to-end samples/s : bare-Celery no-op tasks/s = {rate / noop:.2f}")
            sizes = [int(s) for s in args.queue_sizes.split(",") if s]
            root = bench_queueing(tmp, sizes, args.batch_size)
            if root is not None:
                bench_status(root)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
