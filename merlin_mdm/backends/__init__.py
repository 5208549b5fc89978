"""Task backends: how the units of a study are executed. `local` (embedded default) and `celery` (Redis)."""

from __future__ import annotations

import importlib
import pkgutil

from merlin_mdm.backends.base import BACKENDS, Backend, RunOptions, RunReport, get_backend, register_backend

__all__ = ["BACKENDS", "Backend", "RunOptions", "RunReport", "get_backend", "register_backend"]


def _discover() -> None:
    """Import every backend module so each registers itself (celery's modules import Celery lazily)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name.endswith("_backend") or info.name == "local":
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
