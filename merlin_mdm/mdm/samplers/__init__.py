"""Samplers (unmasking strategies). Every module here is imported, so adding a file registers its samplers."""

from __future__ import annotations

import importlib
import pkgutil

from merlin_mdm.mdm.samplers.base import (
    SAMPLERS,
    FixedBudgetSampler,
    GenerationResult,
    Sampler,
    StepState,
    generate,
    make_sampler,
    register_sampler,
    reveal_counts,
    select_top_k,
)

__all__ = [
    "SAMPLERS",
    "FixedBudgetSampler",
    "GenerationResult",
    "Sampler",
    "StepState",
    "generate",
    "make_sampler",
    "register_sampler",
    "reveal_counts",
    "select_top_k",
]

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
