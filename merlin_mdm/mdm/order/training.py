"""Training the order policy (and its posterior) against a frozen denoiser.

One iteration: draw B examples from the task's training split, repeat each K times, and take one Adam step on
the loss of the configured objective (:mod:`.objectives`). The default, ``elbo``, runs K posterior rollouts of
each clean example through T steps (the denoiser fills revealed positions with the true tokens, as in the
ELBO) and maximises the surrogate of :func:`merlin_mdm.mdm.order.elbo.surrogate_objective`, normalised per
answer token. ``reward`` (:mod:`.reward`) instead generates K answers from each prompt with the policy and
maximises the task's score of them by REINFORCE.

Two extensions of the paper's recipe, both off by default:

* ``budgets``: one policy for several budgets. Each iteration draws T from the list (seeded); the policy sees
  the step as a fraction of T and the steps left, so it can be run at any of them.
* ``nfe_penalty`` (lambda, nats per denoiser call for the ELBO; score per call for ``reward``, whose return is
  simply score - lambda * NFE): adaptive compute. A row whose posterior draw reveals every
  remaining position is finished and costs no further denoiser call; the objective subtracts
  lambda * P(some position is still masked after step t) = lambda * (1 - prod_i q_t,i) at each step but the
  last (Rao-Blackwellised, so differentiable in q). The policy, trained to match the posterior, learns when
  to reveal everything; at sampling time it stops early by revealing all positions with p_i >= 1/2.

Training stops after ``iterations`` Adam steps, never on wall time, so a result does not depend on the
machine's speed. With ``select_every`` > 0 the networks returned are the best iterate on validation prompts
(:mod:`.selection`), not the last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from merlin_mdm.errors import Interrupted, MdmError
from merlin_mdm.mdm.order import imitation as _imitation  # noqa: F401  (registers ``imitate``)
from merlin_mdm.mdm.order import reward as _reward  # noqa: F401  (registers ``reward``)
from merlin_mdm.mdm.order.bernoulli import posterior_bernoulli
from merlin_mdm.mdm.order.elbo import surrogate_objective, within_step_terms
from merlin_mdm.mdm.order.features import order_inputs, true_token_feature
from merlin_mdm.mdm.order.networks import OrderNet, OrderNetConfig
from merlin_mdm.mdm.order.objectives import (
    OBJECTIVES,
    DenoiserFn,
    ObjectiveBatch,
    OrderObjective,
    denoise_frozen,
    make_objective,
    register_objective,
)
from merlin_mdm.mdm.order.policies import make_reveal_policy
from merlin_mdm.mdm.order.resume import TrainingStateFile
from merlin_mdm.mdm.order.selection import SELECTION_CRITERIA, ValidationSelector

__all__ = [
    "ElboObjective",
    "OrderTrainConfig",
    "OrderTrainResult",
    "RolloutTrace",
    "TrainingSaving",
    "rollout",
    "tau_at",
    "train_order",
]


class _Task(Protocol):
    vocab_size: int
    mask_id: int
    prompt_len: int
    answer_len: int

    def sample_split(self, n: int, generator: torch.Generator, split: str) -> Tensor: ...

    def score(self, x: Tensor) -> Tensor: ...


def _numeric_knobs(option: str, knobs: Any) -> tuple[tuple[str, float], ...]:
    """KEY=VALUE knobs whose values must all be numbers (a teacher's or a prior's)."""
    out = []
    for key, value in dict(knobs).items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise MdmError(f"train-order: {option} {key}={value!r}: expected a number")
        try:
            out.append((str(key), float(value)))
        except ValueError:
            raise MdmError(f"train-order: {option} {key}={value!r}: expected a number") from None
    return tuple(out)


@dataclass(frozen=True)
class OrderTrainConfig:
    """Knobs of ``train-order``; stored in the policy's meta.json."""

    budget: int  # T, the number of denoiser calls per sequence the policy is trained for (>= 2)
    budgets: tuple[int, ...] = ()  # several budgets for one policy: T drawn per iteration (empty: just budget)
    nfe_penalty: float = 0.0  # lambda per denoiser call: nats (elbo) or score points (reward); 0: spend T calls
    objective: str = "elbo"  # registered objective: elbo (order ELBO) or reward (REINFORCE on task.score)
    policy_kind: str = "bernoulli"  # registered policy kind: bernoulli (factorised), sequential(-onepass) (picks)
    token_temperature: float = 1.0  # reward rollouts fill tokens like evaluation: 1.0 samples, 0 is argmax
    common_token_noise: bool = False  # reward: one Gumbel token noise per prompt's K rollouts (common random numbers)
    init_policy: str | None = None  # start from this trained policy folder (its networks' shapes win)
    teacher: str = "eb"  # imitate: the registered sampler the policy learns to copy
    teacher_knobs: tuple[tuple[str, float], ...] = ()  # imitate: the teacher's knobs, e.g. (("gamma", 0.1),)
    prior: str = ""  # sequential kinds: a heuristic prior the policy's logits add to (.priors; "": none)
    prior_knobs: tuple[tuple[str, float], ...] = ()  # the prior's knobs, e.g. (("tau", 0.9),)
    prior_scale: float = 1.0  # the prior's logits are multiplied by this
    prior_stop_scale: float | None = None  # the prior's stop margin is multiplied by this (None: prior_scale)
    tau: float = 0.1  # final posterior temperature: q_i = exp((s_i - max s) / tau)
    tau_start: float | None = (
        None  # initial temperature, annealed geometrically to tau over anneal_frac (None: constant)
    )
    anneal_frac: float = 0.5  # fraction of the iterations over which tau_start -> tau
    rollouts: int = 4  # K posterior rollouts per example (leave-one-out baseline; >= 2)
    batch_size: int = 32  # B clean examples per iteration
    iterations: int = 200  # Adam steps: the whole training budget (never wall time)
    lr_policy: float = 3e-3  # Adam learning rate of p_theta
    lr_posterior: float = 3e-3  # Adam learning rate of q_phi
    grad_clip: float = 1.0  # global gradient-norm clip
    d_model: int = 32  # width of both order networks
    n_layers: int = 1  # transformer layers of both order networks
    n_heads: int = 2  # attention heads
    seed: int = 0  # seeds the data, the rollouts and the initialisation
    select_every: int = 0  # validate every N iterations and keep the best iterate (0: keep the last one)
    select_samples: int = 256  # validation prompts (training split) decoded per budget when selecting
    select_by: str = "score"  # what the selection ranks iterates by: score, or return (score - nfe_penalty * NFE)

    def __post_init__(self) -> None:
        if self.budget < 2:
            raise MdmError(f"train-order: --budget must be >= 2 (step T-1 reveals everything), got {self.budget}")
        if self.tau <= 0 or (self.tau_start is not None and self.tau_start <= 0):
            raise MdmError("train-order: tau must be > 0")
        if self.rollouts < 2:
            raise MdmError(f"train-order: --rollouts must be >= 2 for the leave-one-out baseline, got {self.rollouts}")
        if self.select_every < 0:
            raise MdmError(f"train-order: select_every must be >= 0, got {self.select_every}")
        if self.select_by not in SELECTION_CRITERIA:
            raise MdmError(f"train-order: unknown select_by {self.select_by!r}; choose one of: "
                           f"{', '.join(sorted(SELECTION_CRITERIA))}")
        for name in ("batch_size", "iterations", "select_samples"):
            if getattr(self, name) < 1:
                raise MdmError(f"train-order: {name} must be >= 1")
        if not 0 < self.anneal_frac <= 1:
            raise MdmError("train-order: anneal_frac must be in (0, 1]")
        if any(b < 2 for b in self.budgets) or self.nfe_penalty < 0:
            raise MdmError(f"train-order: every budget must be >= 2 and nfe_penalty >= 0, got {self.budgets}, "
                           f"{self.nfe_penalty}")
        if self.objective not in OBJECTIVES:
            raise MdmError(f"train-order: unknown objective {self.objective!r}; choose one of: "
                           f"{', '.join(sorted(OBJECTIVES))}")
        make_reveal_policy(self.policy_kind)  # an unknown kind raises, listing the registered ones
        kinds = OBJECTIVES[self.objective].policy_kinds
        if kinds is not None and self.policy_kind not in kinds:
            raise MdmError(f"train-order: the {self.objective} objective trains policy kinds {', '.join(kinds)}, "
                           f"not {self.policy_kind!r} (train it with --objective reward)")
        if self.token_temperature < 0:
            raise MdmError(f"train-order: token_temperature must be >= 0, got {self.token_temperature}")
        if self.common_token_noise and self.objective != "reward":
            raise MdmError(f"train-order: common_token_noise couples the reward objective's rollouts; the "
                           f"{self.objective} objective has none")
        object.__setattr__(self, "budgets", tuple(int(b) for b in self.budgets))
        object.__setattr__(self, "teacher_knobs", _numeric_knobs("--teacher-knob", self.teacher_knobs))
        object.__setattr__(self, "prior_knobs", _numeric_knobs("--prior-knob", self.prior_knobs))
        if (self.prior_knobs or self.prior_scale != 1.0 or self.prior_stop_scale is not None) and not self.prior:
            raise MdmError("train-order: --prior-knob, --prior-scale and --prior-stop-scale need --prior")
        if self.prior_stop_scale is not None and not self.prior_stop_scale > 0:
            raise MdmError(f"train-order: --prior-stop-scale must be > 0, got {self.prior_stop_scale}")
        if self.prior and not make_reveal_policy(self.policy_kind).network_extras(self.d_model).get("stop_head"):
            raise MdmError(f"train-order: --prior needs a sequential policy kind, not {self.policy_kind!r}")

    @property
    def all_budgets(self) -> tuple[int, ...]:
        """The budgets trained for: ``budgets``, or ``(budget,)``."""
        return self.budgets or (self.budget,)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return asdict(self)


