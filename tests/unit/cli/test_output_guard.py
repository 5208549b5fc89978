"""The stdout guard gives back the stream it wrapped: a caller's own (pytest's capture) stays theirs."""

from __future__ import annotations

import sys

import pytest

from merlin_mdm.cli.main import main


def test_main_gives_back_the_stream_it_was_given(capsys: pytest.CaptureFixture[str]) -> None:
    """The guard put Python's own stdout back after a command: a second call's output escaped the capture."""
    before = sys.stdout
    for _ in range(2):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert sys.stdout is before
    assert capsys.readouterr().out.count("Usage:") == 2
