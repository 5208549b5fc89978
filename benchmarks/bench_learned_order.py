"""Benchmark of the learned order's sampling overhead. Prints figures; not a test.

    python benchmarks/bench_learned_order.py [--checkpoint DIR] [--policy DIR] [--batch 256] [--budgets 2,4,8]

1. Per step: the time of one denoiser call against the time the `learned` sampler adds on top of it (feature
   extraction + one policy forward + decoding), at batch size B; their ratio is the overhead.
2. End to end: sequences/s and denoiser calls/s of `generate` with `learned` and with `top_prob` at each budget.

Without --checkpoint a randomly initialised denoiser of the flagship shape (blocks NB=4 BL=4, d_model 64, 2
layers) is used; without --policy an untrained policy of the default width. Timing does not depend on weights.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from merlin_mdm.mdm.model import Denoiser, DenoiserConfig
from merlin_mdm.mdm.order import OrderNet, OrderNetConfig, load_policy
from merlin_mdm.mdm.samplers import make_sampler
from merlin_mdm.mdm.samplers.base import StepState, generate
from merlin_mdm.mdm.samplers.learned import LearnedSampler
from merlin_mdm.mdm.tasks import make_task


def _timeit(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds per call (robust to other processes sharing the cores)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, OrderNet]:
    if args.checkpoint:
        from merlin_mdm.mdm.checkpoint import load_denoiser

        loaded = load_denoiser(args.checkpoint)
        model, task, hidden = loaded.model, loaded.task, loaded.config.d_model
    else:
        task = make_task("blocks")
        cfg = DenoiserConfig(
            vocab_size=task.vocab_size,
            seq_len=task.seq_len,
            mask_id=task.mask_id,
            d_model=64,
            n_layers=2,
            n_heads=4,
            d_ff=128,
            dropout=0.0,
        )
        model, hidden = Denoiser(cfg), 64
    if args.policy:
        policy = load_policy(args.policy).policy
    else:
        policy = OrderNet(OrderNetConfig(vocab_size=task.vocab_size, seq_len=task.seq_len, hidden_dim=hidden))
    return model.eval(), task, policy.eval()


def bench_step(model: Any, task: Any, policy: OrderNet, batch: int, repeats: int) -> None:
    prompts = task.sample(batch, torch.Generator().manual_seed(0))[:, : task.prompt_len]
    x = torch.full((batch, task.seq_len), task.mask_id)
    x[:, : task.prompt_len] = prompts
    with torch.no_grad():
        out = model(x)
        den = _timeit(lambda: model(x), repeats)
    state = StepState(
        x=x,
        masked=x == task.mask_id,
        logits=out.logits,
        hidden=out.hidden,
        step=0,
        budget=4,
        generator=torch.Generator().manual_seed(0),
    )
    sampler = LearnedSampler.from_policy(policy)
    pol = _timeit(lambda: sampler.select(state), repeats)
    n_pol = sum(p.numel() for p in policy.parameters())
    n_den = sum(p.numel() for p in model.parameters())
    print(
        f"[step] batch {batch}: denoiser call {den * 1e3:.2f} ms ({n_den:,} params), learned select "
        f"{pol * 1e3:.2f} ms ({n_pol:,} params): overhead ratio {pol / den:.3f} of one denoiser call"
    )


def bench_generate(model: Any, task: Any, policy: OrderNet, batch: int, budgets: list[int], repeats: int) -> None:
    prompts = task.sample(batch, torch.Generator().manual_seed(1))[:, : task.prompt_len]
    samplers = {"learned": LearnedSampler.from_policy(policy), "top_prob": make_sampler("top_prob")}
    for budget in budgets:
        for name, sampler in samplers.items():
            nfe: list[float] = []

            def run(sampler: Any = sampler, budget: int = budget, nfe: list[float] = nfe) -> None:
                with torch.no_grad():
                    res = generate(model, prompts, task.answer_len, sampler, budget, torch.Generator().manual_seed(2))
                nfe.append(float(res.nfe.float().sum()))

            sec = _timeit(run, repeats)
            print(
                f"[generate] {name:9s} T={budget:2d} batch {batch}: {batch / sec:8.0f} sequences/s, "
                f"{nfe[-1] / sec:8.0f} denoiser calls/s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="denoiser checkpoint directory (default: random flagship shape)")
    parser.add_argument("--policy", help="policy directory (default: untrained default-width policy)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--budgets", default="2,4,8")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, task, policy = _setup(args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, task {task.name} {task.knobs()}")
    bench_step(model, task, policy, args.batch, args.repeats)
    bench_step(model, task, policy, 1, args.repeats * 5)
    bench_generate(
        model, task, policy, args.batch, [int(b) for b in args.budgets.split(",")], max(2, args.repeats // 4)
    )


if __name__ == "__main__":
    main()