class RolloutTrace(NamedTuple):
    """What one batch of posterior rollouts produced, (N, T) each.

    Attributes:
        step_values: F_t = recon_t - kl_t (gradients to both networks).
        recon: the reconstruction terms, less the NFE penalty when there is one.
        kl: the KL terms.
        log_q_r: log q(r_t) of the drawn vectors (0 at the forced last step and once nothing is masked).
        revealed: (N, T) number of tokens revealed at each step.
    """

    step_values: Tensor
    recon: Tensor
    kl: Tensor
    log_q_r: Tensor
    revealed: Tensor


@dataclass
class OrderTrainResult:
    """The trained networks and the training curve."""

    policy: OrderNet
    posterior: OrderNet
    config: OrderTrainConfig
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per logged iteration
    seconds: float = 0.0  # wall time of training
    iterations: int = 0  # Adam steps taken
    selected_iteration: int | None = None  # the validated iterate the networks hold (None: the last one)


def tau_at(config: OrderTrainConfig, iteration: int) -> float:
    """The posterior temperature at an iteration (geometric anneal from tau_start to tau)."""
    if config.tau_start is None:
        return config.tau
    frac = min(1.0, iteration / max(1.0, config.anneal_frac * config.iterations))
    return float(config.tau_start * (config.tau / config.tau_start) ** frac)


