"""The Celery application: settings that make tasks safe to lose and redeliver, and two thin tasks.

Messages are JSON and carry only ids: ``unit(workspace, unit_id)`` and ``expand(workspace, instance, lo, hi)``.
A worker loads the plan from the shared file system once per study and process. Nothing here waits on a
result, nothing uses chords, and no Celery internals are patched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import Ignore, Reject

from merlin_mdm.backends.celery.dependencies import RedisDependencies
from merlin_mdm.backends.celery.in_allocation import unit_misfit
from merlin_mdm.backends.celery.liveness import mark_stopping
from merlin_mdm.backends.celery.scheduling import (
    EXPAND_TASK,
    UNIT_TASK,
    Dispatch,
    GivenBack,
    StillRunning,
    execute_unit,
    expand_range,
    fail_study,
    fail_unit,
    send_dispatch,
)
from merlin_mdm.config import AppConfig
from merlin_mdm.errors import StatusError
from merlin_mdm.status.redis_store import RedisStatusStore
from merlin_mdm.study.plan import StudyPlan, UnitKey
from merlin_mdm.study.workspace import Workspace

__all__ = ["EXPAND_TASK", "UNIT_TASK", "StudyCache", "celery_settings", "hand_back", "make_app"]

log = logging.getLogger(__name__)
HELD_RETRY_SECONDS = 15.0  # a redelivered unit whose first copy still runs asks again after this
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def celery_settings(config: AppConfig) -> dict[str, Any]:
    """Celery settings for ``config`` (``config.celery`` overrides are applied on top)."""
    broker = config.broker
    settings: dict[str, Any] = {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,  # a unit is acknowledged when it is recorded, so a dead worker loses nothing
        "task_reject_on_worker_lost": True,  # ... and its message goes back to the queue (capped in the store)
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_default_queue": "merlin",
        "task_create_missing_queues": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_connection_timeout": 5,
        # A message whose worker died unacknowledged is restored once visibility_timeout has passed; sweep for
        # such messages often enough that a short timeout takes effect (kombu's default sweep is ~100 s).
        "broker_transport_options": {"visibility_timeout": config.visibility_timeout,
                                     "unacked_restore_interval": min(60, max(1, config.visibility_timeout // 3)),
                                     "unacked_restore_throttle": 1,
                                     "socket_connect_timeout": 5, "socket_timeout": 30,
                                     "retry_on_timeout": True, "health_check_interval": 30},
        "broker_heartbeat": 0,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "worker_enable_remote_control": True,
        "result_backend": None,
    }
    if broker.tls:
        settings["broker_use_ssl"] = broker.ssl_options()
    settings.update(dict(config.celery))
    return settings


StudyEntry = tuple[StudyPlan, RedisStatusStore, RedisDependencies]


class StudyCache:
    """Per worker process: each study's plan, status store and dependency counts, loaded on first use."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.entries: dict[str, StudyEntry] = {}
        self.client: Any = None
        self.broker_client: Any = None

    def broker(self) -> Any:
        """This process's client of the broker (released units are published with it)."""
        if self.broker_client is None:  # created in the pool process, never shared across a fork
            self.broker_client = self.config.broker.client()
        return self.broker_client

    def get(self, workspace: str) -> StudyEntry:
        """The plan, store and dependency counts of ``workspace``."""
        entry = self.entries.get(workspace)
        if entry is None:
            if self.client is None:  # created in the pool process, never shared across a fork
                self.client = self.config.status.client()
            plan = Workspace(Path(workspace)).load_plan()
            entry = (plan, RedisStatusStore(self.client, workspace, plan), RedisDependencies(self.client, plan))
            self.entries[workspace] = entry
        return entry

    def load(self, workspace: str, unit_id: str, retry_on: tuple[type[BaseException], ...]) -> StudyEntry:
        """:meth:`get`; a plan that cannot be loaded (not a passing error: those are retried) fails the study."""
        try:
            return self.get(workspace)
        except retry_on:
            raise
        except Exception as exc:
            if self.client is None:
                self.client = self.config.status.client()
            fail_study(RedisStatusStore(self.client, workspace), unit_id, exc)
            raise Ignore() from None  # acknowledged: recorded, and a redelivery would fail the same way


