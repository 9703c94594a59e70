"""Training throughput of :func:`mtlbook.fit` on one process vs several (DistributedDataParallel).

The same run (an MMoE on the simulated funnel with dwell time, the same global batch) is
trained by: one plain process with ``T`` threads (the baseline) and with ``P × T`` threads,
and ``torchrun`` groups of 1 and ``P`` processes with ``T`` threads each (gloo on the CPU).
Throughput is counted in training samples per second over the training steps only: within
every epoch, from the end of its first step to the end of its last (validation, start-up and
the first step's warm-up excluded). The runs are repeated, interleaved, and the median is
printed with the range. The processes' final
validation losses are printed too: they agree up to rounding.

    python benchmarks/bench_distributed.py                       # defaults below
    python benchmarks/bench_distributed.py --processes 4 --impressions 400000

The numbers depend on the machine and on what else runs on it: the script prints the load
average (``os.getloadavg``) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mtlbook as mb
from mtlbook.models import MMoE
from mtlbook.training import distributed


class _StepClock(mb.Callback):
    """Samples per second over the training steps of each epoch (rank 0 calls it)."""

    def __init__(self, n_train: int, batch_size: int) -> None:
        self.n_train, self.batch_size = n_train, batch_size
        self.stamps: list[float] = []
        self.samples, self.seconds = 0, 0.0

    def on_step_end(self, model, step, losses) -> None:
        self.stamps.append(time.perf_counter())

    def on_epoch_end(self, model, epoch, history) -> None:
        steps = len(self.stamps)
        # Steps 2 .. n of the epoch: full batches except possibly the last one.
        last = self.n_train - (steps - 1) * self.batch_size
        self.samples += (steps - 2) * self.batch_size + last
        self.seconds += self.stamps[-1] - self.stamps[0]
        self.stamps = []


def worker(args: argparse.Namespace) -> None:
    """One run (on every process of a torchrun group, or alone); rank 0 writes the result."""
    torch.set_num_threads(args.threads)
    if "RANK" in os.environ:
        distributed.init("gloo")
    data = mb.simulate_funnel(args.impressions, seed=0, with_dwell_time=True)
    train, valid = data.split((0.95, 0.05), seed=0)
    model = MMoE(
        train.schema,
        n_experts=args.experts,
        expert_units=(args.units,),
        tower_units=(args.units // 2,),
        seed=0,
    )
    clock = _StepClock(len(train), args.batch_size)
    result = mb.fit(
        model,
        train,
        valid,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=1e-3,
        device="cpu",
        progress=False,
        callbacks=[clock],
    )
    if distributed.is_main_process():
        final = result.history.query("split == 'valid' and task == 'all' and metric == 'loss'")
        Path(args.out).write_text(
            json.dumps(
                {
                    "samples_per_s": clock.samples / clock.seconds,
                    "valid_loss": float(final["value"].iloc[-1]),
                    "processes": distributed.world_size(),
                    "threads": torch.get_num_threads(),
                }
            )
        )
    if distributed.is_distributed():
        torch.distributed.destroy_process_group()


def launch(args: argparse.Namespace, processes: int | None, threads: int, out: Path) -> dict:
    """Run :func:`worker` plainly (``processes=None``) or under torchrun."""
    options = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in (
            ("impressions", args.impressions),
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("experts", args.experts),
            ("units", args.units),
        )
    ]
    tail = [
        str(Path(__file__).resolve()),
        "--worker",
        f"--out={out}",
        f"--threads={threads}",
        *options,
    ]
    command = (
        [sys.executable, *tail]
        if processes is None
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            *tail,
        ]
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--impressions", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048, help="the global batch")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    setups = {
        f"1 plain process × {args.threads} threads": (None, args.threads),
        f"1 plain process × {args.processes * args.threads} threads": (
            None,
            args.processes * args.threads,
        ),
        f"torchrun 1 process × {args.threads} threads": (1, args.threads),
        f"torchrun {args.processes} processes × {args.threads} threads": (
            args.processes,
            args.threads,
        ),
    }
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average before "
        f"{os.getloadavg()[0]:.2f}; {args.impressions:,} impressions (95 % train), MMoE "
        f"{args.experts} experts × [{args.units}], global batch {args.batch_size}, "
        f"{args.epochs} epochs, {args.repeats} repeats"
    )
    results: dict[str, list[dict]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for name, (processes, threads) in setups.items():
                out = Path(folder) / f"{repeat}-{len(results[name])}-{processes}.json"
                results[name].append(launch(args, processes, threads, out))
    base = statistics.median(r["samples_per_s"] for r in results[next(iter(setups))])
    print(
        f"{'setup':40s} {'samples/s (median)':>19s} {'range':>17s} {'vs plain':>9s} "
        f"{'valid loss':>11s}"
    )
    for name, runs in results.items():
        rates = [r["samples_per_s"] for r in runs]
        median = statistics.median(rates)
        print(
            f"{name:40s} {median:19,.0f} {min(rates):8,.0f}–{max(rates):<8,.0f} "
            f"{median / base:8.2f}× {runs[-1]['valid_loss']:11.5f}"
        )
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
