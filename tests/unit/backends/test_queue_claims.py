"""How a refusal to share queues says when their holder started: it said "moments ago" of a group running for
minutes (an outside probe saw it 40 s on)."""

from __future__ import annotations

import time

from merlin_mdm.backends.celery.queue_claims import _started


def test_a_claim_says_its_age() -> None:
    assert _started({"t": time.time() - 2}) == "started moments ago"
    assert _started({"t": time.time() - 95}) == "started 95 s ago"
    assert _started({}) == _started({"t": "garbage"}) == "started before"
