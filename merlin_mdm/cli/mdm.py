"""`merlin-mdm mdm ...`: train a denoiser, evaluate a sampler, list samplers.

torch is imported inside each command function, so `merlin-mdm --help` never loads it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from merlin_mdm.cli.mdm_device import device_option
from merlin_mdm.cli.mdm_order import order_diagnostic, train_order
from merlin_mdm.cli.numbers import FiniteRange
from merlin_mdm.cli.paths import GivenPath
from merlin_mdm.errors import UsageError

__all__ = ["mdm", "parse_knobs", "warn_other_denoiser"]


def _scalar(text: str) -> Any:
    """'4' -> 4, '0.9' -> 0.9, 'true' -> True, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        if not math.isfinite(number):
            raise UsageError(f"{text!r} is not a finite number: give a knob a finite value")
        return number
    return text


def parse_knobs(pairs: tuple[str, ...]) -> dict[str, Any]:
    """Parse repeated ``KEY=VALUE`` options into a dict with int/float/bool/str values.

    Raises:
        UsageError: an item has no ``=`` or an empty key.
    """
    knobs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--knob expects KEY=VALUE, got {pair!r}")
        if key.strip() in knobs:
            raise UsageError(f"knob {key.strip()} is given twice ({knobs[key.strip()]!r} and {value.strip()!r}); "
                             "give each knob once (--sweep for several values)")
        knobs[key.strip()] = _scalar(value.strip())
    return knobs


@click.group("mdm")
def mdm() -> None:
    """Masked discrete diffusion: train a denoiser, evaluate samplers, learn generation orders.

    \b
    Typical flow (task `blocks`, NB=4 blocks of BL=4 digits):
      merlin-mdm mdm train --task blocks --knob nb=4 --knob bl=4 --out runs/den
      merlin-mdm mdm eval --checkpoint runs/den --sampler top_prob --steps 4 --out runs/top_prob_T4.h5
      merlin-mdm mdm samplers
    """


KNOB_HELP = "Task knob KEY=VALUE (repeatable), e.g. --knob nb=4 --knob bl=4."


@mdm.command("train")
@click.option("--task", default="blocks", show_default=True, help="Task name: blocks, sudoku, arith or addition.")
@click.option("--knob", "knobs", multiple=True, metavar="KEY=VALUE", help=KNOB_HELP)
@click.option("--out", required=True, type=GivenPath(file_okay=False, path_type=Path), help="Checkpoint folder.")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(1), help="Optimiser steps in total.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1), help="Sequences per step.")
@click.option("--lr", default=3e-3, show_default=True, type=FiniteRange(min=0, min_open=True, max=1e30),
              help="Peak AdamW learning rate (linear warm-up, cosine decay to lr/10).")
@click.option("--warmup", default=100, show_default=True, type=click.IntRange(0), help="Warm-up steps.")
@click.option("--weight-decay", default=0.01, show_default=True, type=FiniteRange(min=0), help="AdamW decay.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds initialisation, data and masks.")
@click.option("--d-model", default=64, show_default=True, type=click.IntRange(1), help="Denoiser width.")
@click.option("--n-layers", default=2, show_default=True, type=click.IntRange(1), help="Transformer blocks.")
@click.option("--n-heads", default=4, show_default=True, type=click.IntRange(1), help="Attention heads.")
@click.option("--d-ff", default=256, show_default=True, type=click.IntRange(1), help="MLP width.")
@click.option("--dropout", default=0.0, show_default=True, type=FiniteRange(0, 1, max_open=True))
@click.option("--ckpt-every", default=500, show_default=True, type=click.IntRange(1), help="Checkpoint period.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(0),
              help="torch threads (0: OMP_NUM_THREADS or all cores); 1 is fastest for small models.")
