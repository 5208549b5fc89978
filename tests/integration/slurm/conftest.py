"""A single-node Slurm for the whole session (skips with a reason when Slurm is not installed)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.slurm.cluster import SingleNodeSlurm, slurm_missing


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleNodeSlurm]:
    """A running slurmctld + slurmd; SLURM_CONF points the client commands at it."""
    why = slurm_missing()
    if why:
        pytest.skip(why)
    cluster = SingleNodeSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


@pytest.fixture(autouse=True)
def no_job_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every job a test submitted is cancelled when it ends, and every message it queued is deleted (the cluster
    and the Redis server live for the session: a unit the walltime test gave back stayed queued on `merlin` and
    a later Celery test's worker took it instead of its own)."""
    yield
    if "slurm" in request.fixturenames:
        request.getfixturevalue("slurm").cancel_all()
    if "redis_server" in request.fixturenames:
        request.getfixturevalue("redis_server").client().flushdb()
