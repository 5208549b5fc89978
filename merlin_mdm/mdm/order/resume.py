"""Continuing an interrupted ``train-order``: the training state, saved in the output folder as it goes.

Order training takes up to an hour per policy on a CPU, and a batch job's end, ``scancel`` or the runner's
SIGTERM at a session's end used to throw all of it away: ``merlin-mdm restart`` reran the task from iteration 0.
``train-order`` now writes ``OUT/train-state.pt`` every ``every`` iterations and, when a stop signal arrives,
after the iteration in flight: both networks, Adam's moments, the three random generators, the validation
selector's best iterate, the training log and the seconds spent. Run again with the same arguments (as
``restart`` does), it continues from that iteration, and the policy it saves is bit-identical to an uninterrupted
run's: the same networks, draws and Adam steps (a test checks it).

The state is keyed by a fingerprint of the recipe (every training argument) and of the denoiser (its checkpoint
id) and task: a state written for anything else is never continued, and never thrown away either: the run is
refused, naming the arguments that differ (as ``mdm train`` refuses to resume another recipe); a damaged file is
started over, saying so. The file is written to a temporary name and renamed, so a kill leaves the previous state
whole; it is removed once the policy is saved.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.order.checkpoint import atomic_write

__all__ = ["STATE_FILE", "TrainingStateFile", "recipe_facts", "recipe_fingerprint"]

STATE_FILE = "train-state.pt"
STATE_FORMAT = 1  # bump when the layout of the saved state changes (an older state is then not continued)


def recipe_facts(train_config: dict[str, Any], denoiser_id: Any, task: str, task_knobs: Any) -> dict[str, Any]:
    """Everything a continued run must share with the run that saved the state, as plain JSON data."""
    facts = {"format": STATE_FORMAT, "train_config": train_config, "denoiser": denoiser_id, "task": task,
             "task_knobs": task_knobs}
    plain: dict[str, Any] = json.loads(json.dumps(facts, sort_keys=True, default=str))
    return plain


def recipe_fingerprint(train_config: dict[str, Any], denoiser_id: Any, task: str, task_knobs: Any) -> str:
    """A digest of :func:`recipe_facts`."""
    facts = recipe_facts(train_config, denoiser_id, task, task_knobs)
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _differences(saved: Any, now: dict[str, Any] | None) -> str:
    """What differs between two :func:`recipe_facts` (the training arguments by name), or '' when unknown."""
    if not isinstance(saved, dict) or now is None:
        return ""
    flat_saved = {**{k: v for k, v in saved.items() if k != "train_config"}, **(saved.get("train_config") or {})}
    flat_now = {**{k: v for k, v in now.items() if k != "train_config"}, **now["train_config"]}
    changed = [f"{key} {flat_saved.get(key)!r} -> {flat_now.get(key)!r}" for key in sorted(flat_saved | flat_now)
               if flat_saved.get(key) != flat_now.get(key)]
    return "; ".join(changed[:6]) + ("; ..." if len(changed) > 6 else "")


@dataclass(frozen=True)
class TrainingStateFile:
    """Where and how often one training run saves its state.

    Attributes:
        directory: the run's output folder (``--out``).
        fingerprint: :func:`recipe_fingerprint` of the run.
        every: iterations between saves (0: only when a stop signal arrives).
    """

    directory: Path
    fingerprint: str
    every: int
    facts: dict[str, Any] | None = None  # :func:`recipe_facts`, saved with the state to name what differs

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def due(self, iteration: int, last: int) -> bool:
        """Whether to save after ``iteration`` Adam steps (never after the last: the policy is saved then)."""
        return self.every > 0 and iteration % self.every == 0 and iteration < last

    def save(self, state: dict[str, Any]) -> None:
        """Write the state (tensors and plain data) atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        blob = {"format": STATE_FORMAT, "fingerprint": self.fingerprint, "facts": self.facts, **state}
        atomic_write(self.path, lambda tmp: torch.save(blob, tmp))

    def load(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the saved state, None) when one of this recipe is there; (None, why not) for a damaged file; (None,
        None) for no file.

        Raises:
            MdmError: the state is of another recipe or denoiser (continuing it, or starting over, would lose a
                stopped run's iterations without a word).
        """
        if not self.path.is_file():
            return None, None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a foreign or damaged file: say so and start over, never crash on it
            return None, f"{self.path} cannot be read ({type(exc).__name__}); starting from iteration 0"
        if not isinstance(blob, dict) or "fingerprint" not in blob:
            return None, f"{self.path} is not a training state; starting from iteration 0 (it is overwritten)"
        if blob.get("format") != STATE_FORMAT:  # an older layout: no version of the tool could continue it here
            return None, (f"{self.path} was saved in another layout (format {blob.get('format')!r}, this version "
                          f"reads {STATE_FORMAT}); starting from iteration 0 (it is overwritten)")
        if blob["fingerprint"] != self.fingerprint:
            what = _differences(blob.get("facts"), self.facts)
            raise MdmError(f"{self.path} holds a training stopped at iteration {blob.get('iteration', '?')} under "
                           f"another recipe or denoiser ({what or 'other arguments'}): the same arguments as the "
                           "stopped run continue it; to start over with these, name a new --out or delete the "
                           "file (nothing was trained)")
        return blob, None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
