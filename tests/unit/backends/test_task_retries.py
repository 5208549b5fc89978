"""A status store that keeps failing is waited for: the unit's message is never acknowledged as lost."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from merlin_mdm.backends.celery.app import FAILING_SAID_EVERY, _said_when_failing, make_app
from merlin_mdm.backends.celery.scheduling import EXPAND_TASK, UNIT_TASK
from merlin_mdm.config import load_config
from merlin_mdm.errors import StatusError


@pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")  # another test's app, same names
def test_unit_and_expand_retry_for_as_long_as_it_takes() -> None:
    app = make_app(load_config(None))
    try:
        for name in (UNIT_TASK, EXPAND_TASK):
            task = app.tasks[name]
            # after max_retries Celery acknowledges the message: a unit lost without a word (a probe saw it)
            assert task.max_retries is None and StatusError in task.autoretry_for, name
            assert task.retry_backoff_max == 30 and task.acks_late and task.reject_on_worker_lost
    finally:
        app.close()


@pytest.mark.parametrize(("retries", "said"), [(0, False), (FAILING_SAID_EVERY - 2, False),
                                               (FAILING_SAID_EVERY - 1, True), (2 * FAILING_SAID_EVERY - 1, True)])
def test_a_failing_store_is_said_in_the_log_every_few_retries(retries: int, said: bool,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    task = SimpleNamespace(request=SimpleNamespace(retries=retries))
    with (caplog.at_level(logging.ERROR), pytest.raises(StatusError),
          _said_when_failing(task, "unit 0:0 of /ws", (StatusError,))):
        raise StatusError("status store at Redis: OOM")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert bool(errors) is said, errors
    if said:
        assert f"failed {retries + 1} times in a row (StatusError: status store at Redis: OOM)" in errors[0]