def rollout(
    denoiser: DenoiserFn,
    policy: OrderNet,
    posterior: OrderNet,
    x0: Tensor,
    prompt_len: int,
    mask_id: int,
    budget: int,
    tau: float,
    generator: torch.Generator,
    rollouts: int = 1,
    nfe_penalty: float = 0.0,
) -> RolloutTrace:
    """Run posterior rollouts of clean sequences through T steps, recording the ELBO's terms.

    Args:
        denoiser: the frozen denoiser, x (N, L) -> output with ``logits`` and ``hidden``.
        policy: p_theta.
        posterior: q_phi.
        x0: (N, L) clean sequences; rows come in groups of ``rollouts`` identical copies.
        prompt_len: P, the prompt is never masked.
        mask_id: the mask token.
        budget: T.
        tau: posterior temperature.
        generator: draws r_t.
        rollouts: K; only used to compute the (identical) first denoiser call once per example.
        nfe_penalty: lambda; subtracted times P(masks remain after step t) from F_t (see the module docstring).

    Returns:
        The :class:`RolloutTrace`.
    """
    x = x0.clone()
    x[:, prompt_len:] = mask_id
    masked = x == mask_id  # (N, L)
    masked[:, :prompt_len] = False
    zeros = torch.zeros(x0.shape[0])
    cols: dict[str, list[Tensor]] = {"recon": [], "kl": [], "log_q_r": [], "revealed": []}
    for t in range(budget):
        logits, hidden = denoise_frozen(denoiser, x, rollouts if t == 0 else 1)
        log_p_x0 = torch.log_softmax(logits, -1).gather(-1, x0[..., None]).squeeze(-1)  # (N, L)
        log_p_x0 = torch.where(masked, log_p_x0, torch.zeros_like(log_p_x0))
        if t == budget - 1:
            cols["recon"].append(log_p_x0.sum(-1))
            cols["kl"].append(zeros)
            cols["log_q_r"].append(zeros)
            cols["revealed"].append(masked.sum(-1).float())
            break
        inputs = order_inputs(x, masked, logits, hidden, t, budget)
        post = posterior_bernoulli(posterior(inputs, true_token_feature(log_p_x0, masked)), masked, tau)
        terms = within_step_terms(post, log_p_x0, policy(inputs))
        r = post.sample(generator)
        remain = 1.0 - post.log_q.sum(-1).exp()  # (N,) P(r_t leaves a mask), 0 for finished rows
        cols["recon"].append(terms.recon - nfe_penalty * remain)
        cols["kl"].append(terms.kl)
        cols["log_q_r"].append(post.log_prob(r))
        cols["revealed"].append(r.sum(-1).float())
        x = torch.where(r, x0, x)
        masked = masked & ~r
    recon, kl = torch.stack(cols["recon"], 1), torch.stack(cols["kl"], 1)
    return RolloutTrace(
        step_values=recon - kl,
        recon=recon,
        kl=kl,
        log_q_r=torch.stack(cols["log_q_r"], 1),
        revealed=torch.stack(cols["revealed"], 1),
    )


