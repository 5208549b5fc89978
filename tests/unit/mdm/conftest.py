"""Shared fixtures of the MDM pack's unit tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def tiny_random_blocks() -> tuple[Any, Any]:
    """(task, denoiser): random-layout blocks NB=2 BL=2 and an untrained one-layer denoiser (seed 0), in eval mode."""
    torch = pytest.importorskip("torch")
    from merlin_mdm.mdm.model import Denoiser, DenoiserConfig
    from merlin_mdm.mdm.tasks import make_task

    task = make_task("blocks", nb=2, bl=2, layout="random")
    torch.manual_seed(0)
    cfg = DenoiserConfig(task.vocab_size, task.seq_len, task.mask_id, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    return task, Denoiser(cfg).eval()
