"""`mdm train-order`: train a learned generation order for a frozen denoiser (arXiv 2602.23968).

The MDM pack (and with it torch) is imported inside the command, so `merlin-mdm --help` never loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from merlin_mdm.cli.mdm_device import device_option
from merlin_mdm.cli.numbers import FiniteRange
from merlin_mdm.cli.paths import GivenPath
from merlin_mdm.errors import UsageError
from merlin_mdm.signals import watch_signals

__all__ = ["order_diagnostic", "train_order"]


def _echo_progress(entry: dict[str, float]) -> None:
    figures = "  ".join(f"{key} {value:.4f}" for key, value in entry.items() if key != "iteration")
    click.echo(f"iter {int(entry['iteration']):5d}  {figures}", err=True)


def _budget_list(text: str) -> tuple[int, ...]:
    """'2,4,8' -> (2, 4, 8); '' -> ()."""
    text = text.replace(" ", "")
    try:  # an empty item ('2,,4') is a typo, not a value to skip
        return tuple(int(part) for part in text.split(",")) if text else ()
    except ValueError as err:
        raise click.BadParameter(f"expected integers separated by commas, got {text!r}",
                                 param_hint="--budgets") from err


@click.command("train-order")
@click.option("--denoiser", "denoiser_dir", required=True, type=GivenPath(file_okay=False, path_type=Path),
              help="Denoiser checkpoint directory (from `merlin-mdm mdm train`).")
@click.option("--budget", required=True, type=click.IntRange(2),
              help="T: denoiser calls per sequence (with --budgets: the budget of the quick check).")
@click.option("--budgets", default="", metavar="T1,T2,...",
              help="Train one policy for several budgets (T drawn per iteration), e.g. 2,4,8.")
@click.option("--nfe-penalty", default=0.0, show_default=True, type=FiniteRange(min=0),
              help="Adaptive compute: nats per expected extra denoiser call; the policy may finish early.")
@click.option("--objective", default="elbo", show_default=True,
              help="Registered objective. elbo: the order ELBO; reward: REINFORCE on the task's score of answers.")
@click.option("--policy-kind", default="bernoulli", show_default=True,
              help="Registered policy kind. bernoulli: independent reveal decisions; sequential: picks positions "
                   "one at a time within a step, with a stop decision (trained by --objective reward or imitate); "
                   "sequential-onepass: the same picks, but the network reads the step once and each pick only "
                   "re-reads a light head (about 2x faster training on arith; what is chosen cannot steer "
                   "attention).")
@click.option("--token-temperature", default=1.0, show_default=True, type=FiniteRange(min=0),
              help="reward: token temperature of the rollouts (use the evaluation's: 1.0 samples, 0 argmax).")
@click.option("--common-token-noise/--independent-token-noise", default=False, show_default=True,
              help="reward: common random numbers for the token draws. The K rollouts of a prompt share one "
                   "Gumbel noise per (position, token), so two rollouts that reveal a cell in the same state draw "
                   "the same token; each rollout still samples at --token-temperature exactly. The rollouts' "
                   "return differences then mostly reflect their orders, not token luck: try it when the score "
                   "depends on sampled tokens (--token-temperature > 0) and the gradient is noisy. Groups get "
                   "independent noise; no effect at temperature 0.")
@click.option("--init-policy", type=GivenPath(file_okay=False, path_type=Path),
              help="Start from this trained policy (e.g. an ELBO-trained one) instead of fresh networks. The "
                   "lineage (stage, and the starting policy's recipe as a digest, never its path) is recorded in "
                   "meta.json and appears in the evaluation's method label, e.g. stage=2, init=imitate-3f9a0c.")
@click.option("--teacher", default="eb", show_default=True,
              help="imitate: the registered sampler the policy learns to copy (a warm start for reward).")
@click.option("--teacher-knob", "teacher_knobs", multiple=True, metavar="KEY=VALUE",
              help="imitate: a knob of the teacher (repeatable), e.g. --teacher-knob gamma=0.1.")
@click.option("--prior", default="", metavar="NAME",
              help="Sequential kinds: start from a heuristic and learn a correction. The policy's logits are "
                   "the heuristic's (threshold: confidence, stop below tau; eb: entropy, stop past gamma) times "
                   "--prior-scale plus the network's, whose outputs start at zero: before training the policy "
                   "decodes exactly as the heuristic sampler does. Then train it with --objective reward.")
@click.option("--prior-knob", "prior_knobs", multiple=True, metavar="KEY=VALUE",
              help="A knob of the prior (repeatable), e.g. --prior-knob tau=0.9 or --prior-knob gamma=0.1.")
@click.option("--prior-scale", default=1.0, show_default=True, type=FiniteRange(min=0, min_open=True),
              help="Multiplies the prior's logits: larger is sharper, so sampled rollouts explore less.")
@click.option("--prior-stop-scale", type=FiniteRange(min=0, min_open=True),
              help="Multiplies the prior's stop margin instead of --prior-scale: a sharp stop (e.g. 30) with soft "
                   "picks (--prior-scale 1) gives rollouts that stop where the heuristic does while their picks "
                   "explore. Default: --prior-scale.")
@click.option("--out", "out_dir", required=True, type=GivenPath(file_okay=False, path_type=Path),
              help="Where policy.pt and meta.json are written.")
@click.option("--tau", default=0.1, show_default=True, type=FiniteRange(min=0, min_open=True),
              help="Posterior temperature: q_i = exp((s_i - max s) / tau).")
@click.option("--tau-start", type=FiniteRange(min=0, min_open=True),
              help="Anneal tau geometrically from this value over the first half of training.")
@click.option("--rollouts", default=4, show_default=True, type=click.IntRange(2),
              help="K posterior rollouts per example (leave-one-out baseline).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Examples per step.")
@click.option("--iterations", default=200, show_default=True, type=click.IntRange(1), help="Adam steps.")
@click.option("--lr", default=3e-3, show_default=True, type=FiniteRange(min=0, min_open=True, max=1e30),
              help="Adam learning rate of the policy and the posterior.")
@click.option("--d-model", default=32, show_default=True, type=click.IntRange(2), help="Order network width.")
@click.option("--layers", default=1, show_default=True, type=click.IntRange(0), help="Order network layers.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds data, rollouts and initialisation.")
@click.option("--select-every", default=0, show_default=True, type=click.IntRange(0),
              help="Validate every N iterations on training-split prompts and save the best iterate (0: the last).")
@click.option("--select-samples", default=256, show_default=True, type=click.IntRange(1),
              help="Validation prompts decoded per budget when --select-every > 0.")
@click.option("--select-by", default="score", show_default=True, metavar="NAME",
              help="What --select-every ranks iterates by. score: the task score; return: score - --nfe-penalty x "
                   "mean calls (for adaptive policies compared at equal mean calls, where the score alone favours "
                   "iterates that spend more calls).")
@click.option("--eval-samples", default=512, show_default=True, type=click.IntRange(0),
              help="Answers generated with the trained policy as a quick check (0: skip).")
@click.option("--state-every", default=10, show_default=True, type=click.IntRange(0),
              help="Save the training state in --out every N iterations and on SIGTERM/SIGINT/SIGHUP (after the "
                   "iteration in flight; 0: only then). The same command run again continues from it (as "
                   "`merlin-mdm restart` does) and saves the same policy an uninterrupted run would; a state of "
                   "other arguments or another denoiser is not continued. Removed once the policy is saved.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="torch CPU threads; the order networks are small, and parallel study steps oversubscribe cores.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def train_order(denoiser_dir: Path, budget: int, budgets: str, nfe_penalty: float, objective: str,
                policy_kind: str, token_temperature: float, common_token_noise: bool, init_policy: Path | None,
                teacher: str, teacher_knobs: tuple[str, ...], prior: str, prior_knobs: tuple[str, ...],
                prior_scale: float, prior_stop_scale: float | None, out_dir: Path, tau: float,
                tau_start: float | None, rollouts: int, batch_size: int, iterations: int, lr: float, d_model: int,
                layers: int, seed: int, select_every: int, select_samples: int, select_by: str, eval_samples: int,
                state_every: int, threads: int, device: str, as_json: bool) -> None:
    """Train the order policy p_theta(r | x_t) for the denoiser at --denoiser and budget T.

    \b
    Examples (the quick flagship study, blocks NB=4 BL=4):
      merlin-mdm mdm train-order --denoiser runs/den --budget 2 --tau 0.1 --rollouts 4 --out runs/order_T2
    Then: merlin-mdm mdm eval --checkpoint runs/den --sampler learned --policy runs/order_T2 --steps 2 ...

    Stopped by a signal (a batch job's end, `scancel`, a study's SIGTERM), it saves its state in --out and exits
    128+signal; the same command continues from there (see --state-every).
    """
    from merlin_mdm.cli.mdm import parse_knobs  # deferred: cli.mdm imports this module
    from merlin_mdm.mdm.order.pipeline import run_train_order
    from merlin_mdm.mdm.order.training import OrderTrainConfig
    from merlin_mdm.mdm.runtime import configure_threads

    _check_parent(out_dir, "--out")
    configure_threads(threads)
    config = OrderTrainConfig(budget=budget, budgets=_budget_list(budgets), nfe_penalty=nfe_penalty,
                              objective=objective, policy_kind=policy_kind, token_temperature=token_temperature,
                              common_token_noise=common_token_noise,
                              init_policy=None if init_policy is None else str(init_policy), teacher=teacher,
                              teacher_knobs=tuple(parse_knobs(teacher_knobs).items()), prior=prior,
                              prior_knobs=tuple(parse_knobs(prior_knobs).items()), prior_scale=prior_scale,
                              prior_stop_scale=prior_stop_scale, tau=tau,
                              tau_start=tau_start, rollouts=rollouts, batch_size=batch_size, iterations=iterations,
                              lr_policy=lr, lr_posterior=lr, d_model=d_model, n_layers=layers, seed=seed,
                              select_every=select_every, select_samples=select_samples,
                              select_by=select_by)
    if config.budgets and budget not in config.budgets and eval_samples > 0:
        click.echo(f"note: the quick check runs at --budget {budget}, which is not one of --budgets "
                   f"{','.join(map(str, config.budgets))} the policy is trained for", err=True)
    with watch_signals() as watch:
        summary = run_train_order(denoiser_dir, out_dir, config, eval_samples, progress=_echo_progress,
                                  device=device, state_every=state_every, signals=watch,
                                  notify=lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json.dumps({"out": str(out_dir), **summary.to_dict()}, indent=2, sort_keys=True))  # `out`, as train
        return
    click.echo(f"policy: {out_dir} ({summary.iterations} iterations, {summary.train_seconds:.1f} s)")
    if summary.selected_iteration is not None:
        click.echo(f"saved the iterate after {summary.selected_iteration} iterations (best on validation prompts)")
    if summary.evaluation:
        ev = summary.evaluation
        click.echo(f"check: {ev['valid']:.1%} valid at mean NFE {ev['mean_nfe']:.2f} "
                   f"(max {ev['max_nfe']:.0f}) over {int(ev['samples'])} samples")


@click.command("order-diagnostic")
@click.option("--checkpoint", required=True, type=GivenPath(file_okay=False, path_type=Path),
              help="Denoiser checkpoint folder.")
@click.option("--policy", required=True, type=GivenPath(file_okay=False, path_type=Path), help="Policy folder.")
@click.option("--steps", required=True, type=click.IntRange(1), help="Step budget T.")
@click.option("--seed", default=0, show_default=True, type=int, help="Picks the examples and the draws.")
@click.option("--n-examples", default=500, show_default=True, type=click.IntRange(1), help="Examples N.")
@click.option("--out", required=True, type=GivenPath(dir_okay=False, path_type=Path),
              help="metrics.h5 of the shuffled run (its diag.* attributes hold the figures).")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--force", is_flag=True, help="Replace an existing --out file (without it, one is never written over).")
def order_diagnostic(checkpoint: Path, policy: Path, steps: int, seed: int, n_examples: int, out: Path,
                     device: str, as_json: bool, force: bool) -> None:
    """Does the learned order depend on the prompt? Distinct schedules per 100 prompts, and the accuracy when
    every prompt gets another prompt's schedule (same counts, same NFE).

    \b
    Examples:
      merlin-mdm mdm order-diagnostic --checkpoint runs/den --policy runs/order_T2 --steps 2 --out m/shuffled.h5
      merlin-mdm mdm order-diagnostic --checkpoint runs/den --policy runs/order_T2 --steps 2 --out m/s.h5 --json
    """
    from merlin_mdm.cli.mdm import warn_other_denoiser  # deferred: cli.mdm imports this module
    from merlin_mdm.mdm.evaluation import EvalConfig, write_eval
    from merlin_mdm.mdm.order.diagnostics import order_diagnostic as diagnose

    _check_new_file(out, force)
    config = EvalConfig(checkpoint=str(checkpoint), sampler="learned", steps=steps, seed=seed,
                        n_examples=n_examples, policy_dir=str(policy), device=device)
    own, shuffled = diagnose(config)
    warn_other_denoiser(own.attrs, policy, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_eval(shuffled, out)
    figures = {k: v for k, v in shuffled.attrs.items() if k.startswith("diag.") or k in ("accuracy", "mean_nfe")}
    if as_json:
        click.echo(json.dumps({"path": str(out), **figures}, indent=2, sort_keys=True))  # `path`, as eval's
        return
    click.echo(f"{out}: {figures['diag.distinct_schedules_per_100']:.1f} distinct schedules and "
               f"{figures['diag.distinct_first_steps_per_100']:.1f} distinct first steps per 100 prompts; accuracy "
               f"{figures['diag.accuracy_unshuffled']:.1%} own schedules, {figures['accuracy']:.1%} shuffled")


def _check_new_file(out: Path, force: bool) -> None:
    """Before any work: --out must be a file to create (or, with --force, one to replace), in a folder that can
    hold it. A metrics file written over is another run lost; a results file, a whole study's."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name the metrics file to write (e.g. {out}/shuffled.h5)")
    if out.exists() and not force:
        raise UsageError(f"--out {out} exists: it is not written over; name another file, or pass --force to "
                         "replace it")
    _check_parent(out, "--out")


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing folder above ``path`` must be a folder (a file there fails only at the end)."""
    for above in path.absolute().parents:
        if above.exists():
            if not above.is_dir():
                raise UsageError(f"{option} {path}: {above} is a file, not a folder; name another path")
            return
