"""Task backends: how the units of a study are executed. `local` (embedded default) and `celery` (Redis)."""

from __future__ import annotations

import importlib
import pkgutil

from merlin_mdm.backends.base import BACKENDS, Backend, RunOptions, RunReport, get_backend, register_backend

__all__ = ["BACKENDS", "Backend", "RunOptions", "RunReport", "get_backend", "register_backend"]


def _discover() -> None:
    """Import every backend module so each registers itself: ``local`` and each package's ``backend`` module.

    A package's ``backend`` module imports no third-party client (Celery, Redis) at import time.
    """
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}.backend")
        elif info.name == "local":
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
