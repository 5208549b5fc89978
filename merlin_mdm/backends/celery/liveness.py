"""Who is alive: each worker, and each unit it runs, says so in Redis every few seconds.

Celery's broadcast (`inspect`) is not enough to know it. A worker in its warm shutdown (after `stop-workers`, at
an allocation's end) no longer answers it while it still runs the units in hand, and giving those back
(`restart --release`) ran them twice (an outside probe saw it). A SIGKILLed worker answers nothing either. The
beats tell the two apart: a worker's main process beats until it exits, whatever it is doing, and the process
running a unit beats until the unit is recorded; beats that stopped more than ``MISSED`` of their intervals ago
belong to processes that are gone. A beat also names its process (:func:`process_token`: machine, pid, start
time); read on that same machine, a beat whose process has ended is silent at once (a SIGKILLed worker no longer
holds its queues, nor its units, for 30 s), and on any other machine it ages as before.

Workers beat into ``WORKERS_KEY`` on the broker (hostname -> when, pid, queues, interval); units into their
study's status store (:meth:`~merlin_mdm.status.redis_store.RedisStatusStore.beat`: "when interval process"). A beat
carries its interval (``MERLIN_MDM_HEARTBEAT`` seconds in the beating process, default 5), and a reader judges it
by that interval, never by its own setting.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from merlin_mdm.config import AppConfig
from merlin_mdm.status.redis_store import RedisStatusStore
from merlin_mdm.study.plan import UnitKey

__all__ = [
    "BEAT_SECONDS",
    "HEARTBEAT_ENV",
    "WORKERS_KEY",
    "Beating",
    "beat_seconds",
    "forget_worker",
    "is_silent",
    "live_worker_entries",
    "live_workers",
    "process_gone",
    "process_token",
    "silent_units",
    "stop_signals",
    "unit_heartbeat",
    "worker_heartbeat",
]

BEAT_SECONDS = 5.0
MISSED = 6  # beats missed before a process counts as gone (or frozen)
WORKERS_KEY = "mdm:workers"
HEARTBEAT_ENV = "MERLIN_MDM_HEARTBEAT"
SPEC_ENV = "MERLIN_MDM_SPEC"  # set by `run-workers` for its workers: the spec (absolute path) their beats name


def beat_seconds(env: Mapping[str, str] = os.environ) -> float:
    """The interval this process beats at (``MERLIN_MDM_HEARTBEAT``, default ``BEAT_SECONDS``)."""
    try:
        value = float(env.get(HEARTBEAT_ENV, BEAT_SECONDS))
    except ValueError:
        return BEAT_SECONDS
    return value if value > 0 else BEAT_SECONDS


def is_silent(beat: str | bytes | float | None, now: float) -> bool:
    """Whether a beat ("when", "when interval" or "when interval process") is older than ``MISSED`` of its
    intervals, or names a process of this machine that has ended; never for none."""
    fields = (beat.decode() if isinstance(beat, bytes) else str(beat or "")).split()
    if not fields:
        return False
    every = float(fields[1]) if len(fields) > 1 else BEAT_SECONDS
    return now - float(fields[0]) > every * MISSED or (len(fields) > 2 and process_gone(fields[2]))


def process_token(pid: int | None = None) -> str:
    """``machine/pid/start``: names one process across pid reuse (start: clock ticks after boot, from /proc);
    ``machine/pid/`` where /proc cannot tell."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{pid}/{_start_time(pid) or ''}"


def process_gone(token: str) -> bool:
    """Whether the process ``token`` names has ended: only known on its own machine (False elsewhere, and for
    a token that cannot be read). An unreaped zombie has ended; a pid taken by another process has too."""
    machine, _, rest = token.partition("/")
    pid_text, _, start = rest.partition("/")
    if machine != socket.gethostname() or not pid_text.isdigit():
        return False
    now = _start_time(int(pid_text))
    return now is None or (bool(start) and now != start)


def _start_time(pid: int) -> str | None:
    """The start time of a live process ``pid`` (/proc/PID/stat field 22); None when it has ended or is a
    zombie, or on a system without /proc (then every process counts as alive: :func:`process_gone`)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].decode().split()  # no codec to import
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else "?"
    except (OSError, IndexError, UnicodeDecodeError):
        return "?"
    return None if fields[0] in ("Z", "X") else fields[19]


class Beating:
    """Calls ``beat()`` now and then every ``every`` seconds on a daemon thread, until :meth:`close`. A beat
    that fails (the server restarting) is skipped: the next one says the same."""

    def __init__(self, beat: Callable[[], None], every: float):
        self._beat = beat
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mdm-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._beat()
            if self._stop.wait(self._every):
                return

    def close(self) -> None:
        """Stop beating (the thread ends within a beat; nobody waits for it)."""
        self._stop.set()


def unit_heartbeat(store: RedisStatusStore, key: UnitKey) -> Beating:
    """The running unit ``key`` beats in its study's status store."""
    every, me = beat_seconds(), process_token()
    return Beating(lambda: store.beat(key, f"{time.time()} {every} {me}"), every)


