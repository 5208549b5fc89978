"""The ``--device`` option shared by every `merlin-mdm mdm` command that runs a network (denoiser, order policy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["device_option"]

F = TypeVar("F", bound=Callable[..., Any])

_HELP = ("Where the networks (denoiser, order policy) run: auto (a GPU when torch sees one, else the CPU), cpu, "
         "cuda or cuda:N. Data, the samplers' bookkeeping and random draws stay on the CPU, so a GPU changes float "
         "kernels only. Pin study tasks to GPUs with CUDA_VISIBLE_DEVICES.")


def _checked(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse an unknown device or a GPU this torch cannot use before any work starts."""
    from merlin_mdm.errors import MdmError
    from merlin_mdm.mdm.devices import resolve_device

    try:
        resolve_device(value)
    except MdmError as err:
        raise click.BadParameter(str(err).removeprefix("--device "), ctx=ctx, param=param) from None
    return value


def device_option(command: F) -> F:
    """Add ``--device`` (default ``auto``) to a click command; the checked text reaches it as ``device``."""
    return click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
                        callback=_checked, help=_HELP)(command)
