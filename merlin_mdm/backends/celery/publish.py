"""Unit and expand messages written to the broker as Celery's own client writes them, without importing Celery.

`merlin-mdm run` only publishes a study's first messages, yet importing Celery and building its app took
0.47 s, more than the rest of the command (issue 10). A task message is small and documented: Celery's
message protocol 2 (headers naming the task, a JSON body ``[args, kwargs, embed]``) inside the envelope
kombu's Redis transport pushes onto the queue's list, the list that workers pop and that
:mod:`merlin_mdm.backends.celery.broker` reads. Workers publish the units they release the same way, in one
pipeline per release. `tests/integration/celery/test_publish.py` compares these messages with the ones
Celery's ``send_task`` writes, field by field, so a Celery or kombu upgrade that changes them fails there.

Messages are JSON, carry only ids (a workspace path and unit numbers) and go to the queue's plain list
(priority 0). Queue bindings are declared by the workers that consume the queue, as Celery does.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["Message", "publish", "task_message"]

Message = tuple[str, str, list[Any]]  # (queue, task name, args)

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@functools.cache
def _origin(pid: int) -> str:
    return f"gen{pid}@{socket.gethostname()}"  # as Celery names a publishing process


def task_message(task: str, args: list[Any], queue: str) -> str:
    """The envelope of one task message for ``queue`` (results ignored, no retries yet, no ETA)."""
    task_id = str(uuid.uuid4())
    body = json.dumps([args, {}, _EMBED]).encode("utf-8")
    headers: dict[str, Any] = {
        "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None, "group": None,
        "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": repr(args), "kwargsrepr": "{}", "origin": _origin(os.getpid()), "ignore_result": True,
        "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}}
    properties: dict[str, Any] = {
        "correlation_id": task_id, "reply_to": "", "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
        "delivery_info": {"exchange": "", "routing_key": queue}, "delivery_tag": str(uuid.uuid4())}
    return json.dumps({"body": base64.b64encode(body).decode("ascii"), "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": headers, "properties": properties})


def publish(client: Any, messages: Sequence[Message]) -> None:
    """Push ``messages`` onto their queues in order, in one round trip (``client``: a broker redis client)."""
    if not messages:
        return
    pipe = client.pipeline(transaction=False)
    for queue, task, args in messages:
        pipe.lpush(queue, task_message(task, args, queue))  # workers pop from the other end: first in, first out
    pipe.execute()