def worker_heartbeat(config: AppConfig, hostname: str, queues: Sequence[str]) -> Beating:
    """This worker process beats on the broker, with the queues it consumes and the spec its `run-workers` named
    (``MERLIN_MDM_SPEC``: `stop-workers --spec` stops that spec's groups only), until it exits."""
    client = config.broker.client()
    every = beat_seconds()
    value = {"pid": os.getpid(), "process": process_token(), "queues": sorted(queues), "every": every,
             "spec": os.environ.get(SPEC_ENV) or None, "parent": os.getppid()}
    return Beating(lambda: client.hset(WORKERS_KEY, hostname, json.dumps({**value, "t": time.time()})), every)


STOPPING_KEY = "mdm:stopping:"  # + worker hostname, on the status server: its warm shutdown was asked for


def mark_stopping(client: Any, hostnames: Sequence[str], signal_name: str = "") -> None:
    """The named workers were asked for a warm shutdown: the units they run stop before their next task and go
    back to the queue (Celery would let each run every task it has left, a hundred samples for a unit of 100).
    ``signal_name``: the signal that asked it (a worker's own handler says; `run-workers` reads it back)."""
    if hostnames:
        pipe = client.pipeline(transaction=False)
        for name in hostnames:
            pipe.set(STOPPING_KEY + name, f"{time.time()} {signal_name}".rstrip(), ex=7 * 86400)
        pipe.execute()


def stop_signals(config: AppConfig, prefixes: Sequence[str], since: float = 0.0) -> dict[str, str]:
    """Worker hostname -> the signal that stopped it, for the workers whose names start with one of
    ``prefixes`` (a `run-workers`' node names before their host) and that a signal stopped at ``since`` or later
    (a mark of an earlier worker of the same name on another host is older)."""
    client = config.status.client(timeout=3.0, retry=False)
    found: dict[str, str] = {}
    try:
        for prefix in prefixes:
            pattern = re.sub(r"([*?\[\]\\])", r"\\\1", STOPPING_KEY + prefix) + "*"  # a name is matched as it is
            for key in client.scan_iter(match=pattern, count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                value = client.get(key)
                text = value.decode() if isinstance(value, bytes) else str(value or "")
                when, _, signal_name = text.partition(" ")
                with contextlib.suppress(ValueError):
                    if signal_name and float(when) >= since:
                        found[name.removeprefix(STOPPING_KEY)] = signal_name
    finally:
        client.close()
    return found


def clear_stopping(client: Any, hostname: str) -> None:
    """A worker that starts under a name that stopped before is not stopping."""
    client.delete(STOPPING_KEY + hostname)


def is_stopping(client: Any, hostname: str) -> bool:
    """Whether the worker ``hostname`` was asked to stop."""
    return bool(hostname) and bool(client.exists(STOPPING_KEY + hostname))


def forget_worker(config: AppConfig, hostname: str) -> None:
    """A worker that ends (cleanly, or cold) takes its entry away at once: a new worker group may start on its
    queues without waiting for the entry to age (only a killed worker's does)."""
    client = config.broker.client(timeout=3.0, retry=False)
    try:
        client.hdel(WORKERS_KEY, hostname)
    finally:
        client.close()


def live_workers(config: AppConfig, now: float | None = None) -> dict[str, list[str]]:
    """Worker hostname -> its queues, for every worker whose last beat is recent (by its own interval)."""
    return {name: list(entry.get("queues", [])) for name, entry in live_worker_entries(config, now).items()}


def live_worker_entries(config: AppConfig, now: float | None = None) -> dict[str, dict[str, Any]]:
    """Worker hostname -> its last beat (queues, pid, spec, ...), for every worker whose last beat is recent."""
    client = config.broker.client(timeout=3.0, retry=False)
    try:
        entries: dict[Any, Any] = client.hgetall(WORKERS_KEY)
    finally:
        client.close()
    now = time.time() if now is None else now
    out = {}
    for name, raw in entries.items():
        try:
            entry = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if not is_silent(f"{entry.get('t', 0)} {entry.get('every', BEAT_SECONDS)} {entry.get('process', '')}", now):
            out[name.decode() if isinstance(name, bytes) else str(name)] = entry
    return out


def silent_units(beats: Mapping[UnitKey, str], now: float) -> list[UnitKey]:
    """The units in flight whose process stopped beating (one that never beat, taken by a worker from before the
    beats, is not judged)."""
    return sorted((key for key, beat in beats.items() if is_silent(beat, now)), key=lambda k: (k.instance, k.unit))
