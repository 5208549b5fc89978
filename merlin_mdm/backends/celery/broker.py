"""What the broker holds for a study: its messages waiting in queues and those delivered but not acknowledged.

A unit message is acknowledged only once its outcome is recorded (``acks_late``), so a study with no message
at the broker has nothing running and nothing coming: only then may `restart` queue its unfinished units
again without running any twice. `purge` uses the same reading to tell each study what it lost.
Messages are read as kombu's Redis transport stores them: JSON envelopes with a base64 JSON body whose first
argument is the study's workspace.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from merlin_mdm.config import AppConfig

__all__ = ["QUEUE_SUFFIXES", "UNACKED_INDEX_KEY", "UNACKED_KEY", "HeldMessages", "held_messages", "message_workspace",
           "purge_queues", "queue_keys", "waiting_by_study"]

QUEUE_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")  # kombu's priority lists of one queue
UNACKED_KEY = "unacked"  # kombu's hash of delivered, unacknowledged messages
UNACKED_INDEX_KEY = "unacked_index"  # kombu's sorted set of their delivery tags, scored by when they went out


@dataclass(frozen=True)
class HeldMessages:
    """Messages of one study at the broker."""

    waiting: int = 0
    unacked: int = 0

    @property
    def total(self) -> int:
        return self.waiting + self.unacked


def queue_keys(queues: Iterable[str]) -> list[str]:
    """The Redis lists that hold the messages of ``queues``."""
    return [q + s for q in queues for s in QUEUE_SUFFIXES]


def message_workspace(envelope: Any) -> str | None:
    """The workspace a kombu message envelope is about (None when it is not one of ours)."""
    try:
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


def _count(raw: Iterable[Any], wrapped: bool) -> Counter[str]:
    out: Counter[str] = Counter()
    for item in raw:
        try:
            envelope = json.loads(item)
        except (TypeError, ValueError):
            continue
        ws = message_workspace(envelope[0] if wrapped and isinstance(envelope, list) else envelope)
        if ws is not None:
            out[ws] += 1
    return out


def _read(client: Any, queues: Sequence[str]) -> tuple[Counter[str], Counter[str]]:
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queues):
        pipe.lrange(key, 0, -1)
    pipe.hvals(UNACKED_KEY)
    *lists, unacked = pipe.execute()
    waiting: Counter[str] = Counter()
    for items in lists:
        waiting.update(_count(items, wrapped=False))
    return waiting, _count(unacked, wrapped=True)


def held_messages(config: AppConfig, queues: Sequence[str], workspace: str) -> HeldMessages:
    """How many messages of ``workspace`` wait in ``queues`` or are out with a worker (any queue)."""
    client = config.broker.client(timeout=5.0, retry=False)
    try:
        waiting, unacked = _read(client, queues)
    finally:
        client.close()
    return HeldMessages(waiting[workspace], unacked[workspace])


def waiting_by_study(config: AppConfig, queues: Sequence[str], limit: int = -1) -> tuple[int, int, Counter[str]]:
    """How many messages wait in ``queues``, how many of them were read, and how many of those each study
    (workspace) has (the rest are of no merlin-mdm study: Merlin's own, or unreadable); with ``limit``, only
    the first ``limit`` of each list are read (a glance: a million waiting messages are a gigabyte)."""
    client = config.broker.client(timeout=5.0, retry=False)
    try:
        pipe = client.pipeline(transaction=False)
        for key in queue_keys(queues):
            pipe.llen(key)
            pipe.lrange(key, 0, limit - 1 if limit > 0 else -1)
        answers = pipe.execute()
    finally:
        client.close()
    waiting: Counter[str] = Counter()
    lists = answers[1::2]
    for items in lists:
        waiting.update(_count(items, wrapped=False))
    read = sum(len(items) for items in lists)
    return (sum(answers[0::2]) if limit > 0 else read), read, waiting


def purge_queues(config: AppConfig, queues: Sequence[str],
                 drop: Callable[[str | None], bool] | None = None) -> tuple[int, dict[str, int]]:
    """Delete the waiting messages of ``queues`` (with ``drop``, only those of the workspaces it accepts; None for
    a message of no study); returns how many, and how many each study (workspace) lost."""
    client = config.broker.client(timeout=5.0, retry=False)
    try:
        if drop is not None:
            return _purge_matching(client, queues, drop)
        pipe = client.pipeline(transaction=True)
        for key in queue_keys(queues):
            pipe.lrange(key, 0, -1)
        pipe.delete(*queue_keys(queues))
        *lists, _ = pipe.execute()
    finally:
        client.close()
    lost: Counter[str] = Counter()
    for items in lists:
        lost.update(_count(items, wrapped=False))
    return sum(len(items) for items in lists), dict(lost)


def _purge_matching(client: Any, queues: Sequence[str],
                    drop: Callable[[str | None], bool]) -> tuple[int, dict[str, int]]:
    """Remove the chosen messages one by one (LREM of each message's exact text): the others stay in place, and a
    message a worker took in between is simply not found."""
    keys = queue_keys(queues)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.lrange(key, 0, -1)
    lists = pipe.execute()
    pipe = client.pipeline(transaction=False)
    chosen: list[str | None] = []
    for key, items in zip(keys, lists, strict=True):
        for raw in items:
            workspace = _workspace_of(raw)
            if drop(workspace):
                pipe.lrem(key, 1, raw)
                chosen.append(workspace)
    removed = pipe.execute() if chosen else []
    lost = Counter(ws for ws, n in zip(chosen, removed, strict=True) if n and ws is not None)
    return sum(int(n) for n in removed), dict(lost)


def _workspace_of(raw: Any) -> str | None:
    try:
        return message_workspace(json.loads(raw))
    except (TypeError, ValueError):
        return None
