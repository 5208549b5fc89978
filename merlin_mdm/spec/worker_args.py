"""A worker's Celery arguments (`merlin.resources.workers.NAME.args`, `run-workers --worker-args`). Pure.

They go to Celery as words, without a shell, after the worker's own ``-n NAME.PID@%h -Q QUEUES``: merlin-mdm finds
its workers by those (``stop-workers``, ``status``, the queue claims of ``run-workers``), so a name or queues
given again in the arguments would make Celery take the later ones and lose the worker to them (Merlin's shell
took one ``-n``; here two reached Celery). The name comes from the worker's key, the queues from its steps.
"""

from __future__ import annotations

import shlex

__all__ = ["OWN_FLAGS", "split_worker_args"]

OWN_FLAGS = {"-n": "the worker's name (its key in merlin.resources.workers, as NAME.PID@%h)",
             "--hostname": "the worker's name (its key in merlin.resources.workers, as NAME.PID@%h)",
             "-Q": "its queues (those of its steps' run.task_queue)",
             "--queues": "its queues (those of its steps' run.task_queue)",
             "-A": "the Celery app", "--app": "the Celery app"}  # fmt: skip
"""Celery options merlin-mdm sets itself, and what it sets them from."""


def split_worker_args(text: str) -> tuple[str, ...]:
    """``text`` split into words as a shell would (quotes kept together, no expansion).

    Raises:
        ValueError: text that cannot be split (an open quote), or an option of :data:`OWN_FLAGS`; the message
        says what to write instead.
    """
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:  # "No closing quotation"
        raise ValueError(f"{text!r} cannot be split into words: {str(exc).lower()}; close the quote") from None
    for word in words:
        flag = word.split("=", 1)[0] if word.startswith("--") else word  # a value may start with -n: -n.log
        if flag in OWN_FLAGS:
            raise ValueError(f"{flag} sets {OWN_FLAGS[flag]}, which merlin-mdm gives every worker itself "
                             "(stop-workers, status and run-workers find the worker by it): remove it")
    return words