def build_networks(
    config: OrderTrainConfig, vocab_size: int, seq_len: int, hidden_dim: int
) -> tuple[OrderNet, OrderNet]:
    """A (policy, posterior) pair: fresh and seeded by ``config.seed``, or copied from ``config.init_policy``.

    The policy network has the shape of ``config.policy_kind``.

    Raises:
        MdmError: the initial policy is of another kind, or was trained for another sequence length, vocabulary
            or hidden width.
    """
    torch.manual_seed(config.seed)
    shape = (vocab_size, seq_len, hidden_dim, config.d_model, config.n_layers, config.n_heads)
    policy_config = make_reveal_policy(config.policy_kind).network_config(*shape)
    if config.prior:  # the network's outputs start at exactly zero: the fresh policy is the heuristic itself
        policy_config = replace(policy_config, prior=config.prior, prior_knobs=config.prior_knobs,
                                prior_scale=config.prior_scale, prior_stop_scale=config.prior_stop_scale,
                                init_scale=0.0)
    policy = OrderNet(policy_config)
    posterior = OrderNet(OrderNetConfig(*shape, extra_dim=1))
    if config.init_policy is None:
        return policy, posterior
    from merlin_mdm.mdm.order.checkpoint import load_policy  # deferred: checkpoint is only needed here

    loaded = load_policy(config.init_policy)
    if loaded.kind != config.policy_kind:
        raise MdmError(f"train-order: --init-policy {config.init_policy} is a {loaded.kind} policy, not "
                       f"{config.policy_kind}")
    cfg = loaded.policy.config
    want = policy_config  # the prior asked for, with the same default for the stop scale
    if config.prior and (cfg.prior, cfg.prior_knobs, cfg.prior_scale, cfg.stop_scale) != (
            want.prior, want.prior_knobs, want.prior_scale, want.stop_scale):
        raise MdmError(f"train-order: --init-policy {config.init_policy} has the prior {cfg.prior or 'none'} "
                       f"{dict(cfg.prior_knobs)} at scale {cfg.prior_scale} (stop {cfg.stop_scale}), not --prior "
                       f"{want.prior} {dict(want.prior_knobs)} at scale {want.prior_scale} (stop {want.stop_scale}) "
                       f"(leave out --prior to keep its own)")
    if (cfg.seq_len, cfg.vocab_size, cfg.hidden_dim) != (seq_len, vocab_size, hidden_dim):
        raise MdmError(f"train-order: --init-policy {config.init_policy} was trained for sequences of {cfg.seq_len}, "
                       f"vocabulary {cfg.vocab_size}, hidden width {cfg.hidden_dim}; this denoiser has {seq_len}, "
                       f"{vocab_size}, {hidden_dim}")
    return loaded.policy.train(), (loaded.posterior or posterior).train()


