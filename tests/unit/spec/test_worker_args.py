"""A worker's Celery arguments: split as a shell would, without the name and queues merlin-mdm sets itself."""

from __future__ import annotations

import pytest

from merlin_mdm.backends.celery.workers import worker_commands
from merlin_mdm.errors import SpecError, UsageError
from merlin_mdm.spec import load_spec_text
from merlin_mdm.spec.worker_args import split_worker_args

SPEC = """
description: {{name: args, description: x}}
env: {{variables: {{OUTPUT_PATH: ./out}}}}
study:
  - {{name: s, run: {{cmd: echo 1}}}}
merlin:
  resources:
    workers:
      w: {{args: {args}, steps: [all]}}
"""


@pytest.mark.parametrize(("args", "message"), [
    ("'--concurrency 1 --logfile \"x.log'", "cannot be split into words: no closing quotation; close the quote"),
    ("'-n me.%%h'", "-n sets the worker's name"),
    ("'--hostname=me@%h'", "--hostname sets the worker's name"),
    ("'--concurrency 1 -Q other'", "-Q sets its queues"),
    ("'--queues other'", "--queues sets its queues"),
    ("'-A elsewhere'", "-A sets the Celery app"),
])  # fmt: skip
def test_args_that_celery_would_get_wrong_are_refused_at_their_line(args: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        load_spec_text(SPEC.format(args=args), "/s/args.yaml")
    assert "/s/args.yaml:9:17: merlin.resources.workers.w.args: " in str(error.value)
    assert message in str(error.value)


def test_plain_args_reach_celery_as_words_once() -> None:
    spec = load_spec_text(SPEC.format(args="'--concurrency 2 --logfile \"a b.log\" -l INFO'"), "/s/a.yaml").spec
    (command,) = worker_commands(spec, extra_args="--prefetch-multiplier 1")
    assert command.argv.count("-n") == 1 and command.argv.count("-Q") == 1
    assert command.argv[-8:] == ("--concurrency", "2", "--logfile", "a b.log", "-l", "INFO",
                                 "--prefetch-multiplier", "1")
    assert split_worker_args("--logfile '-n.log' --pidfile=-Q.pid") == ("--logfile", "-n.log", "--pidfile=-Q.pid")


@pytest.mark.parametrize("extra", ["'x", "-n other", "--queues=x"])
def test_worker_args_from_the_command_line_are_checked_alike(extra: str) -> None:
    spec = load_spec_text(SPEC.format(args="''"), "/s/a.yaml").spec
    with pytest.raises(UsageError, match=r"^--worker-args: "):
        worker_commands(spec, extra_args=extra)


def test_a_word_starting_with_a_tilde_names_a_home_folder_as_merlin_s_shell_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    spec = load_spec_text(SPEC.format(args="'--logfile ~/w.log --pidfile a~b'"), "/s/a.yaml").spec
    (command,) = worker_commands(spec, extra_args="--statedb ~/db")
    assert command.argv[-6:] == ("--logfile", "/home/me/w.log", "--pidfile", "a~b", "--statedb", "/home/me/db")
