"""Denoiser checkpoints: ``DIR/denoiser.pt`` (everything needed to resume) and ``DIR/meta.json`` (for humans/tools).

``denoiser.pt`` holds ``config`` (the :class:`DenoiserConfig` as a dict), ``task`` (``{"name", "knobs"}``),
``state_dict`` and every entry of ``extra`` (training writes ``optimizer``, ``step``, ``rng``, ``train_config``).
``meta.json`` holds ``checkpoint_id`` (a hash of the weights), the task, the config, the parameter count and the
JSON-able entries of ``extra``. Both files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.devices import cpu_state
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig
from merlin_mdm.mdm.tasks import Task, make_task

__all__ = ["CHECKPOINT_FILE", "META_FILE", "LoadedDenoiser", "load_denoiser", "save_denoiser", "weights_id"]

CHECKPOINT_FILE = "denoiser.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class LoadedDenoiser:
    """A denoiser read back from disk.

    Attributes:
        model: the denoiser in eval mode.
        task: the task it was trained on, rebuilt from its knobs.
        config: the model's config.
        meta: the contents of ``meta.json`` (includes ``checkpoint_id``).
        extra: the remaining entries of ``denoiser.pt`` (``optimizer``, ``step``, ``rng``, ...), for resuming.
    """

    model: Denoiser
    task: Task
    config: DenoiserConfig
    meta: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def weights_id(model: torch.nn.Module) -> str:
    """Return a short, stable hash of a model's weights (names, shapes and bytes), 12 hex characters."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def save_denoiser(directory: str | os.PathLike[str], model: Denoiser, task: Task, extra: Mapping[str, Any]) -> Path:
    """Write a checkpoint into ``directory`` (created if needed), atomically per file.

    Args:
        directory: the checkpoint folder.
        model: the denoiser.
        task: the task it is trained on.
        extra: more entries for ``denoiser.pt``; reserved names ``config``, ``task``, ``state_dict`` are refused.
            JSON-able entries are also copied into ``meta.json``.

    Returns:
        The folder.

    Raises:
        MdmError: ``extra`` uses a reserved name.
    """
    reserved = {"config", "task", "state_dict"} & set(extra)
    if reserved:
        raise MdmError(f"save_denoiser: extra may not use the reserved names {sorted(reserved)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    task_info = {"name": task.name, "knobs": task.knobs()}
    payload = {"config": asdict(model.config), "task": task_info, "state_dict": cpu_state(model.state_dict()), **extra}
    tmp = out / f".{CHECKPOINT_FILE}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, out / CHECKPOINT_FILE)
    meta = {
        "checkpoint_id": weights_id(model),
        "task": task_info,
        "config": asdict(model.config),
        "n_params": model.n_params(),
        **{k: v for k, v in extra.items() if _jsonable(v)},
    }
    tmp_meta = out / f".{META_FILE}.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_meta, out / META_FILE)
    return out


def load_denoiser(directory: str | os.PathLike[str], device: torch.device | None = None) -> LoadedDenoiser:
    """Read a checkpoint written by :func:`save_denoiser`.

    Args:
        directory: the checkpoint folder.
        device: where the model runs (default the CPU; see :mod:`merlin_mdm.mdm.devices`).

    Returns:
        The model (eval mode, on ``device``), its task, config, meta and the extra entries.

    Raises:
        MdmError: the folder or its files are missing or unreadable.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise MdmError(f"no denoiser checkpoint at {path} (expected a folder written by 'merlin-mdm mdm train')")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary unpickling
        config = DenoiserConfig(**payload["config"])
        task = make_task(payload["task"]["name"], **payload["task"]["knobs"])
        model = Denoiser(config)
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # a file we cannot read, of any kind (torch.load raises a dozen types)
        raise MdmError(f"cannot read the denoiser checkpoint {path}: {err}") from err
    model.eval()
    meta_path = Path(directory) / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.setdefault("checkpoint_id", weights_id(model))
    if device is not None:
        model.to(device)
    extra = {k: v for k, v in payload.items() if k not in ("config", "task", "state_dict")}
    return LoadedDenoiser(model=model, task=task, config=config, meta=meta, extra=extra)