@register_objective
class ElboObjective(OrderObjective):
    """The order ELBO (arXiv 2602.23968): posterior rollouts of the clean example, normalised per answer token."""

    name: ClassVar[str] = "elbo"

    def loss(self, batch: ObjectiveBatch) -> tuple[Tensor, dict[str, float]]:
        """Negative surrogate of :func:`surrogate_objective`; logs the ELBO's terms."""
        cfg, task = batch.config, batch.task
        trace = rollout(batch.denoiser, batch.policy, batch.posterior, batch.x0, task.prompt_len, task.mask_id,
                        batch.budget, batch.tau, batch.generator, cfg.rollouts, cfg.nfe_penalty)
        loss = -surrogate_objective(trace.step_values, trace.log_q_r, cfg.rollouts).mean() / task.answer_len
        a = task.answer_len
        return loss, {
            "elbo_per_token": trace.step_values.detach().sum(-1).mean().item() / a,
            "recon_per_token": trace.recon.detach().sum(-1).mean().item() / a,
            "kl_per_token": trace.kl.detach().sum(-1).mean().item() / a,
            "first_step_reveals": trace.revealed[:, 0].mean().item(),
        }


def _adam_step(objective: OrderObjective, optimizer: torch.optim.Optimizer, batch: ObjectiveBatch) -> dict[str, float]:
    """One Adam step on the objective's loss (gradient norm clipped); returns the figures to log.

    Raises:
        MdmError: training diverged (a loss or weights no longer finite): a policy saved from there decoded as if
            it were trained, and the reward objective's sampling ended in a traceback.
    """
    try:
        loss, figures = objective.loss(batch)
    except RuntimeError as exc:  # torch.multinomial over the probabilities of a policy whose weights diverged
        if "inf" not in str(exc) or "nan" not in str(exc):
            raise
        raise _diverged(batch.config, "its decisions' probabilities are not finite") from None
    if not bool(torch.isfinite(loss.detach())):
        raise _diverged(batch.config, f"loss {float(loss.detach())}")
    params = [*batch.policy.parameters(), *batch.posterior.parameters()]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, batch.config.grad_clip)
    optimizer.step()
    if not all(bool(torch.isfinite(param.detach()).all()) for param in params):
        raise _diverged(batch.config, "its weights are not finite")
    return dict(figures)


def _diverged(config: OrderTrainConfig, what: str) -> MdmError:
    return MdmError(f"train-order diverged ({what}): no policy is saved. Lower --lr (now {config.lr_policy:g}), "
                    "and start again in an empty --out")


@dataclass(frozen=True)
class TrainingSaving:
    """How a run keeps its progress through a stop (:mod:`.resume`).

    Attributes:
        state_file: where the state is saved every ``every`` iterations and on a stop (None: never).
        resume_from: a saved state to continue from (None: start at iteration 0).
        stop_requested: checked after every iteration; a signal number ends the run there (None: never).
    """

    state_file: TrainingStateFile | None = None
    resume_from: dict[str, Any] | None = None
    stop_requested: Callable[[], int | None] | None = None


