"""Synthetic tasks. Every module in this package is imported, so adding a file registers its tasks."""

from __future__ import annotations

import importlib
import pkgutil

from merlin_mdm.mdm.tasks.base import TASKS, Task, make_task, register_task

__all__ = ["TASKS", "Task", "make_task", "register_task"]

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
