"""`run --dry`: write every task's script where it would run, run nothing."""

from __future__ import annotations

from collections.abc import Callable

from merlin_mdm.backends.execution import task_dir, task_tokens, write_script
from merlin_mdm.spec.tokens import substitute_task
from merlin_mdm.study.plan import StudyPlan

__all__ = ["write_scripts"]


def write_scripts(plan: StudyPlan, on_written: Callable[[int], None] | None = None) -> int:
    """Write the script of every task; returns how many were written. ``on_written(count)`` after each unit."""
    count = 0
    for key in plan.units():
        inst = plan.instances[key.instance]
        for sample in plan.unit_samples(key):
            directory = task_dir(plan, inst, sample)
            directory.mkdir(parents=True, exist_ok=True)
            tokens = task_tokens(plan, sample, directory)
            write_script(directory / f"{inst.file_stem()}.sh", inst.shell, substitute_task(inst.cmd, tokens),
                         inst.sources)
            if inst.restart:  # as Merlin's dry run: the restart script too
                write_script(directory / f"{inst.file_stem(restart=True)}.sh", inst.shell,
                             substitute_task(inst.restart, tokens), inst.sources)
            count += 1
        if on_written is not None:
            on_written(count)
    return count
