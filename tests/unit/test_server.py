"""The local redis-server's process bookkeeping."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from merlin_mdm.server import _gone


def test_a_zombie_counts_as_gone_and_a_live_process_does_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while not _gone(child.pid) and time.monotonic() < deadline:  # exited but not reaped: a zombie
        time.sleep(0.01)
    assert _gone(child.pid)
    assert os.path.exists(f"/proc/{child.pid}")  # still in the process table until reaped
    child.wait()
    assert _gone(child.pid)
    assert not _gone(os.getpid())


@pytest.mark.redis
def test_a_server_started_without_persist_never_loads_a_persisted_snapshot(tmp_path: Path) -> None:
    from merlin_mdm.server import LocalRedisServer, find_redis_server, free_port

    if find_redis_server() is None:
        pytest.skip("no redis-server binary")
    server, port = LocalRedisServer(tmp_path / "redis"), free_port()
    try:
        server.start(port, persist=True)
        server.redis_config(port).client(timeout=2.0).set("study", "finished")
        server.stop()  # a persisted session saves its data
        server.start(port)  # an ephemeral one starts empty: an ended study must not come back queued
        assert server.redis_config(port).client(timeout=2.0).get("study") is None
        server.redis_config(port).client(timeout=2.0).set("other", "x")
        server.stop()
        server.start(port, persist=True)  # the persisted data is still there for the next --persist start
        client = server.redis_config(port).client(timeout=2.0)
        assert client.get("study") in ("finished", b"finished") and client.get("other") is None
    finally:
        server.stop()


@pytest.mark.redis
def test_a_taken_port_is_named_or_passed_by(tmp_path: Path) -> None:
    """Another server on the port answered `invalid username-password pair` after 10 s."""
    import socket

    from merlin_mdm.errors import BackendError
    from merlin_mdm.server import LocalRedisServer, find_redis_server

    if find_redis_server() is None:
        pytest.skip("no redis-server binary")
    server = LocalRedisServer(tmp_path / "redis")
    with socket.socket() as other:  # someone else listens there
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        with pytest.raises(BackendError, match=f"port {taken} is in use by another process"):
            server.start(taken)
        (tmp_path / "redis").mkdir(exist_ok=True)
        server.conf_file.write_text(f"port {taken}\n")  # the last port used is taken now: another is chosen
        try:
            config = server.start()
            assert config.port != taken and config.client(timeout=2.0).ping()
        finally:
            server.stop()
