"""Denoiser training throughput on CPU (tokens/s). Prints figures; not a test.

    python benchmarks/bench_training.py [--steps 30] [--batch-sizes 64,128,256] [--threads 1,2]

Times the MDLM training step (sample a batch, mask, forward, loss, backward, AdamW) for the flagship shape
(blocks NB=4 BL=4, d_model 64, 2 layers, ~0.1M parameters) at several batch sizes and thread counts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from merlin_mdm.mdm.training import TrainConfig, _Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-sizes", default="64,128,256")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    args = parser.parse_args()
    print(f"{'threads':>8}{'batch':>7}{'ms/step':>10}{'tokens/s':>12}{'seq/s':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            for batch in [int(b) for b in args.batch_sizes.split(",")]:
                cfg = TrainConfig(batch_size=batch, d_model=args.d_model, n_layers=args.n_layers, threads=threads)
                run = _Run(cfg, Path(tmp) / f"{threads}_{batch}", resume=False)
                run.one_step()
                times = []
                for _ in range(args.steps):
                    start = time.perf_counter()
                    run.one_step()
                    times.append(time.perf_counter() - start)
                step = statistics.median(times)
                tokens = batch * run.task.seq_len
                print(f"{threads:>8}{batch:>7}{step * 1e3:>10.2f}{tokens / step:>12,.0f}{batch / step:>10,.0f}")
    print(f"model: {run.model.n_params():,} parameters, sequence length {run.task.seq_len}")


if __name__ == "__main__":
    main()
