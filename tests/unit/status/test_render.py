"""The status table: plain text that fits the width, names that wrap, counts never cut, colours on terminals."""

from __future__ import annotations

import io

import pytest

from merlin_mdm.status.model import StepSummary, StudySnapshot, StudyState, TaskFailure, TaskState
from merlin_mdm.status.render import render_table

LONG = "a_step_with_a_rather_long_name_indeed_and_even_longer_than_that"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _snapshot() -> StudySnapshot:
    failure = TaskFailure(7, TaskState.FAILED, 1, "exit code 1", "/w/long/long.err")
    steps = (
        StepSummary(LONG, 1, 123456, {"finished": 123000, "failed": 456}, restarts=3, started=0.0, ended=75.0,
                    failures=(("long_I.1", failure),), n_failures=456, run_tasks=123456, run_seconds=308640.0),
        StepSummary("gather", 1, 1, {"queued": 1}),
    )
    return StudySnapshot("habits", "/w", StudyState.FAILED, "456 task(s) failed or did not run", steps)


def _render(width: int, monkeypatch: pytest.MonkeyPatch, stream: io.StringIO | None = None) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    out = stream or io.StringIO()
    render_table(_snapshot(), out)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 100, 200])
def test_the_table_fits_the_width_and_a_long_name_wraps(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _render(width, monkeypatch)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(" step"))
    table = lines[header:next(i for i in range(header, len(lines)) if not lines[i].startswith(" "))]
    assert max(len(line) for line in table) <= width, text
    long_rows = table[2:-1]  # the long step's row and the lines its name wrapped onto
    assert len(long_rows) == (1 if width >= 200 else 3 if width == 100 else 6)
    assert "".join(line.split()[0] for line in long_rows) == LONG  # every character of the name, in order
    assert long_rows[0].split()[1:] == ["123456", "123000", "456", "3", "2.5s", "1m15s"]  # counts are never cut
    assert table[-1].split() == ["gather", "1", "1", "-", "-"]  # queued, never started
    assert table[0].split() == ["step", "tasks", "queued", "running", "done", "failed", "not", "run", "retries",
                                "avg", "run", "elapsed"]


def test_a_step_times_to_now_only_while_a_task_of_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setattr("merlin_mdm.status.render.time.time", lambda: 1000.0)
    steps = (StepSummary("half_done", 1, 2, {"finished": 1, "running": 1}, started=100.0, ended=250.0),
             StepSummary("waiting", 1, 2, {"finished": 1, "queued": 1}, started=100.0, ended=250.0),
             StepSummary("stopped", 1, 1, {"queued": 1}, started=100.0),
             StepSummary("live", 1, 1, {"running": 1}, started=940.0))
    out = io.StringIO()
    render_table(StudySnapshot("s", "/w", StudyState.RUNNING, "", steps), out)
    times = {line.split()[0]: line.split()[-1] for line in out.getvalue().splitlines()
             if line.split() and line.split()[0] in {s.step for s in steps}}
    # one task done, one running: the span grows with the running one, not frozen at the done one's end
    assert times == {"half_done": "15m00s", "waiting": "2m30s", "stopped": "-", "live": "1m00s"}


def test_failures_name_their_log_and_what_was_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _render(80, monkeypatch)
    assert text.splitlines()[:2] == ["habits  /w", "state: failed  (456 task(s) failed or did not run)"]
    assert f"{LONG}: 456 task(s) failed" in text
    assert "  long_I.1 sample 7: failed: exit code 1  log: /w/long/long.err" in text
    assert "  ... and more: `merlin-mdm detailed-status WORKSPACE --task-status FAILED --task-status NOT_RUN` " \
        "lists every task" in text


def test_batches_of_samples_not_run_are_counted_as_tasks_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure recorded for a whole batch of samples names no sample: its repeats are one line, and the count
    is the table's (10 tasks in 3 batches), not the records' (3)."""
    monkeypatch.setenv("COLUMNS", "100")
    batch = TaskFailure(-1, TaskState.NOT_RUN, None, "parent first did not finish every task", "")
    steps = (StepSummary("second", 1, 10, {"not_run": 10}, failures=(("second", batch),) * 3, n_failures=3),)
    out = io.StringIO()
    render_table(StudySnapshot("s", "/w", StudyState.FAILED, "", steps), out)
    assert out.getvalue().splitlines()[-2:] == [
        "second: 10 task(s) did not run",
        "  second: not_run: parent first did not finish every task (x3 batches of samples)"]


def test_colours_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert "\x1b[" not in _render(80, monkeypatch)
    coloured = _render(80, monkeypatch, _Terminal())
    assert "\x1b[32m123000\x1b[0m" in coloured.replace(" ", "") and "\x1b[1mfailed\x1b[0m" in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in _render(80, monkeypatch, _Terminal())


def test_an_empty_study_still_has_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    render_table(StudySnapshot("empty", "/w", StudyState.CREATED, ""), out)
    assert out.getvalue().splitlines()[3].split()[:2] == ["step", "tasks"]


def test_a_step_says_how_many_failed_and_how_many_did_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """`a: 3 task(s) failed or did not run` of a study stopped by MERLIN_STOP_WORKERS, where none failed (a probe)."""
    monkeypatch.setenv("COLUMNS", "100")
    stop = TaskFailure(-1, TaskState.NOT_RUN, None, "study stopped: a_I.1 exited with MERLIN_STOP_WORKERS", "")
    fail = TaskFailure(3, TaskState.FAILED, 1, "exit code 1", "")
    steps = (StepSummary("a", 1, 5, {"finished": 1, "not_run": 3, "failed": 1}, failures=(("a", fail), ("a", stop)),
                         n_failures=2),)
    out = io.StringIO()
    render_table(StudySnapshot("s", "/w", StudyState.STOPPED, "", steps), out)
    assert "a: 1 task(s) failed, 3 task(s) did not run" in out.getvalue().splitlines(), out.getvalue()
