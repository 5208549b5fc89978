"""Saving and loading a trained order policy: ``DIR/policy.pt`` (weights and shapes) and ``DIR/meta.json``.

``policy.pt`` holds only tensors and plain data (it loads with ``torch.load(weights_only=True)``): the
policy's kind (:mod:`.policies`: ``bernoulli`` or ``sequential``), the policy's and the posterior's
:class:`OrderNetConfig` and state dicts. Format 1 files (written before policy kinds existed) hold no kind and
load as ``bernoulli``, which is what they are. ``meta.json`` holds what a person or a results table wants
without torch: the training config, the policy's lineage (:mod:`.lineage`), the denoiser it was trained
against, the task, timings and the final training figures. Both are written to a temporary name and renamed,
so a killed run never leaves a half-written policy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merlin_mdm.errors import CheckpointError, MdmError
from merlin_mdm.mdm.checkpoint import one_line_reason, read_meta
from merlin_mdm.mdm.devices import cpu_state
from merlin_mdm.mdm.order.networks import OrderNet, OrderNetConfig
from merlin_mdm.mdm.order.policies import DEFAULT_POLICY_KIND, make_reveal_policy

__all__ = ["META_FILE", "POLICY_FILE", "POLICY_FORMAT", "LoadedPolicy", "atomic_write", "load_policy", "save_policy"]

POLICY_FILE = "policy.pt"
META_FILE = "meta.json"
POLICY_FORMAT = 2  # bump when the layout of policy.pt changes (2: records the policy kind)
_READABLE_FORMATS = (1, 2)  # format 1 has no policy kind: it is a Bernoulli policy


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy read back from disk.

    Attributes:
        policy: p_theta in eval mode.
        posterior: q_phi in eval mode, or None when it was not saved.
        meta: the contents of meta.json.
        path: the directory it was read from.
        kind: the registered policy kind (:mod:`.policies`) that turns the policy's outputs into reveal sets.
    """

    policy: OrderNet
    posterior: OrderNet | None
    meta: dict[str, Any]
    path: Path
    kind: str = DEFAULT_POLICY_KIND


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it to ``path`` (a kill leaves no half)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_policy(directory: str | Path, policy: OrderNet, posterior: OrderNet | None, meta: Mapping[str, Any],
                kind: str = DEFAULT_POLICY_KIND) -> Path:
    """Write ``policy.pt`` and ``meta.json`` into ``directory`` (created if needed).

    Args:
        directory: output directory.
        policy: p_theta.
        posterior: q_phi, or None to save the policy alone.
        meta: JSON-able facts (training config, denoiser checkpoint id, task, timings ...).
        kind: the registered policy kind of ``policy``.

    Returns:
        The directory.

    Raises:
        MdmError: an unknown policy kind.
    """
    make_reveal_policy(kind)  # an unknown kind raises, listing the registered ones
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    blob: dict[str, Any] = {
        "format": POLICY_FORMAT,
        "policy_kind": kind,
        "policy_config": policy.config.to_dict(),
        "policy_state": cpu_state(policy.state_dict()),
        "posterior_config": None if posterior is None else posterior.config.to_dict(),
        "posterior_state": None if posterior is None else cpu_state(posterior.state_dict()),
    }
    atomic_write(out / POLICY_FILE, lambda tmp: torch.save(blob, tmp))
    facts = {"kind": "order_policy", "format": POLICY_FORMAT, **meta, "policy_kind": kind}
    text = json.dumps(facts, indent=2, sort_keys=True)
    atomic_write(out / META_FILE, lambda tmp: tmp.write_text(text + "\n"))
    return out


def _network(config: Any, state: Any, where: Path) -> OrderNet:
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: not an order policy file (no network config)")
    try:
        net = OrderNet(OrderNetConfig(**config))
    except TypeError as err:  # a field this version does not know: written by a newer merlin-mdm
        raise CheckpointError(f"{where}: network config not understood by this version ({err}); upgrade "
                              "merlin-mdm") from err
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{where}: weights do not match their config: {err}") from err
    return net.eval()


def load_policy(directory: str | Path) -> LoadedPolicy:
    """Read a policy saved by :func:`save_policy`.

    Raises:
        MdmError: the directory or a file is missing, unreadable, or of another format.
    """
    where = Path(directory)
    pt, meta_path = where / POLICY_FILE, where / META_FILE
    if not pt.is_file():
        if (where / "train-state.pt").is_file():  # resume.STATE_FILE: a training stopped before its end
            raise MdmError(f"no order policy at {where} yet: its training was stopped before it ended "
                           "(train-state.pt is there); run the same `merlin-mdm mdm train-order` command again to "
                           "continue it")
        held = " (it holds a denoiser: pass that as --checkpoint/--denoiser)" if (where / "denoiser.pt").is_file() \
            else ""
        raise MdmError(f"no order policy at {where}: {POLICY_FILE} is missing{held} (train one with "
                       "`mdm train-order`)")
    try:
        blob = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as err:  # a file we cannot read, of any kind (torch.load raises a dozen types)
        raise CheckpointError(f"{pt} is not a readable order policy (damaged, truncated, or not written by "
                              f"`merlin-mdm mdm train-order`: {one_line_reason(err)}); train it "
                              "again") from err
    meta = read_meta(meta_path)
    if not isinstance(blob, dict) or blob.get("format") not in _READABLE_FORMATS:
        raise CheckpointError(f"{pt}: unknown order policy format (expected one of {_READABLE_FORMATS})")
    kind = blob.get("policy_kind", DEFAULT_POLICY_KIND)
    try:
        make_reveal_policy(str(kind))
    except MdmError as err:
        raise MdmError(f"{pt}: {err}") from err
    policy = _network(blob.get("policy_config"), blob.get("policy_state"), pt)
    posterior = None
    if blob.get("posterior_config") is not None:
        posterior = _network(blob["posterior_config"], blob.get("posterior_state"), pt)
    return LoadedPolicy(policy=policy, posterior=posterior, meta=meta, path=where, kind=kind)
