"""Benchmark: batched ParallelMLP against a Python loop of per-network nn.Sequential MLPs.

Both compute the same thing, ``P`` independent MLPs on one input (the experts of a mixture, or
one tower per task). The peer is the straightforward PyTorch code that other MTL libraries use
(a ``ModuleList`` of ``nn.Sequential`` and a loop). Both are timed in the same run, interleaved,
forward plus backward; the script prints the median time per step of each, their ratio (the
speed-up of the batched op) and the interquartile range of the per-repeat ratio.

    python benchmarks/bench_parallel_mlp.py            # default sizes
    python benchmarks/bench_parallel_mlp.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mtlbook.models import ParallelMLP


def loop_peer(n_parallel: int, in_dim: int, units: tuple[int, ...]) -> nn.ModuleList:
    nets = []
    for _ in range(n_parallel):
        layers, size = [], in_dim
        for i, u in enumerate(units):
            layers.append(nn.Linear(size, u))
            if i < len(units) - 1:
                layers.append(nn.ReLU())
            size = u
        nets.append(nn.Sequential(*layers))
    return nn.ModuleList(nets)


def time_pair(first, second, x: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """Median step time of ``first`` and ``second`` (forward + backward), interleaved, and the
    interquartile range of the per-repeat ratio first/second."""
    for _ in range(5):  # warm-up
        first(x).sum().backward()
        second(x).sum().backward()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((first, a), (second, b)):
            start = time.perf_counter()
            fn(x).sum().backward()
            out.append(time.perf_counter() - start)
    ratios = sorted(p / q for p, q in zip(a, b, strict=True))
    iqr = ratios[3 * len(ratios) // 4] - ratios[len(ratios) // 4]
    return statistics.median(a), statistics.median(b), iqr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeats = 20 if args.quick else 200
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, median of {repeats}")
    print(
        f"{'P':>3} {'batch':>6} {'in':>4} {'units':>10} {'loop ms':>9} {'batched ms':>11} "
        f"{'speed-up':>9} {'IQR':>6}"
    )
    for n_parallel, batch, in_dim, units in [
        (4, 512, 64, (64, 32)),
        (8, 512, 64, (64, 32)),
        (16, 512, 64, (64, 32)),
        (8, 2048, 128, (128, 64)),
    ]:
        x = torch.randn(batch, in_dim)
        batched = ParallelMLP(n_parallel, in_dim, units)
        peer = loop_peer(n_parallel, in_dim, units)
        t_loop, t_batched, iqr = time_pair(
            lambda v, peer=peer: torch.stack([net(v) for net in peer]), batched, x, repeats
        )
        print(
            f"{n_parallel:>3} {batch:>6} {in_dim:>4} {units!s:>10} {1e3 * t_loop:>9.3f} "
            f"{1e3 * t_batched:>11.3f} {t_loop / t_batched:>8.2f}x {iqr:>6.2f}"
        )


if __name__ == "__main__":
    main()
