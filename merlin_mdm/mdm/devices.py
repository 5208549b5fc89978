"""Where the networks run: ``--device auto|cpu|cuda|cuda:N``.

Only the networks move: the denoiser and the order networks (policy, posterior). Data, masks, the samplers'
and rollouts' bookkeeping and every random generator stay on the CPU, so a run draws the same examples and the
same random numbers on any device, and differs between a CPU and a GPU only by the float kernels (the same
caveat as between two CPUs). A network takes CPU tensors and returns its outputs on the CPU
(:meth:`merlin_mdm.mdm.model.Denoiser.forward`, :meth:`merlin_mdm.mdm.order.networks.OrderNet.scores`), and
gradients flow back across the copy, so no caller changes. Weights are saved as CPU tensors
(:func:`cpu_state`), so a checkpoint written on a GPU loads on any machine. A study that runs several tasks on one
GPU node shares the GPU; pin tasks to GPUs with ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping

import torch

from merlin_mdm.errors import MdmError

__all__ = ["DEVICE_CHOICES", "cpu_state", "describe_device", "resolve_device"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(spec: str) -> torch.device:
    """The torch device for ``spec``.

    Args:
        spec: ``auto`` (the first GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. On a
            GPU, float32 matrix products use TF32.

    Returns:
        The device.

    Raises:
        MdmError: an unknown spec, or a GPU this torch cannot use (says what to pass instead).
    """
    text = spec.strip().lower()
    if text == "auto":
        return _gpu(0) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(text)
    if match is None:
        raise MdmError(f"--device {spec!r}: expected {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise MdmError(f"--device {spec!r}: this torch cannot use a GPU ({build}); pass --device cpu, or --device "
                       f"auto to take a GPU only where there is one")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise MdmError(f"--device {spec!r}: torch sees {count} GPU(s), numbered 0 to {count - 1}")
    return _gpu(index)


def _gpu(index: int) -> torch.device:
    """GPU ``index``, with float32 matrix products in TF32 (torch's "high" precision: about 10 bits of mantissa in
    the products, float32 accumulation; several times faster on Ampere and later)."""
    matmul = torch.backends.cuda.matmul
    with warnings.catch_warnings():  # torch 2.9+ warns when the older flag is set
        warnings.simplefilter("ignore")
        if hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = "tf32"
        else:
            matmul.allow_tf32 = True
    return torch.device("cuda", index)


def cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as CPU tensors, for saving: weights written on a GPU load on any machine."""
    return {name: tensor.detach().cpu() for name, tensor in state.items()}


def describe_device(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``: recorded with every run."""
    if device.type != "cuda":
        return device.type
    index = device.index or 0
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