@dataclass
class _Loop:
    """One training run: what it reads (denoiser, task, objective) and what it carries from iteration to iteration
    (the rest, all of it in a saved state, :mod:`.resume`)."""

    denoiser: DenoiserFn
    task: _Task
    objective: OrderObjective
    policy: OrderNet
    posterior: OrderNet
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator]  # data, rollouts, budgets
    selector: ValidationSelector | None
    result: OrderTrainResult

    def capture(self, seconds: float) -> dict[str, Any]:
        """The state after ``result.iterations`` Adam steps, ``seconds`` of training spent in all."""
        return {
            "iteration": self.result.iterations,
            "policy": self.policy.state_dict(),
            "posterior": self.posterior.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generators": {name: gen.get_state() for name, gen in self.generators.items()},
            "selector": None if self.selector is None else self.selector.state(),
            "history": self.result.history,
            "seconds": seconds,
        }

    def restore(self, state: dict[str, Any]) -> int:
        """Take back a captured state; returns the iteration to continue from."""
        self.policy.load_state_dict(state["policy"])
        self.posterior.load_state_dict(state["posterior"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, gen in self.generators.items():
            gen.set_state(state["generators"][name])
        if self.selector is not None and state["selector"] is not None:
            self.selector.load_state(state["selector"])
        self.result.history = list(state["history"])
        self.result.iterations = int(state["iteration"])
        self.result.seconds = float(state["seconds"])
        return self.result.iterations


def _start_loop(denoiser: DenoiserFn, task: _Task, hidden_dim: int, config: OrderTrainConfig,
                device: torch.device | None) -> _Loop:
    """Fresh networks, optimizer, generators and selector for a run of ``config``."""
    seq_len = task.prompt_len + task.answer_len
    policy, posterior = build_networks(config, task.vocab_size, seq_len, hidden_dim)
    if device is not None:
        policy.to(device)
        posterior.to(device)
    optimizer = torch.optim.Adam(
        [
            {"params": policy.parameters(), "lr": config.lr_policy},
            {"params": posterior.parameters(), "lr": config.lr_posterior},
        ]
    )
    generators = {name: torch.Generator().manual_seed(config.seed + offset)
                  for offset, name in enumerate(("data", "rollouts", "budgets"))}
    selector = ValidationSelector(denoiser, task, config) if config.select_every > 0 else None
    result = OrderTrainResult(policy=policy, posterior=posterior, config=config)
    return _Loop(denoiser, task, make_objective(config.objective), policy, posterior, optimizer, generators, selector,
                 result)


def train_order(
    denoiser: DenoiserFn,
    task: _Task,
    hidden_dim: int,
    config: OrderTrainConfig,
    progress: Callable[[dict[str, float]], None] | None = None,
    log_every: int = 25,
    device: torch.device | None = None,
    saving: TrainingSaving | None = None,
) -> OrderTrainResult:
    """Train p_theta (and, for the ELBO, q_phi) by the configured objective; the denoiser stays frozen.

    Args:
        denoiser: the frozen denoiser (put it in eval mode first).
        task: the task the denoiser was trained on (draws training examples; scores answers for ``reward``).
        hidden_dim: D, width of the denoiser's hidden state.
        config: training knobs.
        progress: called with each log entry (every ``log_every`` iterations and at the end).
        log_every: logging period in iterations.
        device: where the order networks run (default the CPU); they are initialised on the CPU, so the same
            seed gives the same initial weights anywhere, and data and random draws stay on the CPU.
        saving: where to save the training state as it goes, a state to continue from, and the stop-signal
            check (:class:`TrainingSaving`); None: none of these.

    Returns:
        The :class:`OrderTrainResult` (networks in eval mode). With ``config.select_every`` > 0 the networks hold
        the best validated iterate (:mod:`.selection`), and ``selected_iteration`` says which.

    Raises:
        Interrupted: ``saving.stop_requested`` reported a signal; the state after the iteration in flight is
            saved first (when ``saving.state_file`` is set).
    """
    loop = _start_loop(denoiser, task, hidden_dim, config, device)
    saving = saving or TrainingSaving()
    first = loop.restore(saving.resume_from) if saving.resume_from is not None else 0
    spent, start = loop.result.seconds, time.perf_counter()
    for it in range(first, config.iterations):
        _iterate(loop, it, log_every, progress)
        signum = saving.stop_requested() if saving.stop_requested is not None else None
        if saving.state_file is not None and (signum or saving.state_file.due(it + 1, config.iterations)):
            saving.state_file.save(loop.capture(spent + time.perf_counter() - start))
        if signum:
            raise Interrupted(signum)
    result = loop.result
    result.seconds = spent + time.perf_counter() - start
    if loop.selector is not None:
        result.selected_iteration = loop.selector.restore(loop.policy, loop.posterior)
    loop.policy.eval()
    loop.posterior.eval()
    return result


def _iterate(loop: _Loop, it: int, log_every: int, progress: Callable[[dict[str, float]], None] | None) -> None:
    """One Adam step (and a validation when due), logged every ``log_every`` iterations and at the last one."""
    config, task, result = loop.result.config, loop.task, loop.result
    gens = loop.generators
    tau = tau_at(config, it)
    budgets = config.all_budgets
    budget = budgets[int(torch.randint(len(budgets), (1,), generator=gens["budgets"]))]
    x0 = task.sample_split(config.batch_size, gens["data"], "train").repeat_interleave(config.rollouts, 0)
    batch = ObjectiveBatch(loop.denoiser, task, loop.policy, loop.posterior, x0, budget, tau, gens["rollouts"],
                           config)
    figures = _adam_step(loop.objective, loop.optimizer, batch)
    result.iterations = it + 1
    validated = loop.selector is not None and loop.selector.due(it + 1)
    if loop.selector is not None and validated:
        figures.update(loop.selector.observe(it + 1, loop.policy, loop.posterior))
    if validated or it % log_every == 0 or it == config.iterations - 1:
        result.history.append({"iteration": float(it), **figures, "tau": tau, "budget": float(budget)})
        if progress is not None:
            progress(result.history[-1])