@device_option
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out (same model shape).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def train_command(task: str, knobs: tuple[str, ...], out: Path, resume: bool, quiet: bool, as_json: bool,
                  **options: Any) -> None:
    """Train a denoiser with the MDLM objective and write DIR/denoiser.pt + DIR/meta.json.

    Stopped by a signal (SIGTERM, SIGINT, SIGHUP: a batch job's end, `scancel`), it saves the step reached and
    exits 128+signal; the same command (with or without --resume) continues it, so `merlin-mdm restart` of the
    task loses nothing. `mdm eval` and `mdm train-order` refuse a checkpoint whose training did not reach its
    last step. A stopped training continues only under the same recipe (--steps may grow); a finished one in
    --out is replaced unless --resume.

    \b
    Examples:
      merlin-mdm mdm train --task blocks --knob nb=4 --knob bl=4 --out runs/den
      merlin-mdm mdm train --task blocks --out runs/den --steps 3000 --resume    # train longer
      merlin-mdm mdm train --task sudoku --knob n=4 --knob blanks=6 --out runs/sudoku4
      merlin-mdm mdm train --task arith --out runs/arith --d-model 128 --n-layers 4 --device cuda
    """
    from merlin_mdm.mdm.training import TrainConfig, train
    from merlin_mdm.signals import watch_signals

    config = TrainConfig(task=task, task_knobs=parse_knobs(knobs), **options)
    with watch_signals() as watch, watch.deferred():
        summary = train(config, out, resume=resume, quiet=quiet, stop_requested=lambda: watch.received,
                        notify=lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json.dumps(summary.__dict__, indent=2, sort_keys=True))
        return
    click.echo(f"denoiser: {out} ({summary.n_params:,} parameters, step {summary.steps}, "
               f"loss {summary.final_loss:.4f}, {summary.tokens_per_s:,.0f} tokens/s, {summary.wall_s:.1f} s)")


def _int_list(text: str, option: str) -> list[int]:
    """'2,4,8' -> [2, 4, 8] (each >= 1)."""
    try:  # an empty item ('2,,4') is a typo, not a value to skip
        values = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UsageError(f"{option} expects positive integers separated by commas, got {text!r}")
    if len(set(values)) < len(values):
        raise UsageError(f"{option} {text}: a value is given twice")
    return values


def _sweeps(pairs: tuple[str, ...]) -> list[dict[str, Any]]:
    """``('tau=0.5,0.9',)`` -> ``[{'tau': 0.5}, {'tau': 0.9}]`` (the product over several --sweep options)."""
    variants: list[dict[str, Any]] = [{}]
    for key, text in parse_knobs(tuple(p.replace(",", "\x00") for p in pairs)).items():
        values = [_scalar(v) for v in str(text).split("\x00")]
        if len(set(map(repr, values))) < len(values):  # 0.9 and 0.90 are one value: two runs of one file
            raise UsageError(f"--sweep {key}={str(text).replace(chr(0), ',')}: a value is given twice")
        variants = [{**v, key: value} for v in variants for value in values]
    return variants


@mdm.command("eval")
@click.option("--checkpoint", required=True, type=GivenPath(file_okay=False, path_type=Path),
              help="Denoiser checkpoint folder (from `mdm train`).")
@click.option("--sampler", required=True, help="Sampler name (see `merlin-mdm mdm samplers`).")
@click.option("--knob", "knobs", multiple=True, metavar="KEY=VALUE",
              help="Sampler knob (repeatable), e.g. --knob tau=0.9; every sampler takes blocks=N (semi-AR).")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2,...",
              help="Evaluate a sampler knob at several values (one run each; --out names {KEY}).")
@click.option("--policy", type=GivenPath(file_okay=False, path_type=Path),
              help="Learned-order policy folder (for --sampler learned).")
@click.option("--steps", "steps_text", required=True, metavar="T[,T...]",
              help="Step budget T (a maximum if adaptive); several, e.g. 2,4,8, make one run each (--out names "
                   "{steps}).")
