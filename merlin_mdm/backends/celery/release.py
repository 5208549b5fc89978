"""Giving back what dead workers held: the messages of a study that workers took from the broker and never
acknowledged (kombu's ``unacked`` hash), put back in their queues at once instead of after the visibility
timeout, which is a day for steps with no walltime.

Only safe when no worker serves the study's queues: a live worker's unacknowledged message may be a unit it
runs now, or one it holds to run later (a retry's countdown), and giving it back would run it twice. The units
are recorded queued again, with the tasks that have their done-marker counted, and the kill does not count as a
death of the unit (``max_deliveries``). :func:`lost_tags` guesses which held messages live workers lost (a
broker restarted under them): `status` names them, with the safe way to get them back.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from merlin_mdm.backends.celery.backend import CeleryBackend, check_server, serving_workers
from merlin_mdm.backends.celery.broker import UNACKED_INDEX_KEY, UNACKED_KEY, message_workspace
from merlin_mdm.backends.celery.liveness import BEAT_SECONDS
from merlin_mdm.errors import BackendError, UsageError
from merlin_mdm.status.redis_store import RedisStatusStore, study_prefix
from merlin_mdm.study.layout import Workspace
from merlin_mdm.study.plan import StudyPlan, UnitKey

__all__ = ["held_tags", "lost_tags", "release_held", "release_key"]

RELEASE_SECONDS = 300  # a release killed while holding its key blocks the next one for at most this long
_DELETE_IF_MINE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def release_held(path: Path) -> str:
    """Give the held messages of the study in ``path`` back to their queues; what was done, in one line.

    Raises:
        UsageError: the study does not run on Celery.
        BackendError: a worker serves the study's queues (its messages may be in hand), or the broker fails.
    """
    from merlin_mdm.studies import backend_of

    ws = Workspace.find(path)
    plan = ws.load_plan()
    ws.check_in_place(plan)
    if backend_of(ws) != "celery":
        raise UsageError(f"{ws.root} does not run on Celery: --release gives back a broker's messages")
    backend = CeleryBackend()
    config = backend.config(ws)
    check_server(config)
    _refuse_while_served(config, plan)
    with _only_release(config, plan.workspace):
        tags = held_tags(config, plan.workspace)
        if not tags:
            return "no message of this study is held by a worker: nothing to give back"
        units = _units(tags)
        _refuse_while_beating(backend, ws, units)
        _give_back(config, tags)
        _record_queued(backend, ws, plan, units)
    return (f"gave back {len(tags)} message(s) held by workers that are gone ({len(units)} unit(s) recorded "
            "queued): start workers (`merlin-mdm run-workers SPEC` or `launch`) to run them")


@contextlib.contextmanager
def _only_release(config: Any, workspace: str) -> Iterator[None]:
    """Hold the study's release key while its held messages are read, given back and recorded: two releases at
    once both read the same messages, and both reported (and recorded) giving them back."""
    client = config.broker.client(timeout=5.0)
    key, mine = release_key(workspace), f"{socket.gethostname()}:{os.getpid()}:{time.time()}"
    try:
        if not client.set(key, mine, nx=True, ex=RELEASE_SECONDS):
            raise BackendError(f"another `restart --release` of this study runs now ({_holder(client, key)}): "
                               "wait for it, then look at `merlin-mdm status`")
        try:
            yield
        finally:
            client.eval(_DELETE_IF_MINE, 1, key, mine)
    finally:
        client.close()


def release_key(workspace: str) -> str:
    """The Redis key held by the one `restart --release` of ``workspace`` that runs."""
    return study_prefix(workspace) + "releasing"


def _holder(client: Any, key: str) -> str:
    value = client.get(key)
    text = value.decode() if isinstance(value, bytes) else str(value or "")
    host, _, rest = text.partition(":")
    return f"process {rest.partition(':')[0]} on {host}" if rest else "another process"


def _refuse_while_served(config: Any, plan: StudyPlan) -> None:
    serving = serving_workers(config, plan)
    if serving:
        raise BackendError(f"worker(s) {', '.join(serving)} serve this study's queues: the messages they hold may "
                           "be units they run now, or hold to run later. Stop them first (`merlin-mdm stop-workers "
                           "--spec SPEC`: a warm stop gives back what they hold), then --release, then start "
                           "workers again")


def lost_tags(config: Any, store: RedisStatusStore, tags: dict[str, Any]) -> dict[str, Any]:
    """Those of the held messages ``tags`` that live workers have likely lost: taken more than ``MISSED`` of the
    workers' beats ago, and carrying no unit that beats. A guess, for
    `status` to point at, never for giving messages back while workers serve: a worker also holds a message it
    runs whose beat is late, a retry waiting out its countdown, and an expand message (no unit) it runs; and the
    ages compare clocks of two machines. One whose broker connection broke drops what it had (Celery clears its
    reserved requests, their delivery tags dead with the channel), and kombu gives them back only after the
    visibility timeout."""
    from merlin_mdm.backends.celery.liveness import MISSED, is_silent, live_worker_entries

    every = max([BEAT_SECONDS, *(float(e.get("every", BEAT_SECONDS)) for e in live_worker_entries(config).values())])
    client = config.broker.client(timeout=5.0, retry=False)
    try:
        pipe = client.pipeline(transaction=False)
        for tag in tags:
            pipe.zscore(UNACKED_INDEX_KEY, tag)  # one at a time: ZMSCORE needs Redis 6.2
        sent = dict(zip(tags, pipe.execute(), strict=True))
    finally:
        client.close()
    beats, now = store.beats_not_ended(), time.time()
    return {tag: envelope for tag, envelope in tags.items()
            if sent[tag] is not None and now - float(sent[tag]) > MISSED * every
            and all(not beats.get(key) or is_silent(beats[key], now) for key in _units({tag: envelope}))}


def held_tags(config: Any, workspace: str) -> dict[str, Any]:
    """Delivery tag -> message envelope, for every unacknowledged message of ``workspace``."""
    client = config.broker.client(timeout=5.0, retry=False)
    try:
        held = client.hgetall(UNACKED_KEY)
    finally:
        client.close()
    out = {}
    for tag, payload in held.items():
        try:
            envelope = json.loads(payload)[0]
        except (TypeError, ValueError, IndexError):
            continue
        if message_workspace(envelope) == workspace:
            out[tag.decode() if isinstance(tag, bytes) else str(tag)] = envelope
    return out


def _refuse_while_beating(backend: CeleryBackend, ws: Workspace, units: list[UnitKey]) -> None:
    """A held unit whose process still beats is running now (its worker may be in its warm shutdown, which
    answers no broadcast): giving it back would run it twice."""
    from merlin_mdm.backends.celery.liveness import is_silent

    store = cast(RedisStatusStore, backend.status_store(ws))
    try:
        beats = store.unit_beats()
    finally:
        store.close()
    now = time.time()
    alive = [key for key in units if beats.get(key) and not is_silent(beats[key], now)]
    if alive:
        raise BackendError(f"unit(s) {', '.join(k.to_id() for k in alive)} run now (their process still beats): a "
                           "worker that is stopping may still be finishing them. Wait for them (`merlin-mdm "
                           "monitor`); a unit whose process ended (seen at once on its machine) or stopped beating "
                           "(six beats, 30 s by default, seen from elsewhere) can be "
                           "given back")


def _units(tags: dict[str, Any]) -> list[UnitKey]:
    """The units the held messages carry (expand messages carry none)."""
    from merlin_mdm.backends.celery.scheduling import UNIT_TASK

    units = []
    for envelope in tags.values():
        headers = envelope.get("headers") or {}
        if headers.get("task") == UNIT_TASK:
            units.append(UnitKey.from_id(str(json.loads(_body(envelope))[0][1])))
    return units


def _give_back(config: Any, tags: dict[str, Any]) -> None:
    """Restore each message to its queue (kombu's own restore)."""
    from merlin_mdm.backends.celery.app import make_app

    app = make_app(config)
    try:
        with app.connection_for_write() as conn:
            qos = conn.default_channel.qos
            for tag in tags:
                qos.restore_by_tag(tag, leftmost=True)
    finally:
        app.close()


def _body(envelope: Any) -> str:
    import base64

    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return body.decode() if isinstance(body, bytes) else str(body)


def _record_queued(backend: CeleryBackend, ws: Workspace, plan: StudyPlan, units: list[UnitKey]) -> None:
    from merlin_mdm.backends.execution import count_done

    store = cast(RedisStatusStore, backend.status_store(ws))
    try:
        for key in units:
            store.unit_given_back(key, count_done(plan, key))
    finally:
        store.close()