def hand_back(task: Any, client: Any, why: str) -> None:
    """The allocation ends before this unit could: stop this worker taking more and requeue the message (the
    units its other processes run stop before their next task: :func:`mark_stopping`)."""
    mark_stopping(client, [task.request.hostname])
    task.app.control.shutdown(destination=[task.request.hostname])
    raise Reject(why, requeue=True)


FAILING_SAID_EVERY = 10  # retries between two errors in the worker's log about a status store that keeps failing


@contextlib.contextmanager
def _said_when_failing(task: Any, what: str, retry_on: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Let a passing error go to Celery's retry; say so in the log, as an error, every few retries in a row."""
    try:
        yield
    except retry_on as exc:
        tries = task.request.retries + 1
        if tries % FAILING_SAID_EVERY == 0:
            log.error("%s: the status store or broker failed %d times in a row (%s: %s); retried every 30 s until "
                      "it answers, nothing is lost meanwhile", what, tries, type(exc).__name__, exc)
        raise


def make_app(config: AppConfig) -> Celery:
    """A configured Celery app with the `unit` and `expand` tasks registered."""
    app = Celery("merlin_mdm", broker=config.broker.url(), set_as_current=False)
    app.conf.update(celery_settings(config))
    cache = StudyCache(config)
    import redis

    retry_on = (redis.ConnectionError, redis.TimeoutError, OSError, StatusError)

    # A status store that keeps failing (down, out of memory, read-only) is waited for as long as it takes, every
    # 30 s at most: after a number of retries Celery would acknowledge the message and the unit would be lost.
    @app.task(  # type: ignore[untyped-decorator]
        name=UNIT_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
        autoretry_for=retry_on, retry_backoff=1, retry_backoff_max=30, max_retries=None)
    def unit(self: Any, workspace: str, unit_id: str) -> None:
        with _said_when_failing(self, f"unit {unit_id} of {workspace}", retry_on):
            _unit(self, workspace, unit_id)

    def _unit(self: Any, workspace: str, unit_id: str) -> None:
        plan, store, deps = cache.load(workspace, unit_id, retry_on)
        key = UnitKey.from_id(unit_id)
        misfit = unit_misfit(plan, key, os.environ, time.time())
        if misfit is not None:
            hand_back(self, store.r, misfit)
        def send(dispatch: Dispatch) -> None:
            send_dispatch(cache.broker(), workspace, plan, dispatch)

        try:
            execute_unit(store, deps, plan, key, send, config.max_deliveries, self.request.hostname or "", retry_on)
        except retry_on:
            raise
        except GivenBack as exc:  # its worker is stopping: the message goes back to the broker
            raise Reject(str(exc), requeue=True) from None
        except StillRunning as exc:  # its first copy runs: asked again later, run then only if that copy died
            log.info("%s; asked again in %g s", exc, HELD_RETRY_SECONDS)
            raise self.retry(countdown=HELD_RETRY_SECONDS, max_retries=None) from None
        except Exception as exc:  # any other failure is the unit's recorded failure, never an acked loss
            fail_unit(store, deps, plan, key, exc, send)

    @app.task(  # type: ignore[untyped-decorator]
        name=EXPAND_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
        autoretry_for=retry_on, retry_backoff=1, retry_backoff_max=30, max_retries=None)
    def expand(self: Any, workspace: str, instance: int, lo: int, hi: int) -> None:
        with _said_when_failing(self, f"units {lo}-{hi - 1} of instance {instance} of {workspace}", retry_on):
            plan, _, _ = cache.get(workspace)
            send_dispatch(cache.broker(), workspace, plan, expand_range(instance, lo, hi))

    return app
