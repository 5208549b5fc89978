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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from merlin_mdm.config import AppConfig

__all__ = ["QUEUE_SUFFIXES", "UNACKED_KEY", "HeldMessages", "held_messages", "message_workspace", "purge_queues",
           "queue_keys"]

QUEUE_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")  # kombu's priority lists of one queue
UNACKED_KEY = "unacked"  # kombu's hash of delivered, unacknowledged messages


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


def purge_queues(config: AppConfig, queues: Sequence[str]) -> tuple[int, dict[str, int]]:
    """Delete the waiting messages of ``queues``; returns how many, and how many each study (workspace) lost."""
    client = config.broker.client(timeout=5.0, retry=False)
    try:
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
