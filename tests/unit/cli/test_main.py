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


def test_an_os_error_about_a_named_file_or_a_deleted_cwd_is_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    spec = tmp_path / "s.yaml"
    spec.write_text("description: {name: s, description: d}\nstudy:\n  - {name: a, run: {cmd: 'true'}}\n")
    for args in (["dag", str(spec), "-o", str(tmp_path / "absent" / "g.dot")],):
        with pytest.raises(SystemExit) as ended:
            main_module.main(args)
        assert ended.value.code == 1
        assert capsys.readouterr().err == f"Error: {tmp_path / 'absent' / 'g.dot'}: No such file or directory\n"
    gone = tmp_path / "gone"
    gone.mkdir()
    code = "import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); from merlin_mdm.cli.main import main; " \
           "main(['validate', '../s.yaml'])"
    result = subprocess.run([sys.executable, "-c", code, str(gone)], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 1 and result.stderr.startswith("Error: the current directory no longer exists"), \
        result.stderr


def test_an_os_error_with_no_file_behind_it_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(main_module.cli, "main", broken)
    with pytest.raises(OSError, match="Input/output"):
        main_module.main([])


def test_merlins_space_separated_lists_are_spread_into_repeated_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`merlin detailed-status WS --steps a b` (argparse nargs="+") failed here: b was an unexpected argument."""
    from merlin_mdm.cli.main import spread_vars

    ws = tmp_path / "ws"
    ws.mkdir()
    assert spread_vars(["detailed-status", str(ws), "--steps", "a", "b", "--task-status", "FAILED", "RUNNING"]) == [
        "detailed-status", str(ws), "--steps", "a", "--steps", "b", "--task-status", "FAILED", "--task-status",
        "RUNNING"]
    assert spread_vars(["-lvl", "DEBUG", "stop-workers", "--queues", "q1", "q2"]) == [
        "-lvl", "DEBUG", "stop-workers", "--queues", "q1", "--queues", "q2"]
    # the workspace written after a list is not one of its values; other commands' lists are left alone
    assert spread_vars(["detailed-status", "--steps", "a", str(ws)]) == ["detailed-status", "--steps", "a", str(ws)]
    assert spread_vars(["run", "s.yaml", "--workers", "2", "x"]) == ["run", "s.yaml", "--workers", "2", "x"]
    assert spread_vars(["run", "s.yaml", "--vars", "A=1", "B=2"]) == ["run", "s.yaml", "--vars", "A=1", "--vars",
                                                                      "B=2"]


def test_every_spread_list_is_a_repeatable_option_of_its_command() -> None:
    """The table named `queue-info --steps` and `query-workers --queues/--workers`, which those commands lack:
    `queue-info --queues a b` took b for the SPEC."""
    import click

    from merlin_mdm.cli.main import LISTS, cli

    ctx = click.Context(cli)
    for name, options in LISTS.items():
        command = cli.get_command(ctx, name)
        assert command is not None, name
        repeatable = {opt for p in command.params if isinstance(p, click.Option) and p.multiple for opt in p.opts}
        assert set(options) <= repeatable, (name, set(options) - repeatable)
