"""What `monitor` says while it waits, and that a broker it cannot reach never ends it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from merlin_mdm.cli.distributed import _MonitorNews, _serving
from merlin_mdm.config import load_config
from merlin_mdm.status.model import StepSummary, StudySnapshot, StudyState
from merlin_mdm.study.plan import StudyPlan


def _snap(finished: int) -> StudySnapshot:
    step = StepSummary("sim", 1, 4, {"finished": finished, "queued": 4 - finished})
    return StudySnapshot("s", "/ws", StudyState.RUNNING, "", (step,))


def test_counts_are_said_when_they_change_and_workers_only_after_quiet_checks(
        capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([False, None, True])
    news = _MonitorNews(lambda: next(answers))
    for finished in (0, 0, 1, *[1] * 18):
        news.look(_snap(finished))
    said = capsys.readouterr().err.splitlines()
    assert said == ["monitor: 0 of 4 task(s) finished, 0 running", "monitor: 1 of 4 task(s) finished, 0 running",
                    "monitor: no worker serves this study's queues, so nothing moves: start workers "
                    "(`merlin-mdm run-workers SPEC`, or `merlin-mdm launch SPEC` for batch jobs)",
                    "monitor: workers serve the study again"]  # the unknown answer (None) said nothing


def test_a_broker_that_does_not_answer_is_an_unknown_answer_not_an_error(tmp_path: Path) -> None:
    """A broker error in the serving check ended `monitor` (exit 1), the last line of a batch job (review)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    app = tmp_path / "app.yaml"
    app.write_text(f"broker: {{url: 'redis://127.0.0.1:{port}/0'}}\n", encoding="utf-8")
    plan = StudyPlan.from_json('{"name": "s", "workspace": "/ws", "instances": [], "batch_size": 1}')
    assert _serving(load_config(explicit=app), plan) is None