@click.option("--seed", default=0, show_default=True, type=int, help="Picks the examples and the draws.")
@click.option("--n-examples", default=1000, show_default=True, type=click.IntRange(1), help="Examples N.")
@click.option("--batch-size", default=250, show_default=True, type=click.IntRange(1), help="Generated together.")
@click.option("--temperature", default=1.0, show_default=True, type=FiniteRange(min=0),
              help="Token sampling temperature; 0 = argmax.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(0), help="torch threads (0: auto).")
@device_option
@click.option("--out", required=True, type=GivenPath(dir_okay=False, path_type=Path),
              help="metrics.h5 to write; with several runs a pattern such as m/T{steps}_tau{tau}.h5.")
@click.option("--json", "as_json", is_flag=True,
              help="Print each run's file and attributes as one JSON object per line (JSON Lines) on stdout.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--force", is_flag=True,
              help="Evaluate again over an --out file that already holds this run, or replace one holding "
                   "another run (without it: the same run is kept, another one refused).")
def eval_command(checkpoint: Path, sampler: str, knobs: tuple[str, ...], sweeps: tuple[str, ...],
                 policy: Path | None, steps_text: str, seed: int, n_examples: int, batch_size: int,
                 temperature: float, threads: int, device: str, out: Path, as_json: bool, quiet: bool,
                 force: bool) -> None:
    """Evaluate one sampler at one budget and write one HDF5 metrics file (or several budgets/knob values,
    one file each, from one process: the checkpoint is read once).

    An --out file that already holds the same run (same denoiser weights, sampler, knobs, policy, budget,
    examples and draws) is kept and reported, so the same command run again (as `merlin-mdm restart` reruns an
    interrupted task) evaluates only what is missing; one holding another run is refused (--force replaces).

    \b
    Examples:
      merlin-mdm mdm eval --checkpoint runs/den --sampler top_prob --steps 4 --seed 0 --out m/top_prob_T4.h5
      merlin-mdm mdm eval --checkpoint runs/den --sampler dus --steps 2,4,8 --out m/dus_T{steps}.h5
      merlin-mdm mdm eval --checkpoint runs/den --sampler threshold --sweep tau=0.7,0.9 --steps 16 --out m/thr{tau}.h5
      merlin-mdm mdm eval --checkpoint runs/den --sampler margin --knob blocks=4 --steps 8 --out m/semi_ar.h5
      merlin-mdm mdm eval --checkpoint runs/den --sampler learned --policy runs/order_T2 --steps 2 --out m/l.h5
    """
    from merlin_mdm.mdm.checkpoint import load_denoiser
    from merlin_mdm.mdm.devices import resolve_device
    from merlin_mdm.mdm.evaluation import EvalConfig, evaluate, run_identity, write_eval

    fixed = parse_knobs(knobs)
    _check_policy_option(sampler, policy)
    swept_names = {pair.partition("=")[0].strip() for pair in sweeps}
    if policy is not None and "policy_dir" in {*fixed, *swept_names}:
        raise UsageError(f"--policy {policy} and the knob policy_dir both name the policy; give one")
    swept = sorted(set(fixed) & swept_names)
    if swept:
        raise UsageError(f"knob {', '.join(swept)} is both fixed (--knob) and swept (--sweep); give one")
    runs = [(steps, variant) for steps in _int_list(steps_text, "--steps") for variant in _sweeps(sweeps)]
    if len(runs) > 1 and "{" not in str(out):
        raise UsageError(f"--out {out}: several runs need a pattern naming {{steps}} and the swept knobs")
    planned = []  # every run's config, sampler and file, checked before the first one runs
    for steps, variant in runs:
        config = EvalConfig(checkpoint=str(checkpoint), sampler=sampler, sampler_knobs={**fixed, **variant},
                            steps=steps, seed=seed, n_examples=n_examples, batch_size=batch_size,
                            temperature=temperature, policy_dir=None if policy is None else str(policy),
                            threads=threads, device=device)
        planned.append((config, config.build_sampler(), _out_path(out, steps, variant)))
    paths = [path for _, _, path in planned]
    if len(set(paths)) < len(paths):
        raise UsageError(f"--out {out}: two runs would write the same file; name every swept knob in the pattern")
    _note_not_hdf5_names(paths)
    loaded = load_denoiser(checkpoint, resolve_device(device))
    _note_long_budgets(runs, loaded.task.answer_len)
    _note_untrained_budgets(planned)
    kept = {path: attrs for config, built, path in planned
            if (attrs := _kept_run(path, run_identity(config, loaded, built), force)) is not None}
    for config, built, path in planned:
        if path in kept:
            click.echo(f"{path}: already holds this run (the same denoiser and settings); kept (--force evaluates "
                       "again)", err=True)
            _report(path, sampler, config, kept[path], as_json)
            continue
        with _eval_progress(f"eval {path.name}", n_examples, quiet or as_json) as advance:
            result = evaluate(config, loaded, built, advance)
        warn_other_denoiser(result.attrs, policy, checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_eval(result, path)
        _report(path, sampler, config, result.attrs, as_json)


def warn_other_denoiser(attrs: dict[str, Any], policy: Path | None, checkpoint: Path) -> None:
    """A policy evaluated on another denoiser than the one it was trained with: allowed, but said."""
    trained_with = attrs.get("policy_denoiser_id")
    if trained_with and trained_with != attrs["checkpoint_id"]:
        click.echo(f"warning: the policy {policy} was trained with denoiser {trained_with}, not with "
                   f"{checkpoint} ({attrs['checkpoint_id']}); its metrics record both", err=True)


def _kept_run(path: Path, identity: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """The attributes of the metrics file at ``path`` when it holds the run ``identity`` describes (it is kept);
    None when there is none, or --force. One holding another run is refused: it is never written over silently."""
    from merlin_mdm.results.metrics import read_metrics

    if force or not path.exists():
        return None
    attrs = read_metrics(path).attrs  # a metrics file: _out_path refused anything else
    changed = [f"{key} {attrs.get(key)!r} -> {value!r}" for key, value in identity.items()
               if value is not None and attrs.get(key) != value]
    if changed:
        raise UsageError(f"--out {path} holds another run ({'; '.join(changed[:4])}"
                         f"{'; ...' if len(changed) > 4 else ''}): it is not written over; name another file, or "
                         "pass --force to replace it")
    return attrs


def _note_untrained_budgets(planned: list[tuple[Any, Any, Path]]) -> None:
    """A learned order evaluated at a budget it was not trained for runs (an adaptive policy under a larger
    cap, say), but a T=4 policy decodes poorly at T=2: say so, once per policy."""
    other: dict[tuple[str, tuple[int, ...]], set[int]] = {}
    for config, built, _ in planned:
        inner = getattr(built, "inner", built)
        meta = getattr(inner, "meta", None)
        if isinstance(meta, dict) and "budget" in meta:
            trained = tuple(int(b) for b in (meta.get("budgets") or [meta["budget"]]))
            if config.steps not in trained:
                other.setdefault((str(getattr(inner, "policy_dir", "")), trained), set()).add(config.steps)
    for (where, trained), steps in other.items():
        click.echo(f"note: the policy {where} was trained for budget {','.join(map(str, trained))}; --steps "
                   f"{','.join(map(str, sorted(steps)))} is evaluated with it as it is", err=True)


def _note_not_hdf5_names(paths: list[Path]) -> None:
    """Metrics are HDF5 whatever --out is called; a name saying otherwise (x.txt, x.csv) is run, and said."""
    other = sorted({p.name for p in paths if p.suffix.lower() not in (".h5", ".hdf5")})
    if other:
        click.echo(f"note: --out {other[0]}{' ...' if len(other) > 1 else ''} has no .h5 suffix, but the metrics are "
                   "written as HDF5 whatever the name; `aggregate` reads them by the pattern you give it (name them "
                   "*.h5 to find them with the usual pattern)", err=True)


def _note_long_budgets(runs: list[tuple[int, dict[str, Any]]], answer_len: int) -> None:
    """A budget beyond the answer's positions runs (one position per call, at most that many calls) and is
    recorded as given: say so, since its table column then equals the one at the answer's length."""
    long = sorted({steps for steps, _ in runs if steps > answer_len})
    if long:
        click.echo(f"note: --steps {','.join(map(str, long))} exceeds the {answer_len} answer positions: at most "
                   f"{answer_len} calls are made, and the run is recorded with the budget given", err=True)


@contextlib.contextmanager
def _eval_progress(what: str, total: int, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr while a run generates its examples (a line per quarter when not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=sys.stderr)
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  disable=quiet or not console.is_terminal) as bar:
        job = bar.add_task(what, total=total)
        done = [0]

        def advance(n: int) -> None:
            bar.advance(job, n)
            before, done[0] = done[0], done[0] + n
            if not quiet and not console.is_terminal and before * 4 // total < done[0] * 4 // total < 4:
                print(f"{what}: {done[0]}/{total} examples", file=sys.stderr, flush=True)  # for logs

        yield advance


def _out_path(out: Path, steps: int, variant: dict[str, Any]) -> Path:
    """The metrics file of one run; an existing file that is not a metrics file (a checkpoint's meta.json, a
    results file, anything else) is never written over."""
    from merlin_mdm.results.metrics import MetricsFileError, read_metrics

    try:
        path = Path(str(out).format(steps=steps, **variant))
    except (KeyError, IndexError, ValueError) as err:
        raise UsageError(f"--out {out}: cannot fill the pattern ({err}); it may name {{steps}} and the "
                         f"swept knobs") from err
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; name the metrics file to write (e.g. {path}/metrics.h5)")
    if path.exists():
        try:
            read_metrics(path)
        except MetricsFileError as err:
            raise UsageError(f"--out {path} exists and is not a metrics file ({err.reason}): it is not written "
                             "over; name another file") from None
    return path


def _check_policy_option(sampler: str, policy: Path | None) -> None:
    """--policy goes with a sampler that takes a policy (its knob policy_dir), and only with one."""
    from merlin_mdm.mdm.registry import knob_names
    from merlin_mdm.mdm.samplers import SAMPLERS

    if policy is not None and sampler in SAMPLERS and "policy_dir" not in knob_names(SAMPLERS[sampler]):
        raise UsageError(f"--policy {policy}: sampler {sampler!r} takes no policy (the learned sampler does)")


def _report(path: Path, sampler: str, config: Any, attrs: dict[str, Any], as_json: bool) -> None:
    if as_json:  # one object per line (JSON Lines), so that several runs read back one by one
        click.echo(json.dumps({"path": str(path), **attrs}, sort_keys=True, default=str))
        return
    knobs = {k: v for k, v in config.sampler_knobs.items() if k != "policy_dir"}  # a swept tau tells two lines apart
    named = f"{sampler} ({', '.join(f'{k}={v}' for k, v in knobs.items())})" if knobs else sampler
    n_examples, steps = config.n_examples, config.steps
    click.echo(f"{path}: {named} T={steps}: accuracy {attrs['accuracy']:.1%}, NFE mean {attrs['mean_nfe']:.2f} "
               f"[{attrs['min_nfe']}, {attrs['max_nfe']}] over {n_examples} examples")


@mdm.command("samplers")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def samplers_command(as_json: bool) -> None:
    """List the registered samplers and their knobs (defaults shown).

    Every sampler also takes blocks=N: semi-autoregressive generation in N answer blocks (LLaDA).

    \b
    Examples:
      merlin-mdm mdm samplers          each sampler, its kind and knobs
      merlin-mdm mdm samplers --json   for scripts
    """
    import inspect

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from merlin_mdm.mdm.samplers import SAMPLERS

    rows: list[dict[str, Any]] = []
    for name, cls in sorted(SAMPLERS.items()):
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
        knobs = {p.name: (None if p.default is p.empty else p.default) for p in params if p.kind == p.KEYWORD_ONLY
                 or p.kind == p.POSITIONAL_OR_KEYWORD}
        rows.append({"name": name, "adaptive": cls.adaptive, "knobs": knobs,
                     "doc": (cls.__doc__ or "").strip().splitlines()[0]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("sampler", "adaptive", "knobs (default)", "what it does")
    for row in rows:
        knob_text = ", ".join(f"{k}={v}" for k, v in row["knobs"].items()) or "-"
        table.add_row(*(Text(cell) for cell in (str(row["name"]), "yes" if row["adaptive"] else "no", knob_text,
                                                str(row["doc"]))))
    Console().print(table)


mdm.add_command(train_order)
mdm.add_command(order_diagnostic)
