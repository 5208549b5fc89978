"""What a Celery worker's log says when one of its pool processes dies.

A pool process that dies while it runs a unit (the cold stop at an allocation's end, SIGKILL, the OOM killer)
is logged by Celery as an error with billiard's traceback, 30-odd lines each, which fill the allocation's log
and say nothing more than the one line: the message goes back to the broker (``task_reject_on_worker_lost``),
and the status store counts the delivery.
"""

from __future__ import annotations

import logging

__all__ = ["OneLineReject", "OneLineWorkerLost", "install"]

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


class OneLineReject(logging.Filter):
    """A unit given back on purpose (``Reject``: it does not fit before the allocation's walltime) is one line with
    its reason; Celery logged it with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and type(record.exc_info[1]).__name__ == "Reject":
            record.exc_info = None
            record.exc_text = None
        return True


TRACE_LOGGER = "celery.app.trace"  # where Celery logs "Task ...[id] reject requeue=True: <reason>"


def install() -> None:
    """Filter the worker's request and trace loggers (idempotent)."""
    for name, kind in ((REQUEST_LOGGER, OneLineWorkerLost), (TRACE_LOGGER, OneLineReject)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
