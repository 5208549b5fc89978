"""Process-level torch settings shared by training, evaluation and benchmarks."""

from __future__ import annotations

import os

import torch

__all__ = ["configure_threads"]


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    Args:
        threads: the count; ``None`` or 0 uses ``OMP_NUM_THREADS`` when set (a study running several tasks per
            node sets it to share cores), else every core of the machine.

    Returns:
        The thread count now in effect.
    """
    if not threads:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads
