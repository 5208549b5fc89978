"""A lost pool process is one line in the worker's log, not billiard's traceback."""

from __future__ import annotations

import logging

from billiard.exceptions import WorkerLostError

from merlin_mdm.backends.celery.worker_logging import REQUEST_LOGGER, OneLineWorkerLost, install


def _formatted(record: logging.LogRecord) -> str:
    assert OneLineWorkerLost().filter(record) is True  # never drops the record
    return logging.Formatter("%(levelname)s %(message)s").format(record)


def test_a_worker_lost_error_is_one_line_without_its_traceback() -> None:
    lost = WorkerLostError("Worker exited prematurely: signal 15 (SIGTERM) Job: 0.")
    try:
        raise lost
    except WorkerLostError:
        import sys

        info = sys.exc_info()
    record = logging.LogRecord(REQUEST_LOGGER, logging.ERROR, __file__, 1, "Task handler raised error: %r",
                               (lost,), info)
    text = _formatted(record)
    assert text == ("ERROR a pool process was lost (Worker exited prematurely: signal 15 (SIGTERM) Job: 0.); "
                    "its unit's message goes back to the broker"), text


def test_other_errors_keep_their_traceback() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        info = sys.exc_info()
    record = logging.LogRecord(REQUEST_LOGGER, logging.ERROR, __file__, 1, "Task handler raised error: %r",
                               (info[1],), info)
    text = _formatted(record)
    assert text.startswith("ERROR Task handler raised error: ValueError('bad')\nTraceback"), text


def test_install_adds_the_filter_once() -> None:
    install()
    install()
    assert sum(isinstance(f, OneLineWorkerLost) for f in logging.getLogger(REQUEST_LOGGER).filters) == 1


def test_a_unit_given_back_on_purpose_is_its_reason_in_one_line() -> None:
    from celery.exceptions import Reject

    from merlin_mdm.backends.celery.worker_logging import TRACE_LOGGER, OneLineReject

    try:
        raise Reject("unit 0:0 of long may need 300 s ...: given back for the next allocation", requeue=True)
    except Reject:
        import sys

        info = sys.exc_info()
    record = logging.LogRecord(TRACE_LOGGER, logging.WARNING, __file__, 1, "Task %(name)s[%(id)s] %(description)s: "
                               "%(exc)s", ({"name": "merlin_mdm.unit", "id": "x", "description": "reject",
                                            "exc": repr(info[1])},), info)
    assert OneLineReject().filter(record) is True
    text = logging.Formatter("%(message)s").format(record)
    assert "\n" not in text and "given back for the next allocation" in text, text
