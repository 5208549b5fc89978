"""Merlin 1.13, installed once per session into its own virtual environment, as the oracle.

The environment lives in ``.cache/merlin-ref`` at the repository root (gitignored) so later sessions reuse it;
``MERLIN_MDM_MERLIN_REF`` names another one. Installing takes about 30-60 s (see docs/merlin-compat.md).
Without network access the install fails and the tests skip, unless MERLIN_MDM_REQUIRE_ALL=1 (CI).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .merlin_ref import ensure_merlin

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def merlin_ref() -> Path:
    """The virtual environment holding Merlin 1.13 (and the packages its examples import)."""
    venv = Path(os.environ.get("MERLIN_MDM_MERLIN_REF") or ROOT / ".cache" / "merlin-ref")
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        ensure_merlin(venv)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"could not install Merlin 1.13 as the oracle: {exc} {detail[-500:]!r}")
    return venv
