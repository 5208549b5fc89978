"""MDLM training of a :class:`Denoiser` on a task: the masking process, the loss and a resumable loop.

The objective (MDLM with the linear schedule alpha_t = 1 - t): draw t ~ U(0, 1) per sequence, mask every
answer position independently with probability t (the prompt is never masked), and minimise the cross-entropy
of the clean tokens at the masked positions weighted by 1/t, normalised by the number of answer tokens. The
mask token's logit is -inf in the model, so it is never predicted.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from merlin_mdm.errors import Interrupted, MdmError
from merlin_mdm.mdm.checkpoint import CHECKPOINT_FILE, load_denoiser, save_denoiser
from merlin_mdm.mdm.devices import describe_device, resolve_device
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig
from merlin_mdm.mdm.runtime import configure_threads
from merlin_mdm.mdm.tasks import Task, make_task

__all__ = ["T_MIN", "Corrupted", "TrainConfig", "TrainSummary", "corrupt", "mdlm_loss", "train"]

T_MIN = 1e-3  # smallest mask ratio drawn; bounds the 1/t weight


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how. Validated on construction (raises :class:`MdmError`)."""

    task: str = "blocks"  # registered task name
    task_knobs: Mapping[str, Any] = field(default_factory=dict)  # the task's knobs, e.g. {"nb": 4, "bl": 4}
    steps: int = 1000  # optimiser steps in total (a resumed run continues up to this number)
    batch_size: int = 128  # sequences per step, freshly sampled from the task
    lr: float = 3e-3  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    warmup: int = 100  # linear warm-up steps, then cosine decay to lr / 10
    seed: int = 0  # seeds the initialisation, the data and the masks
    d_model: int = 64  # denoiser width
    n_layers: int = 2  # denoiser blocks
    n_heads: int = 4  # attention heads
    d_ff: int = 256  # MLP width
    dropout: float = 0.0  # dropout rate
    ckpt_every: int = 500  # write a checkpoint every this many steps (and at the end)
    threads: int = 1  # torch threads; 0 = OMP_NUM_THREADS or all cores (1 is fastest for ~0.1M-parameter models)
    device: str = "auto"  # where the denoiser trains: auto, cpu, cuda, cuda:N (merlin_mdm.mdm.devices)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "ckpt_every"):
            if getattr(self, name) < 1:
                raise MdmError(f"train: {name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and math.isfinite(self.weight_decay) and math.isfinite(self.dropout)):
            raise MdmError(f"train: lr, weight_decay and dropout must be finite numbers, got {self.lr}, "
                           f"{self.weight_decay}, {self.dropout}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup < 0 or self.threads < 0:
            raise MdmError("train: lr must be > 0 and weight_decay, warmup, threads >= 0")

    def model_config(self, task: Task) -> DenoiserConfig:
        """The denoiser shape for ``task``."""
        return DenoiserConfig(task.vocab_size, task.seq_len, task.mask_id, self.d_model, self.n_layers,
                              self.n_heads, self.d_ff, self.dropout, prompt_aligned=task.prompt_aligned)

    def lr_at(self, step: int) -> float:
        """Learning rate at 0-based ``step``: linear warm-up then cosine to lr / 10."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = (step - self.warmup) / max(self.steps - self.warmup, 1)
        return self.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))


class Corrupted:
    """A masked batch: ``xt`` (B, L), ``masked`` (B, L) bool and the mask ratio ``t`` (B,)."""

    def __init__(self, xt: Tensor, masked: Tensor, t: Tensor) -> None:
        self.xt, self.masked, self.t = xt, masked, t


def corrupt(x0: Tensor, prompt_len: int, mask_id: int, generator: torch.Generator) -> Corrupted:
    """Mask each answer position of ``x0`` (B, L) with probability t ~ U(T_MIN, 1) drawn per sequence."""
    b, n = x0.shape
    t = T_MIN + (1 - T_MIN) * torch.rand(b, generator=generator)  # (B,)
    masked = torch.rand(b, n, generator=generator) < t[:, None]  # (B, L)
    masked[:, :prompt_len] = False
    return Corrupted(x0.masked_fill(masked, mask_id), masked, t)


def mdlm_loss(logits: Tensor, x0: Tensor, masked: Tensor, t: Tensor, answer_len: int) -> Tensor:
    """The MDLM loss: sum over masked positions of CE / t, divided by (B * answer_len).

    Args:
        logits: (B, L, V) denoiser logits.
        x0: (B, L) clean tokens.
        masked: (B, L) bool, where the input was masked.
        t: (B,) mask ratios.
        answer_len: answer tokens per sequence (the normaliser).

    Returns:
        Scalar loss (an upper bound on the per-token negative log-likelihood of the answer, in nats).
    """
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")  # (B, L)
    weighted = (ce * masked / t[:, None]).sum()
    return weighted / (x0.shape[0] * answer_len)


@dataclass(frozen=True)
class TrainSummary:
    """The outcome of :func:`train` (also stored in the checkpoint's meta as ``train_summary``)."""

    out: str  # the checkpoint folder
    steps: int  # the step reached
    final_loss: float  # mean loss over the last 50 steps
    tokens_per_s: float  # tokens processed per second of this run (B * L per step)
    wall_s: float  # seconds of this run
    n_params: int  # denoiser parameters
    device: str = "cpu"  # where it trained: cpu, or cuda:N (GPU name)


class _Run:
    """Mutable training state: model, optimiser, RNGs and the step, restorable from a checkpoint."""

    def __init__(self, cfg: TrainConfig, out: Path, resume: bool, device: torch.device) -> None:
        self.cfg, self.out, self.device = cfg, out, device
        self.task = make_task(cfg.task, **dict(cfg.task_knobs))
        torch.manual_seed(cfg.seed)
        self.model = Denoiser(cfg.model_config(self.task)).to(device)  # initialised on the CPU: same weights anywhere
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                                     weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.losses: list[float] = []
        self.finished = False  # a resumed checkpoint that had reached its steps (it has a train_summary)
        self.planned = 0  # the steps the resumed checkpoint's training was started for
        self.saved_threads: Any = None  # the --threads the resumed checkpoint was trained with
        if resume and (out / CHECKPOINT_FILE).is_file():
            self._restore()

    def _restore(self) -> None:
        loaded = load_denoiser(self.out, finished_only=False)
        if loaded.config != self.model.config:
            raise MdmError(f"cannot resume {self.out}: its model {loaded.config} differs from {self.model.config}")
        _check_same_recipe(self.out, loaded.extra.get("train_config"), self.cfg)
        self.model.load_state_dict(loaded.model.state_dict())
        self.opt.load_state_dict(loaded.extra["optimizer"])
        self.gen.set_state(loaded.extra["rng"]["data"])
        torch.set_rng_state(loaded.extra["rng"]["torch"])
        self.step = int(loaded.extra["step"])
        self.losses = list(loaded.extra.get("losses", []))
        self.finished = "train_summary" in loaded.extra
        saved = loaded.extra.get("train_config")
        self.planned = int(saved["steps"]) if isinstance(saved, dict) and "steps" in saved else self.step
        self.saved_threads = saved.get("threads") if isinstance(saved, dict) else None

    def save(self, summary: TrainSummary | None = None) -> None:
        extra: dict[str, Any] = {
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "rng": {"data": self.gen.get_state(), "torch": torch.get_rng_state()},
            "train_config": {**asdict(self.cfg), "task_knobs": dict(self.cfg.task_knobs)},
            "losses": self.losses,
        }
        if summary is not None:
            extra["train_summary"] = asdict(summary)
        save_denoiser(self.out, self.model, self.task, extra)

    def one_step(self) -> float:
        x0 = self.task.sample_split(self.cfg.batch_size, self.gen, "train")  # (B, L)
        batch = corrupt(x0, self.task.prompt_len, self.task.mask_id, self.gen)  # drawn on the CPU
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr_at(self.step)
        dev = self.device
        logits = self.model(batch.xt.to(dev)).logits  # (B, L, V) on the device
        loss = mdlm_loss(logits, x0.to(dev), batch.masked.to(dev), batch.t.to(dev), self.task.answer_len)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return float(loss.detach())


def _check_finite(run: _Run, out: str | Path) -> None:
    """A loss that is no longer finite has spoilt the weights for good (NaN spreads through every update):
    saving them would give a denoiser that decodes one token everywhere and can even score well."""
    loss = run.losses[-1]
    if math.isfinite(loss):
        return
    raise MdmError(f"training diverged at step {run.step} (loss {loss}): nothing of this step is saved. Lower --lr "
                   f"(now {run.cfg.lr:g}) or raise --warmup (now {run.cfg.warmup}), and start again in an empty "
                   f"--out (the checkpoint in {out}, if any, is of an earlier step of this recipe)")


def _nothing_to_train(run: _Run, out: str | Path, device: torch.device, notify: Callable[[str], None]) -> TrainSummary:
    """--resume with --steps at or below the step reached: a finished checkpoint is left as it is; a stopped one
    is ended there on purpose (its train_summary records the step reached, its train_config the steps it was
    started for), so that evaluation accepts it: the explicit way to keep a training cut by a deadline."""
    tail = run.losses[-50:]
    summary = TrainSummary(str(out), run.step, sum(tail) / max(len(tail), 1), 0.0, 0.0, run.model.n_params(),
                           describe_device(device))
    if run.finished:
        notify(f"{out} is already at step {run.step} (--steps {run.cfg.steps}): nothing to train")
        return summary
    notify(f"{out} stopped at step {run.step} of {run.planned}; --steps {run.cfg.steps} ends its training there "
           "(recorded: train_summary at that step)")
    run.cfg = dataclasses.replace(run.cfg, steps=run.planned)  # the recipe it ran under, not this command's
    run.save(summary)
    return summary


def _resumes(out: Path, resume: bool, notify: Callable[[str], None]) -> bool:
    """Whether to continue the checkpoint in ``out``: with --resume, or when its training stopped before its last
    step, so that the same command run again (as `merlin-mdm restart` runs an interrupted task) continues it, as
    `mdm train-order` does; replacing it threw its steps away (the quick study lost its denoiser's training at
    every restart)."""
    if not (out / CHECKPOINT_FILE).is_file():
        if resume:
            notify(f"nothing to resume in {out} (no checkpoint there): training from step 0")
        return False
    if resume:
        return True
    try:
        extra = load_denoiser(out, finished_only=False).extra
    except MdmError:
        return False  # not a checkpoint this can continue: replaced, as before
    if "train_summary" in extra:
        return False
    notify(f"{out} holds a training stopped at step {extra.get('step', '?')}: continuing it (--resume is implied; "
           "delete the folder to start over)")
    return True


def _check_out(out: Path, resume: bool, notify: Callable[[str], None]) -> None:
    """--out must not hold another kind of artefact; a denoiser there is continued (--resume) or replaced, saying so."""
    if (out / "policy.pt").is_file():
        raise MdmError(f"--out {out} holds an order policy (policy.pt): a denoiser would overwrite its meta.json; "
                       "name another folder")
    if out.exists() and not out.is_dir():
        raise MdmError(f"--out {out} is a file; name a folder for the checkpoint")
    try:
        out.mkdir(parents=True, exist_ok=True)  # before training, not after it
    except OSError as exc:
        raise MdmError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    if not resume and (out / CHECKPOINT_FILE).is_file():
        notify(f"replacing the denoiser in {out} (--resume would continue it instead)")


# what may change when a training is resumed: how far it goes, how often it saves, and where and how fast it runs
_RESUMABLE_CHANGES = ("steps", "ckpt_every", "threads", "device")


def _check_same_recipe(out: Path, saved: Any, cfg: TrainConfig) -> None:
    """A resumed training continues the recipe it was started with: another seed, learning rate or batch size
    would make a model that no recorded recipe describes (and record the new one as if it had been used)."""
    if not isinstance(saved, dict):
        return  # a checkpoint from before train_config was recorded
    now = {**asdict(cfg), "task_knobs": dict(cfg.task_knobs)}
    changed = [f"{key} {saved[key]!r} -> {now[key]!r}" for key in now
               if key not in _RESUMABLE_CHANGES and key in saved and saved[key] != now[key]]
    if changed:
        raise MdmError(f"cannot resume {out} with another recipe ({'; '.join(changed)}): only --steps (and "
                       "--ckpt-every, --threads, --device) may change; use the same options, or a new --out (or "
                       "delete the folder to start over)")


def _progress(quiet: bool) -> Any:
    """A rich progress bar on stderr (hidden when ``quiet``)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=sys.stderr)
    return Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), console=console, disable=quiet)


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, quiet: bool = False,
          stop_requested: Callable[[], int | None] | None = None,
          notify: Callable[[str], None] = lambda line: None) -> TrainSummary:
    """Train a denoiser with the MDLM objective and checkpoint it into ``out``.

    Args:
        cfg: the training configuration.
        out: checkpoint folder (created).
        resume: continue from ``out``'s checkpoint when there is one (same model shape and recipe required).
        quiet: hide the progress bar.
        stop_requested: polled after every step; a signal number ends the run there, its checkpoint saved.
        notify: receives one-line notes (continuing, replacing, stopped).

    Returns:
        The run's summary (also written to ``out/meta.json``).

    Raises:
        Interrupted: ``stop_requested`` reported a signal; the checkpoint of the step reached is saved.
    """
    configure_threads(cfg.threads)
    device = resolve_device(cfg.device)
    # a bad knob or model shape is refused before --out is created or anything in it is said to be replaced
    cfg.model_config(make_task(cfg.task, **dict(cfg.task_knobs)))
    resume = _resumes(Path(out), resume, notify)
    _check_out(Path(out), resume, notify)
    run = _Run(cfg, Path(out), resume, device)
    if run.step >= cfg.steps and run.step > 0:
        return _nothing_to_train(run, out, device, notify)
    if cfg.warmup > cfg.steps and run.step == 0:
        notify(f"note: --warmup {cfg.warmup} is longer than the {cfg.steps} steps: the learning rate rises to "
               f"{cfg.lr_at(cfg.steps - 1):.3g}, never reaching --lr {cfg.lr:g}")
    if run.step:
        notify(f"continuing from step {run.step} of {cfg.steps} (checkpoint in {out})")
        if run.saved_threads is not None and run.saved_threads != cfg.threads:
            notify(f"note: it was trained with --threads {run.saved_threads}; with --threads {cfg.threads} the "
                   "result will not equal an uninterrupted run bit for bit (float sums in another order)")
    start_step, start = run.step, time.perf_counter()
    with _progress(quiet) as bar:
        job = bar.add_task("train", total=cfg.steps, completed=run.step, info="")
        while run.step < cfg.steps:
            run.losses.append(run.one_step())
            _check_finite(run, out)
            signum = stop_requested() if stop_requested is not None else None
            if signum:
                run.save()
                notify(f"stopped at step {run.step} of {cfg.steps}; saved in {out}: the same command continues "
                       "it")
                raise Interrupted(signum)
            if run.step % 25 == 0 or run.step == cfg.steps:
                rate = (run.step - start_step) * cfg.batch_size * run.task.seq_len / (time.perf_counter() - start)
                info = f"loss {run.losses[-1]:.3f}  {rate:,.0f} tok/s"
                bar.update(job, completed=run.step, info=info)
                if not quiet and not bar.console.is_terminal and run.step % max(cfg.steps // 10, 25) == 0:
                    print(f"train step {run.step}/{cfg.steps}: {info}", file=sys.stderr, flush=True)  # for logs
            if run.step % cfg.ckpt_every == 0 and run.step < cfg.steps:
                run.save()
    wall = time.perf_counter() - start
    tokens = (run.step - start_step) * cfg.batch_size * run.task.seq_len
    tail = run.losses[-50:]
    summary = TrainSummary(str(out), run.step, sum(tail) / max(len(tail), 1), tokens / max(wall, 1e-9), wall,
                           run.model.n_params(), describe_device(device))
    run.save(summary)
    return summary
