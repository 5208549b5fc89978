"""The `merlin-mdm` entry point's exit codes for errors it did not raise itself."""

from __future__ import annotations

import signal

import pytest

from merlin_mdm.cli import main as main_module
from merlin_mdm.errors import Interrupted


def _raise_wrapped_interruption(**_: object) -> None:
    try:
        raise Interrupted(signal.SIGTERM)
    except Interrupted as exc:  # what Python does to a signal raised inside a dataclass field's __set_name__
        raise RuntimeError("Error calling __set_name__ on 'Field' instance 'steps'") from exc


def test_a_signal_wrapped_by_the_code_it_interrupted_still_exits_128_plus_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(main_module.cli, "main", _raise_wrapped_interruption)
    with pytest.raises(SystemExit) as ended:
        main_module.main([])
    assert ended.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "Error: interrupted by SIGTERM" in err and "Traceback" not in err


def test_an_error_with_no_signal_behind_it_is_not_taken_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(main_module.cli, "main", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main_module.main([])
