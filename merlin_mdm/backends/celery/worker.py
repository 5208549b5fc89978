"""The module `celery worker -A` loads: the app built from the configuration in effect.

`merlin-mdm run-workers` starts ``python -m celery -A merlin_mdm.backends.celery.worker worker ...`` with
``MERLIN_MDM_CONFIG`` naming the app.yaml it resolved, so the password travels in no argument.

The worker's pool processes are forked from this process once it has loaded this module, so whatever a unit
imports lazily is imported here first (``PRELOADED``). Otherwise every pool process imports it on its first
unit, all at the same time: numpy alone took 0.25-0.30 s per process, and with 4 processes on 2 busy cores
the first units of a study started 0.1-0.8 s late (issue 10, 8 x `sleep 1`).

``COLD_STOP_SIGNAL`` (SIGUSR2) makes the worker stop cold, as SIGQUIT does: the signal a launcher (srun) passes
on, where it would end its whole step on SIGQUIT itself.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import signal
from types import FrameType
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from merlin_mdm.backends.celery import worker_logging
from merlin_mdm.backends.celery.app import make_app
from merlin_mdm.backends.celery.liveness import (
    Beating,
    clear_stopping,
    forget_worker,
    mark_stopping,
    worker_heartbeat,
)
from merlin_mdm.backends.celery.workers import COLD_STOP_SIGNAL
from merlin_mdm.config import load_config

__all__ = ["PRELOADED", "app"]

_MAIN = os.getpid()  # the worker's main process (its pool processes are forked from it and inherit handlers)


def _stop_cold(signum: int, frame: FrameType | None) -> None:
    """Celery's own cold shutdown: SIGQUIT to the main process (pool processes leave it to the main one)."""
    if os.getpid() == _MAIN:
        os.kill(_MAIN, signal.SIGQUIT)


signal.signal(COLD_STOP_SIGNAL, _stop_cold)  # Celery leaves SIGUSR2 alone unless CELERY_RDBSIG is set
worker_logging.install()

# numpy, mmap: reading a study's samples (memory-mapped); encodings.idna: resolving the Redis host name.
PRELOADED = ("numpy", "mmap", "encodings.idna")

for _name in PRELOADED:
    importlib.import_module(_name)

_config = load_config()
app = make_app(_config)
_config.status.client().close()  # a client connects on first use; building one imports what redis imports lazily
_BEATS: list[tuple[str, Beating]] = []


@worker_ready.connect  # type: ignore[untyped-decorator]
def _beat_while_alive(sender: Any, **_: Any) -> None:
    """The worker beats on the broker from now until its main process exits (its warm shutdown included)."""
    queues = [q.name for q in sender.task_consumer.queues]
    with contextlib.suppress(Exception), _config.status.client() as client:
        clear_stopping(client, sender.hostname)  # a worker of this name stopped before; this one is not stopping
    _BEATS.append((sender.hostname, worker_heartbeat(_config, sender.hostname, queues)))


@worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _stopping(sender: Any, sig: Any = "", **_: Any) -> None:
    """A stop signal (SIGTERM: warm): the units in hand stop before their next task and go back to the queue.
    The signal is recorded with the mark: `run-workers` tells a `scancel --signal=TERM` of its job's steps from
    workers that ended by themselves."""
    with contextlib.suppress(Exception), _config.status.client() as client:
        mark_stopping(client, [str(sender)], str(sig or ""))


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _forget(**_: Any) -> None:
    """Ended (after the warm shutdown, or at exit after a cold one): no more beats, and no entry left to age.
    Pool processes forked later inherit this handler and the list: only the main process speaks for the worker."""
    while _BEATS and os.getpid() == _MAIN:
        hostname, beating = _BEATS.pop()
        beating.close()
        with contextlib.suppress(Exception):  # the broker may be gone: the entry then ages out
            forget_worker(_config, hostname)


atexit.register(_forget)
