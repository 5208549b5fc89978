"""The shell's variables and a leading ~ are filled into the spec when it loads, but not into its commands.

Merlin 1.13 (``expand_env_vars``, ``determine_user_variables``) runs ``expandvars(expanduser(...))`` over every
text of the spec but `cmd` and `restart`, and over each variable's value: `OUTPUT_PATH: ~/optimization_runs`
(its optimization_basic example) and `OUTPUT_PATH: $SCRATCH/studies` name folders there, and its
`run-workers --echo` writes `--logfile /home/.../w.log` for `args: --logfile $ROOT/w.log`.
"""

from __future__ import annotations

import os

import pytest

from merlin_mdm.spec import load_spec_text
from merlin_mdm.spec.variables import shell_expanded

SPEC = """
description: {name: homes, description: shell variables in the spec}
env:
  variables:
    OUTPUT_PATH: $STUDY_ROOT/out
    DATA: ~/data
    BRACED: ${STUDY_ROOT}/braced
    UNSET: $NO_SUCH_VARIABLE_HERE/x
study:
  - name: a
    run:
      cmd: echo $(DATA) $HOME > d.txt
      restart: echo $HOME
      task_queue: q_$QUEUE_OWNER
      procs: $NPROCS
merlin:
  resources:
    workers:
      w: {args: -l INFO --logfile $STUDY_ROOT/w.log, steps: [all]}
  samples: {generate: {cmd: echo $HOME > s.csv}, file: $STUDY_ROOT/s.csv, column_labels: [X]}
"""


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDY_ROOT", "/scratch/me")
    monkeypatch.setenv("HOME", "/home/me")
    monkeypatch.setenv("QUEUE_OWNER", "me")
    monkeypatch.setenv("NPROCS", "4")
    monkeypatch.delenv("NO_SUCH_VARIABLE_HERE", raising=False)


@pytest.mark.usefixtures("environment")
def test_texts_but_commands_take_the_shells_variables_as_merlin() -> None:
    spec = load_spec_text(SPEC, "/s/homes.yaml").spec
    variables = dict(spec.env.variables)
    assert variables["OUTPUT_PATH"] == "/scratch/me/out"
    assert variables["DATA"] == "/home/me/data"
    assert variables["BRACED"] == "/scratch/me/braced"
    assert variables["UNSET"] == "$NO_SUCH_VARIABLE_HERE/x"  # as os.path.expandvars: left as written
    run = spec.steps[0].run
    assert run.cmd == "echo $(DATA) $HOME > d.txt" and run.restart == "echo $HOME"  # the shell's, when it runs
    assert run.task_queue == "q_me" and run.procs == 4
    (worker,) = spec.resources.workers
    assert worker.args == "-l INFO --logfile /scratch/me/w.log"
    assert spec.samples is not None and spec.samples.generate_cmd == "echo $HOME > s.csv"
    assert spec.samples.file == "/scratch/me/s.csv"


@pytest.mark.usefixtures("environment")
def test_vars_given_on_the_command_line_take_them_too() -> None:
    spec = load_spec_text(SPEC, "/s/homes.yaml", {"OUTPUT_PATH": "$STUDY_ROOT/other"}).spec
    assert dict(spec.env.variables)["OUTPUT_PATH"] == "/scratch/me/other"


@pytest.mark.parametrize(("text", "expected"), [
    ("~", "/home/me"), ("~/", "/home/me/"), ("~/a/b", "/home/me/a/b"), ("a/~/b", "a/~/b"),
    ("$HOME$HOME", "/home/me/home/me"), ("${HOME}x", "/home/mex"), ("$HOMEx", "$HOMEx"), ("$$", "$$"),
    ("$(HOME)", "$(HOME)"), ("cost $5", "cost $5"), ("${}", "${}"),
])  # fmt: skip
def test_the_expansion_is_os_path_expandvars_of_expanduser(text: str, expected: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert shell_expanded(text, {"HOME": "/home/me"}) == expected
    monkeypatch.setenv("HOME", "/home/me")
    assert os.path.expandvars(os.path.expanduser(text)) == expected
    monkeypatch.setenv("HOME", "/")
    assert shell_expanded(text, {"HOME": "/"}) == os.path.expandvars(os.path.expanduser(text))


def _bomb(levels: int, where: str) -> str:
    """A billion-laughs spec: ``levels`` lists of nine aliases of the one below (9**levels leaves in all)."""
    lines = ["description: {name: bomb, description: x}", "env: {variables: {OUTPUT_PATH: ./out}}", "user:",
             "  a0: &a0 [\"$HOME\", \"$(OUTPUT_PATH)\"]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    lines += ["study:", f"  - {{name: s, run: {{cmd: echo 1, {where}: *a{levels}}}}}"]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(120)  # walked alias by alias it never ends: fail instead of holding CI for 10 minutes
@pytest.mark.usefixtures("environment")
def test_an_aliased_structure_is_filled_once_not_once_per_alias() -> None:
    """9**24 leaves: walked leaf by leaf, the load would never end; each aliased list is visited once."""
    from merlin_mdm.errors import SpecError

    with pytest.raises(SpecError, match="procs: must be a whole number, not a list"):  # refused, promptly
        load_spec_text(_bomb(24, "procs"), "/s/bomb.yaml")
    spec = load_spec_text(_bomb(24, "exclusive").replace(", exclusive: *a24", ""), "/s/bomb.yaml").spec
    leaf, node = spec.raw["user"]["a0"], spec.raw["user"]["a24"]
    for _ in range(24):
        node = node[8]
    found_the_leaf = node is leaf  # (a failing `assert node is leaf` would have pytest print 9**24 items)
    assert leaf == ["/home/me", "$(OUTPUT_PATH)"] and found_the_leaf
