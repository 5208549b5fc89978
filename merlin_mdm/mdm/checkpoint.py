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

from merlin_mdm.errors import CheckpointError, MdmError
from merlin_mdm.mdm.devices import cpu_state
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig
from merlin_mdm.mdm.tasks import Task, make_task

__all__ = ["CHECKPOINT_FILE", "META_FILE", "LoadedDenoiser", "load_denoiser", "one_line_reason", "read_meta",
           "save_denoiser", "weights_id"]

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


def load_denoiser(directory: str | os.PathLike[str], device: torch.device | None = None,
                  finished_only: bool = True) -> LoadedDenoiser:
    """Read a checkpoint written by :func:`save_denoiser`.

    Args:
        directory: the checkpoint folder.
        device: where the model runs (default the CPU; see :mod:`merlin_mdm.mdm.devices`).
        finished_only: refuse the checkpoint of a training that stopped before its last step (a signal, a
            kill): it is not the model its recipe describes. Only resuming reads such a checkpoint.

    Returns:
        The model (eval mode, on ``device``), its task, config, meta and the extra entries.

    Raises:
        MdmError: the folder or its files are missing or unreadable.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise MdmError(f"no denoiser checkpoint at {path} (expected a folder written by 'merlin-mdm mdm train')")
    payload = _payload(path)
    try:
        config = DenoiserConfig(**payload["config"])
        task = make_task(payload["task"]["name"], **payload["task"]["knobs"])
        model = Denoiser(config)
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # written by another version, or edited: config, task or weights do not fit
        raise CheckpointError(f"{path}: its config, task and weights do not fit together "
                              f"({one_line_reason(err)}); was it written by another merlin-mdm version? Train it "
                              "again") from err
    if finished_only:
        _check_finished(Path(directory), payload)
    model.eval()
    meta = read_meta(Path(directory) / META_FILE)
    meta.setdefault("checkpoint_id", weights_id(model))
    if device is not None:
        model.to(device)
    extra = {k: v for k, v in payload.items() if k not in ("config", "task", "state_dict")}
    return LoadedDenoiser(model=model, task=task, config=config, meta=meta, extra=extra)


def one_line_reason(err: BaseException) -> str:
    """A one-line reason: torch's unpickling errors run to a paragraph of advice around one line that matters."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return (line[:157] + "...") if len(line) > 160 else (line or type(err).__name__)


def _payload(path: Path) -> dict[str, Any]:
    """The dict in ``denoiser.pt``; a damaged file or another kind of file is a :class:`CheckpointError`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary unpickling
    except Exception as err:  # torch.load raises a dozen types for a file it cannot read
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged, truncated, or not written by "
                              f"`merlin-mdm mdm train`: {one_line_reason(err)}); train it again, or name the right "
                              "folder") from err
    if isinstance(payload, dict) and "policy_config" in payload:
        raise CheckpointError(f"{path} holds an order policy (from `mdm train-order`), not a denoiser: pass its "
                              "folder as --policy, and a denoiser folder as --checkpoint/--denoiser")
    if not isinstance(payload, dict) or not {"config", "task", "state_dict"} <= set(payload):
        raise CheckpointError(f"{path} is not a denoiser checkpoint (no config, task and weights in it); name a "
                              "folder written by `merlin-mdm mdm train`")
    return payload


def _check_finished(directory: Path, payload: Mapping[str, Any]) -> None:
    recipe, step = payload.get("train_config"), payload.get("step")
    if "train_summary" in payload or not isinstance(recipe, Mapping) or not isinstance(step, int):
        return  # finished, or not written by `mdm train` (no recipe to finish)
    if step < int(recipe.get("steps", 0)):
        raise CheckpointError(f"{directory} holds a denoiser whose training stopped at step {step} of "
                              f"{recipe['steps']} (it was interrupted): finish it with the same `merlin-mdm mdm "
                              "train` command and --resume, or keep it as it is with --resume --steps 1 (ends it at "
                              "that step, recorded)")


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json`` ({} when absent); one that is not a JSON object is a :class:`CheckpointError`."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path} is damaged ({one_line_reason(err)}): it is rewritten with the checkpoint; "
                              "train again, or delete it to use the weights as they are") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is damaged (not a JSON object); train again, or delete it")
    return meta
