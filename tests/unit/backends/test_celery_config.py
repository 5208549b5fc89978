"""app.yaml values a user gets wrong, the Celery node names of worker groups, and redis.conf quoting."""

from __future__ import annotations

from pathlib import Path

import pytest

from merlin_mdm.backends.celery.in_allocation import allocation_commands
from merlin_mdm.backends.celery.workers import group_matches, worker_commands
from merlin_mdm.batch import Allocation
from merlin_mdm.config import ConfigError, load_config
from merlin_mdm.server import conf_quote
from merlin_mdm.spec import load_spec

SPEC = """
description: {name: names, description: worker names}
merlin:
  resources:
    workers:
      sim: {steps: [a]}
study:
  - name: a
    run: {cmd: "echo a", task_queue: sims}
  - name: b
    run: {cmd: "echo b", depends: [a], task_queue: post}
"""


@pytest.mark.parametrize(("yaml", "expected"), [
    ("broker: {url: 'unix:///tmp/redis.sock?db=3'}", "unix sockets are not supported"),
    ("broker: {url: 'redis+socket:///tmp/redis.sock'}", "unix sockets are not supported"),
    ("broker: {db: abc}", "broker.db: 'abc' is not a whole number (db: the Redis database number"),
    ("results: {port: 12x}", "results.port: '12x' is not a whole number (port: the server's TCP port"),
    ("broker: {url: 'redis://h:1/x'}", "broker.url redis://h:1/x: 'x' is not a whole number (db: "),
    ("broker: {url: 'redis://h:ab/1'}", "broker.url redis://h:ab/1: the port is not a whole number"),
    ("broker: {db: '--1'}", "broker.db: '--1' is not a whole number"),  # a ValueError traceback (review)
    ("broker: {db: '²'}", "broker.db: '²' is not a whole number"),
    ("broker: {url: 'redis://h:1/--2'}", "'--2' is not a whole number"),
])
def test_app_yaml_values_name_the_key_and_what_is_expected(tmp_path: Path, yaml: str, expected: str) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(yaml + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(explicit=app)
    assert expected in str(err.value) and "invalid literal" not in str(err.value), str(err.value)


def _spec(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return load_spec(path).spec


def test_each_run_workers_names_its_groups_uniquely_and_the_group_name_still_selects(tmp_path: Path) -> None:
    sim, default = worker_commands(_spec(tmp_path), suffix="4242")
    assert (sim.node, default.node) == ("sim.4242@%h", "default_worker.4242@%h")
    assert sim.argv[sim.argv.index("-n") + 1] == "sim.4242@%h"
    # Merlin's users select by the spec's name: `stop-workers --workers default_worker` still matches
    assert group_matches("default_worker", "default_worker.4242@node1")
    assert group_matches("default_*", "default_worker.4242@node1")
    assert group_matches("default_worker@node1", "default_worker@node1")
    assert not group_matches("default_worker", "default_workers.4242@node1")
    assert not group_matches("sim", "simple.4242@node1")


def test_in_an_allocation_the_job_id_makes_the_name_unique(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    sim, _ = allocation_commands(spec, worker_commands(spec, suffix="4242"), Allocation("slurm", "77", 2, 4, None))
    assert sim.node == "sim.77.4242@%h" and "sim.77.4242@%h" in sim.argv and "sim.4242@%h" not in sim.argv
    bare, _ = allocation_commands(spec, worker_commands(spec), Allocation("slurm", "77", 2, 4, None))
    assert bare.node == "sim.77@%h"  # `run-workers --echo`: no pid to add


@pytest.mark.parametrize(("value", "quoted"), [
    ("/home/a b", '"/home/a b"'),
    ('/home/we"ird', '"/home/we\\"ird"'),
    ("/home/back\\slash", '"/home/back\\\\slash"'),
    ("/home/new\nline", '"/home/new\\nline"'),
    ("/home/\udce9t\u00e9", '"/home/\\xe9t\u00e9"'),  # a byte that is not UTF-8 is that byte; é stays é (review)
])
def test_redis_conf_values_are_quoted_as_redis_reads_them(value: str, quoted: str) -> None:
    assert conf_quote(value) == quoted
