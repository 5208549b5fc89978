"""What the command line adds to a spec (--vars, --samplesfile) is blamed on the command line when it is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from .conftest import CLI, merlin, workspace_of

SPEC = """
    description: {name: cli, description: x}
    env:
      variables:
        OUTPUT_PATH: ./out
        C: $(A)
    merlin: {samples: {file: samples.csv, column_labels: [P, Q]}}
    study:
      - name: s
        description: s
        run: {cmd: "echo '$(C) $(P) $(Q)' > v.txt"}
"""


@pytest.fixture
def spec(write_spec: Callable[[str], Path], tmp_path: Path) -> Path:
    (tmp_path / "samples.csv").write_text("1,2\n", encoding="utf-8")
    return write_spec(SPEC)


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_cycle_made_by_vars_names_them_and_no_line(spec: Path, tmp_path: Path, command: str) -> None:
    extra = ["--local", "--dry"] if command == "run" else []
    result = merlin(command, str(spec), *extra, "--vars", "A=$(B)", "B=$(A)", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{spec}: env.variables: --vars A='$(B)' B='$(A)' refer to each other in a circle" in result.stderr


def test_a_cycle_through_a_spec_variable_names_its_line_and_the_vars(spec: Path, tmp_path: Path) -> None:
    result = merlin("validate", str(spec), "--vars", "A=$(C)", cwd=tmp_path)
    assert result.returncode == 2
    assert (f"{spec}:6:5: env.variables.C: variables refer to each other in a circle ($(C) -> $(A) -> $(C)) "
            "through --vars A='$(C)'") in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    ("1,2\n3,4,5\n", "--samplesfile mine.csv: cannot read samples: line 2 has 3 value(s) where most lines have"),
    ("1\n", "--samplesfile mine.csv: 1 column(s), but merlin.samples.column_labels"),  # more columns: used
])  # fmt: skip
def test_a_bad_samplesfile_is_named_with_exit_code_2(spec: Path, tmp_path: Path, content: str,
                                                     message: str) -> None:
    (tmp_path / "mine.csv").write_text(content, encoding="utf-8")
    result = merlin("run", str(spec), "--local", "--dry", "--vars", "A=1", "--samplesfile", "mine.csv",
                    cwd=tmp_path)
    assert result.returncode == 2
    assert f"Error: {message}" in result.stderr and "problem in the spec" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("kind", ["pipe", "endless device"])
def test_a_samples_file_that_is_no_regular_file_is_refused_at_once(spec: Path, tmp_path: Path, kind: str) -> None:
    """A pipe hung `run` silently (nobody writes it); /dev/zero grew memory until a MemoryError traceback."""
    given = tmp_path / "odd.csv"
    if kind == "pipe":
        os.mkfifo(given)
    else:
        given.symlink_to("/dev/zero")
    result = merlin("run", str(spec), "--local", "--dry", "--vars", "A=1", "--samplesfile", "odd.csv", cwd=tmp_path,
                    timeout=60)
    assert result.returncode == 2, result.stderr
    assert "--samplesfile odd.csv: the samples file is not a regular file (a pipe or a device" in result.stderr
    (tmp_path / "samples.csv").unlink()
    (tmp_path / "samples.csv").symlink_to(given)  # the spec's own samples file
    checked = merlin("validate", str(spec), cwd=tmp_path, timeout=60)
    assert checked.returncode == 2, checked.stderr
    assert f"merlin.samples.file: {tmp_path}/samples.csv: the samples file is not a regular file" in checked.stderr


def test_a_relative_samplesfile_is_found_from_where_the_command_runs(spec: Path, tmp_path: Path) -> None:
    """It was looked for beside the spec: not found, or worse, another file of the same name."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "samples.csv").write_text("5,6\n", encoding="utf-8")
    result = merlin("run", str(spec), "--local", "--vars", "A=1", "--samplesfile", "samples.csv",
                    cwd=tmp_path / "elsewhere")
    assert result.returncode == 0, result.stderr
    assert (workspace_of(result) / "s" / "v.txt").read_text() == "1 5 6\n"


