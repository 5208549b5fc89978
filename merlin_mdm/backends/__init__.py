"""Task backends: how the units of a study are executed. `local` (embedded default) and `celery` (Redis).

Each backend's module is imported by :func:`get_backend` when first asked for (see ``BACKEND_MODULES``).
"""

from __future__ import annotations

from merlin_mdm.backends.base import BACKENDS, Backend, RunOptions, RunReport, get_backend, register_backend

__all__ = ["BACKENDS", "Backend", "RunOptions", "RunReport", "get_backend", "register_backend"]
