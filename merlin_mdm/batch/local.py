"""The `local` batch system: the allocation is this machine, the job a detached process group.

It lets `merlin-mdm launch` work on a laptop or inside an interactive allocation, with the same
script and bookkeeping as a scheduler. The job id is the process id of the script's shell.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from merlin_mdm.batch.base import Allocation, AllocationRequest, BatchSystem, JobState, deadline_from_env

__all__ = ["LocalBatchSystem"]


class LocalBatchSystem(BatchSystem):
    """Runs the batch script in the background, in its own session."""

    name = "local"
    job_id_var = "$"  # ${$}: the script's own process id
    status_ok_codes = (0, 1)  # ps exits 1 when none of the processes exists
    cancel_ok_codes = (0, 1)  # kill exits 1 for a process already gone

    @classmethod
    def detect(cls, env: Mapping[str, str]) -> Allocation | None:
        if env.get("MERLIN_MDM_BATCH") != "local" or "MERLIN_MDM_JOB_ID" not in env:
            return None
        return Allocation("local", env["MERLIN_MDM_JOB_ID"], 1, None, deadline_from_env(env))

    def directives(self, req: AllocationRequest) -> list[str]:
        return ["#!/bin/bash", f"cd {shlex.quote(str(req.workdir))}"]

    def submit_command(self, script: Path) -> list[str]:
        # setsid makes the shell a session (and process group) leader: cancel signals the whole group.
        return ["/bin/sh", "-c", f"setsid /bin/bash {shlex.quote(str(script.absolute()))} </dev/null "
                                 ">/dev/null 2>&1 & echo $!"]

    def parse_job_id(self, out: str) -> str:
        return str(int(out.strip().split()[-1]))

    def status_command(self, ids: Sequence[str]) -> list[str]:
        return ["ps", "-o", "pid=,stat=", "-p", ",".join(ids)]

    def parse_status(self, out: str) -> dict[str, JobState]:
        rows = [line.split() for line in out.splitlines() if line.strip()]
        return {row[0]: JobState.RUNNING for row in rows if len(row) == 2 and not row[1].startswith("Z")}

    def cancel_command(self, ids: Sequence[str]) -> list[str]:
        return ["kill", "-TERM", "--", *(f"-{i}" for i in ids)]
