"""Messages published without Celery are the messages Celery's own `send_task` writes (a real redis-server)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from merlin_mdm.backends.celery.publish import publish
from merlin_mdm.config import load_config
from tests.integration.conftest import RedisFixture

pytestmark = [pytest.mark.redis, pytest.mark.celery]

PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "origin", "reply_to"}  # ids, who sent it


def _strip(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope with its body decoded and its per-message ids left out."""
    out = {k: v for k, v in envelope.items() if k not in ("headers", "properties")}
    out["body"] = json.loads(base64.b64decode(envelope["body"]))
    for part in ("headers", "properties"):
        out[part] = {k: v for k, v in envelope[part].items() if k not in PER_MESSAGE}
    return out


def test_a_message_published_without_celery_is_the_one_celery_writes(redis_server: RedisFixture,
                                                                     tmp_path: Path) -> None:
    config = load_config(None, str(redis_server.app_yaml))
    from merlin_mdm.backends.celery.app import UNIT_TASK, make_app

    client = redis_server.client()
    queue = f"q_{tmp_path.name}"
    args = [str(tmp_path / "ws"), "0.3"]
    app = make_app(config)
    try:
        app.send_task(UNIT_TASK, args=args, queue=queue, ignore_result=True)
    finally:
        app.close()
    publish(client, [(queue, UNIT_TASK, args)])
    ours, celerys = (json.loads(m) for m in client.lrange(queue, 0, -1))  # the newest first
    client.delete(queue)
    assert _strip(ours) == _strip(celerys)
    assert set(ours["headers"]) == set(celerys["headers"]) and set(ours["properties"]) == set(celerys["properties"])
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]


def test_the_run_command_does_not_import_celery(redis_server: RedisFixture, tmp_path: Path) -> None:
    """`merlin-mdm run` publishes a study's first units without loading Celery or kombu (0.47 s of imports)."""
    import subprocess

    from tests.integration.conftest import REPO

    spec = tmp_path / "spec.yaml"
    spec.write_text("description: {name: q, description: x}\nenv: {variables: {OUTPUT_PATH: ./out}}\n"
                    "study:\n  - name: a\n    run: {cmd: echo, task_queue: " + f"q_{tmp_path.name}" + "}\n")
    probe = ("import sys, runpy; sys.argv = ['merlin-mdm', 'run', sys.argv[1]]\n"
             "try:\n    runpy.run_module('merlin_mdm.cli.main', run_name='__main__')\n"
             "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'celery', 'kombu', 'billiard'}))")
    out = subprocess.run([sys.executable, "-c", probe, str(spec)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                              "MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    client = redis_server.client()
    (message,) = client.lrange(f"q_{tmp_path.name}", 0, -1)
    client.delete(f"q_{tmp_path.name}")
    assert json.loads(message)["headers"]["task"] == "merlin_mdm.unit"
