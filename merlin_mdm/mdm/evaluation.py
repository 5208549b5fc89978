"""Evaluate a trained denoiser with one sampler at one step budget and write the run's HDF5 metrics file.

The evaluation examples come from the task's evaluation split (disjoint from anything training sees) and
depend only on the seed (the data RNG is seeded with ``seed``), so every sampler and budget evaluated with the
same seed sees the same prompts: comparisons are paired. The sampler's own draws and the token draws use a
second RNG seeded with ``seed + 1``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.checkpoint import LoadedDenoiser, load_denoiser
from merlin_mdm.mdm.devices import describe_device, resolve_device
from merlin_mdm.mdm.runtime import configure_threads
from merlin_mdm.mdm.samplers import Sampler, generate, make_sampler

__all__ = ["EvalConfig", "EvalResult", "evaluate", "run_eval", "run_identity", "write_eval"]


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. Validated on construction (raises :class:`MdmError`)."""

    checkpoint: str  # denoiser checkpoint folder
    sampler: str  # registered sampler name
    sampler_knobs: Mapping[str, Any] = field(default_factory=dict)  # the sampler's knobs (blocks=N for semi-AR)
    steps: int = 4  # step budget T (a maximum for adaptive samplers)
    seed: int = 0  # picks the examples (data RNG = seed) and the sampling draws (RNG = seed + 1)
    n_examples: int = 1000  # number of examples N
    batch_size: int = 250  # sequences generated together
    temperature: float = 1.0  # token sampling temperature; 0 = argmax
    policy_dir: str | None = None  # learned-order policy folder (passed to the sampler as policy_dir)
    threads: int = 1  # torch threads; 0 = OMP_NUM_THREADS or all cores (1 is fastest for ~0.1M-parameter models)
    device: str = "auto"  # where the networks run (denoiser, a learned order): auto, cpu, cuda, cuda:N

    def __post_init__(self) -> None:
        for name in ("steps", "n_examples", "batch_size"):
            if getattr(self, name) < 1:
                raise MdmError(f"eval: {name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise MdmError(f"eval: temperature must be >= 0, got {self.temperature}")

    def build_sampler(self) -> Sampler:
        """The sampler, with ``policy_dir`` added to its knobs when set."""
        knobs = dict(self.sampler_knobs)
        if self.policy_dir is not None:
            knobs["policy_dir"] = self.policy_dir
        return make_sampler(self.sampler, **knobs)


@dataclass(frozen=True)
class EvalResult:
    """Per-example outcomes and run attributes, ready for :func:`merlin_mdm.results.metrics.write_metrics`."""

    attrs: dict[str, Any]  # run attributes (task.*, sampler.*, steps, seed, summary, times, ...)
    correct: np.ndarray  # (N,) bool
    nfe: np.ndarray  # (N,) int64
    wall_time: np.ndarray  # (N,) float64, the batch's generation time divided by its size
    tokens: np.ndarray  # (N, L) int64, the generated sequences
    reveal_step: np.ndarray  # (N, L) int64, the step that revealed each position (-1 in the prompt)


def _generate_all(cfg: EvalConfig, loaded: LoadedDenoiser, sampler: Sampler,
                  advance: Callable[[int], None]) -> dict[str, np.ndarray]:
    task = loaded.task
    data_gen = torch.Generator().manual_seed(cfg.seed)
    sample_gen = torch.Generator().manual_seed(cfg.seed + 1)
    clean = task.sample_split(cfg.n_examples, data_gen, "eval")  # (N, L)
    parts: dict[str, list[np.ndarray]] = {"correct": [], "nfe": [], "wall_time": [], "tokens": [],
                                          "reveal_step": []}
    for lo in range(0, cfg.n_examples, cfg.batch_size):
        prompts = clean[lo : lo + cfg.batch_size, : task.prompt_len]  # (B, P)
        t0 = time.perf_counter()
        out = generate(loaded.model, prompts, task.answer_len, sampler, cfg.steps, sample_gen, cfg.temperature)
        wall = time.perf_counter() - t0
        parts["correct"].append(task.score(out.tokens).numpy().astype(bool))
        parts["nfe"].append(out.nfe.numpy().astype(np.int64))
        parts["wall_time"].append(np.full(len(prompts), wall / len(prompts)))
        parts["tokens"].append(out.tokens.numpy().astype(np.int64))
        parts["reveal_step"].append(out.reveal_step.numpy().astype(np.int64))
        advance(len(prompts))
    return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate(cfg: EvalConfig, loaded: LoadedDenoiser | None = None, sampler: Sampler | None = None,
             advance: Callable[[int], None] = lambda n: None) -> EvalResult:
    """Generate ``cfg.n_examples`` answers and score them.

    Args:
        cfg: the run.
        loaded: an already loaded checkpoint (else ``cfg.checkpoint`` is read onto ``cfg.device``; a loaded
            one runs where its caller put it).
        sampler: a sampler built by the caller (else ``cfg.build_sampler()``).
        advance: told the number of examples of each batch once it is generated (progress).

    Returns:
        The per-example outcomes and the attributes of the run.
    """
    configure_threads(cfg.threads)
    start = datetime.now(UTC).isoformat(timespec="seconds")
    loaded = loaded or load_denoiser(cfg.checkpoint, resolve_device(cfg.device))
    sampler = sampler or cfg.build_sampler()
    needs = getattr(getattr(sampler, "inner", sampler), "task", None)  # an oracle knows one task's structure
    if isinstance(needs, str) and needs != loaded.task.name:
        raise MdmError(f"sampler {cfg.sampler!r} needs the {needs} task; the denoiser at {cfg.checkpoint} was "
                       f"trained on {loaded.task.name}")
    device = next(loaded.model.parameters()).device
    sampler.to(device)  # a learned order's network runs beside the denoiser
    data = _generate_all(cfg, loaded, sampler, advance)
    attrs: dict[str, Any] = {
        "task": loaded.task.name,
        **{f"task.{k}": v for k, v in loaded.task.knobs().items()},
        **{f"sampler.{k}": v for k, v in sampler.knobs().items()},  # an unset knob too (run_identity leaves it)
        "adaptive": bool(getattr(sampler, "is_adaptive", sampler.adaptive)),
        **_policy_attrs(sampler),
        **run_identity(cfg, loaded, sampler),
        "checkpoint": os.fspath(cfg.checkpoint),
        **_policy_denoiser(sampler),
        **_train_seed(loaded.meta),
        "policy_dir": cfg.policy_dir,
        "torch_threads": torch.get_num_threads(),
        "device": describe_device(device),
        "start_time": start,
        "end_time": datetime.now(UTC).isoformat(timespec="seconds"),
        "accuracy": float(data["correct"].mean()),
        "mean_nfe": float(data["nfe"].mean()),
        "min_nfe": int(data["nfe"].min()),
        "max_nfe": int(data["nfe"].max()),
    }
    return EvalResult(attrs, data["correct"], data["nfe"], data["wall_time"], data["tokens"], data["reveal_step"])


def run_identity(cfg: EvalConfig, loaded: LoadedDenoiser, sampler: Sampler) -> dict[str, Any]:
    """The attributes (as :func:`evaluate` writes them) that make two evaluations the same run, known before it
    runs: the denoiser's weights, the sampler and its knobs, the learned order's policy, the budget, the examples
    and the draws (not where, or with how many threads, it runs: the metrics do not depend on it)."""
    policy = {k: v for k, v in _policy_attrs(sampler).items() if k.startswith("policy.")}
    return {
        "sampler": cfg.sampler,
        **{f"sampler.{k}": v for k, v in sampler.knobs().items() if v is not None},
        **policy,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "n_examples": cfg.n_examples,
        "eval_batch_size": cfg.batch_size,  # the sampling draws are made per batch: it shapes the results
        "temperature": cfg.temperature,
        "checkpoint_id": str(loaded.meta["checkpoint_id"]),
    }


_RECIPE_KEYS = ("objective", "policy_kind", "token_temperature", "iterations", "tau_start", "d_model",
                "n_layers", "rollouts", "batch_size", "lr_policy", "select_every", "select_by", "common_token_noise")


def _recipe_parts(config: Mapping[str, Any]) -> list[str]:
    """``key=value`` for the recipe knobs that differ from :class:`OrderTrainConfig`'s defaults (so two recipes
    never share a Table 1 line); the defaults are dropped by :func:`merlin_mdm.mdm.order.lineage.recipe`."""
    from merlin_mdm.mdm.order.lineage import recipe

    kept = recipe(config)
    return [f"{key}={kept[key]:g}" if isinstance(kept[key], float) else f"{key}={kept[key]}"
            for key in _RECIPE_KEYS if key in kept]


def _teacher_parts(meta: Mapping[str, Any]) -> list[str]:
    """``teacher=eb[gamma=0.03]`` for an imitation policy, so clones of different teachers never share a line.

    Only for policies that record a lineage (trained since lineages exist): older clones keep their labels.
    """
    from merlin_mdm.mdm.order.lineage import LINEAGE_KEY

    config = meta.get("train_config")
    if LINEAGE_KEY not in meta or not isinstance(config, dict) or config.get("objective") != "imitate":
        return []
    knobs = ",".join(f"{key}={float(value):g}" for key, value in config.get("teacher_knobs") or [])
    return [f"teacher={config.get('teacher', 'eb')}" + (f"[{knobs}]" if knobs else "")]


def _prior_parts(config: Mapping[str, Any]) -> list[str]:
    """``prior=threshold[tau=0.9]`` (and ``prior_scale=0.3`` when not 1, ``prior_stop_scale=30`` when set) for a
    policy built on a heuristic prior."""
    if not config.get("prior"):
        return []
    knobs = ",".join(f"{key}={float(value):g}" for key, value in config.get("prior_knobs") or [])
    parts = [f"prior={config['prior']}" + (f"[{knobs}]" if knobs else "")]
    scale = float(config.get("prior_scale", 1.0))
    stop = config.get("prior_stop_scale")
    return (parts + ([f"prior_scale={scale:g}"] if scale != 1.0 else [])
            + ([f"prior_stop_scale={float(stop):g}"] if stop is not None else []))


def _train_seed(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``train_seed``: the seed the denoiser was trained with, when its meta.json says."""
    config = meta.get("train_config")
    return {"train_seed": int(config["seed"])} if isinstance(config, dict) and "seed" in config else {}


def _policy_denoiser(sampler: Any) -> dict[str, Any]:
    """``policy_denoiser_id``: the checkpoint_id of the denoiser a learned order was trained with (a policy
    used with another denoiser is then visible in its metrics); nothing for other samplers."""
    meta = getattr(getattr(sampler, "inner", sampler), "meta", None)
    if not isinstance(meta, dict) or not meta.get("denoiser_checkpoint_id"):
        return {}
    return {"policy_denoiser_id": str(meta["denoiser_checkpoint_id"])}


def _policy_attrs(sampler: Any) -> dict[str, Any]:
    """For policy samplers: the policy's training budget(s), temperature, NFE penalty, lineage and a Table 1
    method name.

    E.g. ``learned (T=2, tau=0.1)``, ``learned (T=2/4/8, tau=0.1, nfe_penalty=0.5, sample)``,
    ``learned_counts (T=4, tau=0.1)``, ``learned (T=4, tau=0.1, iterations=800, d_model=64)``: recipe knobs
    appear when they differ from the defaults. A policy trained from another one (``--init-policy``) adds its
    stage and its starting policy's lineage (:mod:`merlin_mdm.mdm.order.lineage`): ``learned (T=4, tau=0.1,
    objective=reward, stage=2, init=imitate-3f9a0c)``; an imitation policy names its teacher: ``learned (T=16,
    tau=0.1, objective=imitate, teacher=eb[gamma=0.03])``.
    """
    from merlin_mdm.mdm.order.lineage import lineage_attrs, lineage_label_parts

    inner = getattr(sampler, "inner", sampler)
    meta = getattr(inner, "meta", None)
    if not isinstance(meta, dict) or "budget" not in meta:
        return {}
    config: dict[str, Any] = meta["train_config"] if isinstance(meta.get("train_config"), dict) else {}
    budgets = [int(b) for b in (meta.get("budgets") or [meta["budget"]])]
    out: dict[str, Any] = {"policy.budget": int(meta["budget"]), "policy.budgets": "|".join(map(str, budgets))}
    parts = [f"T={'/'.join(map(str, budgets))}"]  # as the reports' tables write it (| would break them)
    if config.get("tau") is not None:
        out["policy.tau"] = float(config["tau"])
        parts.append(f"tau={float(config['tau']):g}")
    if config.get("nfe_penalty"):
        out["policy.nfe_penalty"] = float(config["nfe_penalty"])
        parts.append(f"nfe_penalty={float(config['nfe_penalty']):g}")
    parts += _recipe_parts(config) + _prior_parts(config) + _teacher_parts(meta) + lineage_label_parts(meta)
    out.update(lineage_attrs(meta))
    if "seed" in config:
        out["policy.seed"] = int(config["seed"])
    if getattr(inner, "decode", "threshold") == "sample":
        parts.append("sample")
    out["method"] = f"{inner.name} ({', '.join(parts)})"
    return out


def write_eval(result: EvalResult, out: str | os.PathLike[str]) -> Path:
    """Write ``result`` as one HDF5 metrics file (atomically, through the results layer)."""
    from merlin_mdm.results.metrics import write_metrics

    datasets = {"correct": result.correct, "nfe": result.nfe, "wall_time": result.wall_time, "tokens": result.tokens,
                "reveal_step": result.reveal_step}
    return write_metrics(out, result.attrs, datasets)


def run_eval(cfg: EvalConfig, out: str | os.PathLike[str]) -> EvalResult:
    """Evaluate and write the metrics file to ``out`` (its folder is created)."""
    result = evaluate(cfg)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_eval(result, out)
    return result
