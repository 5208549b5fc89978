"""Flux (flux-framework.org): `flux batch`, `flux jobs`, `flux cancel`.

PSI/J's Flux executor talks to a running Flux instance through the ``flux`` Python bindings and
writes no batch script, so it cannot produce a script to submit from a login node or to show with
``--dry``; this adapter writes ``#flux:`` directives itself. Untested on a real Flux (none can be
installed here: there is no Debian package and PyPI's flux-python lacks libflux).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from merlin_mdm.batch.base import (
    Allocation,
    AllocationRequest,
    BatchSystem,
    JobState,
    deadline_from_env,
    int_from_env,
    translate_state,
)

__all__ = ["FluxBatchSystem"]

FLUX_ACTIVE = {"DEPEND": JobState.PENDING, "PRIORITY": JobState.PENDING, "SCHED": JobState.PENDING,
               "RUN": JobState.RUNNING, "CLEANUP": JobState.RUNNING}
FLUX_RESULTS = {"COMPLETED": JobState.COMPLETED, "FAILED": JobState.FAILED, "CANCELED": JobState.CANCELLED,
                "TIMEOUT": JobState.TIMEOUT}


class FluxBatchSystem(BatchSystem):
    """Flux batch jobs."""

    name = "flux"
    title = "Flux"
    lacks = (("qos", ""), ("reservation", ""))  # `flux batch` has neither: they were dropped without a word
    job_id_var = "FLUX_JOB_ID"

    @classmethod
    def detect(cls, env: Mapping[str, str]) -> Allocation | None:
        if "FLUX_JOB_ID" not in env:
            return None
        return Allocation("flux", env["FLUX_JOB_ID"], int_from_env(env, "FLUX_JOB_NNODES") or 1, None,
                          deadline_from_env(env))

    def directives(self, req: AllocationRequest) -> list[str]:
        opts = [f"-N {req.nodes}", f"--job-name={req.name}", "--output=/dev/null"]
        opts += ["--exclusive"] * req.exclusive
        if req.walltime:
            opts.append(f"-t {req.walltime}s")
        opts += [f"--queue={req.queue}"] * bool(req.queue) + [f"--bank={req.bank}"] * bool(req.bank)
        opts += [(f"{k} {v}" if v else k) if k.startswith("-") else (f"--{k}={v}" if v else f"--{k}")
                 for k, v in req.options]
        return ["#!/bin/bash", *(f"#flux: {o}" for o in opts), f"cd {shlex.quote(str(req.workdir))}"]

    def submit_command(self, script: Path) -> list[str]:
        return ["flux", "batch", str(script.absolute())]

    def parse_job_id(self, out: str) -> str:
        return out.strip().split()[-1]

    def status_command(self, ids: Sequence[str]) -> list[str]:
        return ["flux", "jobs", "--no-header", "--format={id.f58} {state} {result}", *ids]

    def parse_status(self, out: str) -> dict[str, JobState]:
        states = {}
        for line in out.splitlines():
            cols = line.split()
            if len(cols) < 2:
                continue
            if cols[1] == "INACTIVE":
                states[cols[0]] = translate_state(FLUX_RESULTS, cols[2] if len(cols) > 2 else "")
            else:
                states[cols[0]] = translate_state(FLUX_ACTIVE, cols[1])
        return states

    def cancel_command(self, ids: Sequence[str]) -> list[str]:
        return ["flux", "cancel", *ids]
