"""Sampler throughput on CPU. Prints figures; not a test.

    python benchmarks/bench_samplers.py [--checkpoint DIR] [--batch 250] [--budgets 2,4,8,16] [--threads 1]

For every registered heuristic sampler (and ``top_prob`` with ``blocks=4``) and each budget T: sequences/s and
denoiser calls/s of :func:`generate`, plus the time of one bare denoiser call for reference. Without
--checkpoint a randomly initialised denoiser of the flagship shape (blocks NB=4 BL=4, d_model 64, 2 layers)
is used; fixed-budget samplers' timing does not depend on the weights, adaptive ones' NFE does.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from merlin_mdm.mdm.checkpoint import load_denoiser
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig
from merlin_mdm.mdm.runtime import configure_threads
from merlin_mdm.mdm.samplers import generate, make_sampler
from merlin_mdm.mdm.tasks import Task, make_task

CASES: list[tuple[str, dict[str, Any]]] = [("iid", {}), ("top_prob", {}), ("margin", {}), ("entropy", {}),
                                           ("threshold", {"tau": 0.9}), ("eb", {"gamma": 0.5}),
                                           ("top_prob", {"blocks": 4})]


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds per call (robust to other processes sharing the cores)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _model(checkpoint: str | None) -> tuple[Denoiser, Task]:
    if checkpoint:
        loaded = load_denoiser(checkpoint)
        return loaded.model, loaded.task
    task = make_task("blocks", nb=4, bl=4)
    return Denoiser(DenoiserConfig(task.vocab_size, task.seq_len, task.mask_id)).eval(), task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--budgets", default="2,4,8,16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    model, task = _model(args.checkpoint)
    prompts = task.sample(args.batch, torch.Generator().manual_seed(0))[:, : task.prompt_len]
    x = task.sample(args.batch, torch.Generator().manual_seed(1))
    with torch.no_grad():
        call = _median_time(lambda: model(x), args.repeats)
    print(f"task {task.name} {task.knobs()}  batch {args.batch}  threads {threads}")
    print(f"one denoiser call: {call * 1e3:.2f} ms  ({args.batch / call:,.0f} sequence-calls/s)")
    print("calls/s = batched denoiser calls per second; seq-calls/s = calls/s x batch")
    print(f"{'sampler':<22}{'T':>4}{'mean NFE':>10}{'seq/s':>10}{'calls/s':>9}{'seq-calls/s':>13}{'ms/step':>9}")
    for name, knobs in CASES:
        for budget in [int(b) for b in args.budgets.split(",")]:
            if budget < knobs.get("blocks", 1):
                continue
            sampler = make_sampler(name, **knobs)
            gen = torch.Generator().manual_seed(2)
            box: dict[str, Any] = {}

            def run(s: Any = sampler, g: torch.Generator = gen, t: int = budget, b: dict[str, Any] = box) -> None:
                b["out"] = generate(model, prompts, task.answer_len, s, t, g)

            seconds = _median_time(run, args.repeats)
            nfe = float(box["out"].nfe.float().mean())
            label = name + "".join(f" {k}={v}" for k, v in knobs.items())
            steps = float(box["out"].nfe.max())  # batched calls made (rows finish at different steps)
            print(f"{label:<22}{budget:>4}{nfe:>10.2f}{args.batch / seconds:>10,.0f}{steps / seconds:>9,.1f}"
                  f"{nfe * args.batch / seconds:>13,.0f}{seconds / max(steps, 1) * 1e3:>9.2f}")


if __name__ == "__main__":
    main()
