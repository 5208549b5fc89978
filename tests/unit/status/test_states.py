"""The one decision of how a study ends, and the parsing of states a store wrote."""

from __future__ import annotations

import pytest

from merlin_mdm.status.states import StopKind, StudyState, final_state, stop_message


@pytest.mark.parametrize(("stop", "not_finished", "expected"), [
    (None, 0, (StudyState.FINISHED, "")),
    (None, 3, (StudyState.FAILED, "3 task(s) failed or did not run")),
    (StopKind.HARD_FAIL, 0, (StudyState.FAILED, "study stopped: a_x.1 exited with MERLIN_HARD_FAIL")),
    (StopKind.STOP_WORKERS, 5, (StudyState.STOPPED, "study stopped: a_x.1 exited with MERLIN_STOP_WORKERS")),
])
def test_final_state(stop: StopKind | None, not_finished: int, expected: tuple[StudyState, str]) -> None:
    reason = stop_message(stop, "a_x.1") if stop else ""
    assert final_state(stop, reason, not_finished) == expected


def test_a_state_written_by_a_store_parses_back() -> None:
    assert StudyState.parse("stopped") is StudyState.STOPPED
    assert StudyState.parse(None) is StudyState.UNKNOWN and StudyState.parse("bogus") is StudyState.UNKNOWN
    assert {s for s in StudyState if s.over} == {StudyState.FINISHED, StudyState.FAILED, StudyState.STOPPED,
                                                 StudyState.INTERRUPTED, StudyState.PURGED, StudyState.DRY_RUN}