def test_complex_samples_run_as_in_merlin_without_a_warning(spec: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.array([[1 + 2j, 3]]))
    result = merlin("run", str(spec), "--local", "--vars", "A=1", "--samplesfile", "c.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert (workspace_of(result) / "s" / "v.txt").read_text() == "1 (1+2j) (3+0j)\n"  # Merlin 1.13's output


def test_a_one_megabyte_value_does_not_take_half_a_gigabyte(tmp_path: Path) -> None:
    """numpy's cast of text to float buffers 128 values of the widest width: 4 MB x 128 for one 1 MB value."""
    (tmp_path / "big.csv").write_text("x" * 1_000_000 + ",1\n", encoding="utf-8")
    # VmHWM, not getrusage's ru_maxrss: Linux carries the exec'ing parent's peak into ru_maxrss, and a pytest
    # process deep into the whole suite was 352 MB (the CI saw that figure here)
    code = ("from pathlib import Path; from merlin_mdm.study.samples import read_samples; "
            "read_samples(Path('big.csv')); "
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert int(out.stdout) < 200_000, f"peak {int(out.stdout) // 1024} MB"  # kB; about 45 MB now, 550 MB before


def test_a_shell_variable_in_output_path_names_a_folder_there(write_spec: Callable[[str], Path],
                                                              tmp_path: Path) -> None:
    """Merlin fills `$VAR` and `~` of the environment into the spec's texts (not into commands): a study under
    `OUTPUT_PATH: $STUDY_ROOT/out` lands in that folder, not in a folder named `$STUDY_ROOT`."""
    spec = write_spec("""
        description: {name: shellvars, description: x}
        env: {variables: {OUTPUT_PATH: $STUDY_ROOT/out, WHERE: "${STUDY_ROOT}"}}
        study:
          - name: s
            run: {cmd: "echo $(WHERE) $STUDY_ROOT > v.txt"}
    """)
    root = tmp_path / "elsewhere"
    env = {**os.environ, "STUDY_ROOT": str(root)}
    result = merlin("run", str(spec), "--local", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    workspace = workspace_of(result)
    assert workspace.parent == root / "out"
    assert not any(tmp_path.glob("$*"))
    assert (workspace / "s" / "v.txt").read_text(encoding="utf-8") == f"{root} {root}\n"


def test_a_long_dry_run_shows_its_progress_on_a_terminal(write_spec: Callable[[str], Path], tmp_path: Path) -> None:
    """125,000 scripts took 48 s with no output at all (an outside probe): on a terminal a bar shows them."""
    import pty

    spec = write_spec("""
        description: {name: many, description: x}
        env: {variables: {OUTPUT_PATH: ./out}}
        global.parameters: {X: {values: [VALUES], label: X.%%}}
        study:
          - name: s
            run: {cmd: echo $(X)}
    """.replace("VALUES", ", ".join(map(str, range(3000)))))
    main, follower = pty.openpty()
    try:
        proc = subprocess.Popen([*CLI, "run", str(spec), "--local", "--dry"], cwd=tmp_path, stdin=follower,
                                stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=300) == 0, seen[-2000:]
    finally:
        os.close(main)
    assert b"writing scripts" in seen and b"3000" in seen, seen[-2000:]
    assert len(list((tmp_path / "out").glob("many_*/s/X.*/s_X.*.sh"))) == 3000


def test_the_workspace_s_spec_copy_names_the_vars_it_ran_with(spec: Path, tmp_path: Path) -> None:
    """`launch` and `run-workers` need the same --vars as `run`; the copy's env.variables lines show the file's
    values (an outside probe could not tell which --vars to give back)."""
    result = merlin("run", str(spec), "--local", "--dry", "--vars", "A=it is", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    copy = next(workspace_of(result).glob("merlin_info/*.partial.yaml")).read_text(encoding="utf-8")
    assert copy.splitlines()[0] == ("# run with --vars 'A=it is' (filled in below; the env.variables lines show "
                                    "the file's values)")
    plain = merlin("run", str(spec), "--local", "--dry", "--vars", "A=1", cwd=tmp_path)
    assert next(workspace_of(plain).glob("merlin_info/*.partial.yaml")).read_text().startswith("# run with --vars A=1")


def test_run_workers_until_done_refuses_a_study_of_the_local_runner(write_spec, tmp_path: Path) -> None:
    """No worker serves a `run --local` study, so `run-workers --until-done` never saw it end (it waited for ever,
    then said both that the workers ended early and that the study had finished)."""
    spec = write_spec("""
        description: {name: loc, description: local}
        env: {variables: {OUTPUT_PATH: ./out}}
        study:
          - name: a
            run: {cmd: "true"}
    """)
    ws = workspace_of(merlin("run", str(spec), "--local", cwd=tmp_path))
    result = merlin("run-workers", str(spec), "--until-done", str(ws), cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "ran on the local runner" in result.stderr, result.stderr


@pytest.mark.parametrize("stdout", ["/dev/full", "closed"])
@pytest.mark.parametrize("args", [["validate", "SPEC"], ["status", "SPEC"], ["status", "SPEC", "--json"],
                                  ["dag", "SPEC"]])
def test_output_that_cannot_be_written_fails_the_command_in_one_line(spec: Path, tmp_path: Path, stdout: str,
                                                                     args: list[str]) -> None:
    """`status WS >/dev/full` ended in an OSError traceback, `status WS >&-` in an AttributeError, and
    `status WS --json >&-` exited 0 with nothing written."""
    assert merlin("run", str(spec), "--local", cwd=tmp_path).returncode == 0
    command = [*CLI, *(str(spec) if a == "SPEC" else a for a in args)]
    if stdout == "closed":
        result = subprocess.run(command, cwd=tmp_path, stdout=None, stderr=subprocess.PIPE, text=True,
                                timeout=120, check=False, close_fds=True, preexec_fn=lambda: os.close(1))
        why = "it is closed"
    else:
        with open(stdout, "w", encoding="utf-8") as full:
            result = subprocess.run(command, cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True,
                                    timeout=120, check=False)
        why = "No space left on device"
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == f"Error: cannot write to standard output: {why}"  # after any warning
    assert "Traceback" not in result.stderr and result.stderr.count("Error:") == 1


def test_commands_that_only_read_a_study_take_a_spec_in_a_folder_they_may_not_write(spec: Path,
                                                                                   tmp_path: Path) -> None:
    """`status SPEC -o OUT`, `dag SPEC` refused a spec in a read-only folder: "OUTPUT_PATH: no permission to
    create folders", which only `run` needs; `run` still says so."""
    out = tmp_path / "elsewhere"
    assert merlin("run", str(spec), "--local", "--vars", f"OUTPUT_PATH={out}", cwd=tmp_path).returncode == 0
    drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []  # root writes all
    spec.parent.chmod(0o555)
    try:
        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*drop, *CLI, *args], cwd=out, capture_output=True, text=True, timeout=120,
                                  check=False)

        shown = cli("status", str(spec), "-o", str(out))
        assert shown.returncode == 0 and "state: finished" in shown.stdout, shown.stderr
        assert cli("dag", str(spec)).returncode == 0
        refused = cli("run", str(spec), "--local")
        assert refused.returncode == 2 and "OUTPUT_PATH" in refused.stderr and "no permission" in refused.stderr
    finally:
        spec.parent.chmod(0o755)


def test_validate_names_what_merlin_refuses_and_run_does_not(tmp_path: Path) -> None:
    spec = tmp_path / "n.yaml"
    spec.write_text("description: {name: n, description: d}\nstudy:\n  - {name: a, run: {cmd: 'echo hi > o.txt'}}\n")
    checked = merlin("validate", str(spec), "--strict", cwd=tmp_path, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.startswith(f"{spec}:3:5: study[0].description: note: step 'a' has no description: it runs "
                                     "here, but Merlin 1.13 and Maestro refuse the whole spec"), checked.stderr
    ran = merlin("run", str(spec), "--local", cwd=tmp_path, timeout=60)
    assert ran.returncode == 0 and "description" not in ran.stderr, ran.stderr
    assert (workspace_of(ran) / "a" / "o.txt").read_text() == "hi\n"


def test_log_level_info_shows_each_unit_start_and_end(write_spec: Callable[[str], Path], tmp_path: Path) -> None:
    """`-l debug`/`-l info` before the subcommand added nothing a user could see (an outside probe)."""
    spec = write_spec("""
        description: {name: levels, description: x}
        study:
          - {name: a, description: a, run: {cmd: "echo a"}}
          - {name: b, description: b, run: {cmd: "exit 1", depends: [a]}}
    """)
    quiet = merlin("run", str(spec), "--local", cwd=tmp_path)
    told = merlin("-l", "info", "run", str(spec), "--local", cwd=tmp_path)
    assert quiet.returncode == told.returncode == 1, (quiet.stderr, told.stderr)
    assert "INFO" not in quiet.stderr
    lines = [line.split("] ", 1)[1] for line in told.stderr.splitlines() if ": INFO] " in line]
    assert lines == ["a (unit 0:0) started: 1 task(s) in slot(s) 0",
                     "a (unit 0:0) ended: 1 finished, 0 failed, 0 not run",
                     "b (unit 1:0) started: 1 task(s) in slot(s) 0",
                     "b (unit 1:0) ended: 0 finished, 1 failed, 0 not run"]


def test_restart_says_when_the_spec_was_edited_and_names_the_workspace_of_a_spec(
        write_spec: Callable[[str], Path], tmp_path: Path) -> None:
    """Editing the spec after a failure, then `restart`, reran the workspace's scripts without a word (as Merlin
    does, but the fix seemed applied); `restart SPEC` said "Directory 'spec.yaml' is a file" (outside probes)."""
    spec = write_spec("""
        description: {name: edited, description: x}
        study:
          - {name: a, description: a, run: {cmd: "exit 1"}}
    """)
    first = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    ws = workspace_of(first)
    same = merlin("restart", str(ws), "--local", cwd=tmp_path)
    assert same.returncode == 1 and "note:" not in same.stderr, same.stderr
    spec.write_text(spec.read_text(encoding="utf-8").replace("exit 1", "exit 0"), encoding="utf-8")
    edited = merlin("restart", str(ws), "--local", cwd=tmp_path)
    assert edited.returncode == 1, edited.stderr  # the study as it was made: the edit applies to a new study
    assert f"note: {spec} changed since this study was made from it; restart runs the study as it was made" \
        in edited.stderr and f"`merlin-mdm run {spec}` (a new workspace)" in edited.stderr, edited.stderr
    named = merlin("restart", str(spec), cwd=tmp_path)
    assert named.returncode == 2, named.stderr
    assert named.stderr.strip() == f"Error: restart takes a study's workspace, not a file ({spec}): its spec's " \
        f"newest study is {ws}"
