"""What a Celery worker's log says when one of its pool processes dies.

A pool process that dies while it runs a unit (the cold stop at an allocation's end, SIGKILL, the OOM killer)
is logged by Celery as an error with billiard's traceback, 30-odd lines each, which fill the allocation's log
and say nothing more than the one line: the message goes back to the broker (``task_reject_on_worker_lost``),
and the status store counts the delivery.
"""

from __future__ import annotations

import logging

__all__ = ["OneLineWorkerLost", "install"]

REQUEST_LOGGER = "celery.worker.request"  # where Celery logs "Task handler raised error: WorkerLostError(...)"


class OneLineWorkerLost(logging.Filter):
    """Logs a lost pool process in one line, without its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        lost = next((a for a in record.args or () if type(a).__name__ == "WorkerLostError"), None) \
            if isinstance(record.args, tuple) else None
        if lost is not None:
            record.msg = "a pool process was lost (%s); its unit's message goes back to the broker"
            record.args = (lost,)
            record.exc_info = None
            record.exc_text = None
        return True


def install() -> None:
    """Filter the worker's request logger (idempotent)."""
    logger = logging.getLogger(REQUEST_LOGGER)
    if not any(isinstance(f, OneLineWorkerLost) for f in logger.filters):
        logger.addFilter(OneLineWorkerLost())
