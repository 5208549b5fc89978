"""Process checks the tests share."""

from __future__ import annotations

from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs: an unreaped zombie (or one being reaped) is dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
