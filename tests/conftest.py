"""Suite-wide settings: in CI (MERLIN_MDM_REQUIRE_ALL=1) a test that skips for a missing component fails."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

COMPONENT_MARKERS = ("redis", "celery", "slurm", "mpi", "torch", "merlin_ref")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("MERLIN_MDM_REQUIRE_ALL") or not report.skipped or hasattr(report, "wasxfail"):
        return
    needs = [m for m in COMPONENT_MARKERS if item.get_closest_marker(m)]
    if needs:
        report.outcome = "failed"
        report.longrepr = f"MERLIN_MDM_REQUIRE_ALL is set but this {'/'.join(needs)} test skipped: {report.longrepr}"
