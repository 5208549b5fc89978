"""The exit codes a step's command uses to talk to the framework (the values Merlin defines)."""

from __future__ import annotations

import enum

__all__ = ["EXIT_CODE_TOKENS", "ExitCode"]


class ExitCode(enum.IntEnum):
    """What a task's exit status means."""

    SUCCESS = 0  # done
    RESTART = 100  # run `restart` (else `cmd`) again, up to max_retries
    SOFT_FAIL = 101  # this task failed; the study carries on
    HARD_FAIL = 102  # this task failed; stop the whole study
    RETRY = 104  # run `cmd` again after retry_delay, up to max_retries
    STOP_WORKERS = 105  # this task is done; stop the workers (the local runner stops the study)
    RAISE_ERROR = 106  # this task failed; the tasks that depend on it do not run (a funnel over its step does)


EXIT_CODE_TOKENS: dict[str, str] = {
    "MERLIN_SUCCESS": str(int(ExitCode.SUCCESS)),
    "MERLIN_RESTART": str(int(ExitCode.RESTART)),
    "MERLIN_SOFT_FAIL": str(int(ExitCode.SOFT_FAIL)),
    "MERLIN_HARD_FAIL": str(int(ExitCode.HARD_FAIL)),
    "MERLIN_RETRY": str(int(ExitCode.RETRY)),
    "MERLIN_STOP_WORKERS": str(int(ExitCode.STOP_WORKERS)),
    "MERLIN_RAISE_ERROR": str(int(ExitCode.RAISE_ERROR)),
}
