"""The local redis-server's process bookkeeping."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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
