"""The lineage of a trained order policy: the training stages that led to it, recorded without paths.

``train-order --init-policy DIR`` continues from another policy, so two policies trained with the same
arguments can hold different networks: a reward stage run from an imitation clone, and the same stage run
again from its own result. Their Table 1 method labels must differ, or the aggregate pools them as replicate
seeds of one method. The path of the starting policy cannot tell them apart (paths differ between seeds and
are left out of labels), so every policy's ``meta.json`` records its lineage under :data:`LINEAGE_KEY`::

    "lineage": {"stage": 3, "ancestors": [<recipe of stage 1>, <recipe of stage 2>]}

A *recipe* is a policy's training config less its seed and its ``init_policy`` path, and less every entry
equal to :class:`~.training.OrderTrainConfig`'s default (so a knob added later with a default does not change
old recipes). Stage 1 is a policy trained from fresh networks (imitation of a baseline sampler included);
a policy trained from DIR is DIR's stage + 1, and its ancestors are DIR's ancestors followed by DIR's recipe.
Replicate seeds of one recipe from replicate seeds of one starting recipe therefore share a lineage; a
different starting policy, or one more stage, does not.

The evaluation writes ``policy.stage`` and, from stage 2 on, ``policy.init``: the starting policy's objective
and a 6-digit digest of the ancestors, e.g. ``reward-3f9a0c``; both enter the method label from stage 2 on
(:func:`lineage_label_parts`), so labels of policies trained from fresh networks are unchanged. A policy saved
before lineages were recorded has no ``lineage``: it gets neither attribute and keeps its old label. When such
a policy is the starting point of a new one, its own starting point is followed by the path in its meta.json,
while that path still holds a policy; an ancestor that cannot be read enters as :data:`UNRECORDED`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from merlin_mdm.mdm.order.checkpoint import META_FILE

__all__ = ["LINEAGE_KEY", "UNRECORDED", "lineage_attrs", "lineage_label_parts", "policy_lineage", "recipe"]

LINEAGE_KEY = "lineage"
UNRECORDED: dict[str, Any] = {"unrecorded": True}  # an ancestor whose meta.json could not be read
_NOT_RECIPE = frozenset({"seed", "init_policy"})  # replicates differ in the seed; the init enters as ancestors
_DIGEST_CHARS = 6


def _defaults() -> dict[str, Any]:
    from merlin_mdm.mdm.order.training import OrderTrainConfig  # deferred: training imports the objectives

    fields = dataclasses.fields(OrderTrainConfig)
    return {f.name: _plain(f.default) for f in fields if f.default is not dataclasses.MISSING}


def _plain(value: Any) -> Any:
    """The value as meta.json stores it (tuples become lists)."""
    return json.loads(json.dumps(value))


def recipe(train_config: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe of a policy: its training config less ``seed``, ``init_policy`` and every default entry."""
    defaults = _defaults()
    return {key: _plain(value) for key, value in sorted(train_config.items())
            if key not in _NOT_RECIPE and (key not in defaults or _plain(value) != defaults[key])}


def _read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _lineage_through(directory: Path, seen: frozenset[Path]) -> list[dict[str, Any]]:
    """The ancestors of a policy trained from ``directory``: directory's ancestors, then directory's recipe."""
    meta = _read_meta(directory)
    if meta is None or directory.resolve() in seen:  # unreadable, or a policy trained in place (a cycle)
        return [UNRECORDED]
    found = meta.get("train_config")
    config: dict[str, Any] = found if isinstance(found, dict) else {}
    recorded = meta.get(LINEAGE_KEY)
    if isinstance(recorded, dict) and isinstance(recorded.get("ancestors"), list):
        above = list(recorded["ancestors"])
    elif config.get("init_policy"):  # saved before lineages were recorded: follow its own starting point
        above = _lineage_through(Path(str(config["init_policy"])), seen | {directory.resolve()})
    else:
        above = []
    return [*above, recipe(config)]


def policy_lineage(init_policy: str | Path | None) -> dict[str, Any]:
    """The ``lineage`` entry of the meta.json of a policy trained from ``init_policy`` (None: fresh networks).

    Returns:
        ``{"stage": N, "ancestors": [recipe, ...]}``, oldest ancestor first.
    """
    ancestors = [] if init_policy is None else _lineage_through(Path(init_policy), frozenset())
    return {"stage": len(ancestors) + 1, "ancestors": ancestors}


def _init_name(ancestors: list[Any]) -> str:
    """``<objective of the starting policy>-<digest of the ancestors>``, e.g. ``imitate-3f9a0c``."""
    text = json.dumps(ancestors, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    last = ancestors[-1] if isinstance(ancestors[-1], dict) else {}
    objective = "unknown" if last.get("unrecorded") else str(last.get("objective", _defaults()["objective"]))
    return f"{objective}-{digest}"


def lineage_attrs(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``policy.stage`` and, from stage 2 on, ``policy.init`` of a policy's meta.json ({} when not recorded)."""
    recorded = meta.get(LINEAGE_KEY)
    if not isinstance(recorded, dict) or not isinstance(recorded.get("ancestors"), list):
        return {}
    ancestors = recorded["ancestors"]
    out: dict[str, Any] = {"policy.stage": len(ancestors) + 1}
    if ancestors:
        out["policy.init"] = _init_name(ancestors)
    return out


def lineage_label_parts(meta: Mapping[str, Any]) -> list[str]:
    """The method-label parts of the lineage: ``["stage=N", "init=..."]`` from stage 2 on, else []."""
    attrs = lineage_attrs(meta)
    if "policy.init" not in attrs:
        return []
    return [f"stage={attrs['policy.stage']}", f"init={attrs['policy.init']}"]
