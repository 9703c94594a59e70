"""Many seeds at once: `fit_population` versus one `mtlbook.fit` per seed.

The MMoE paper's trainability study (Ma et al., KDD 2018) trains every model many times. This
script trains 32 seeds of the paper-sized MMoE (100 dense inputs from
``make_correlated_tasks``, 8 experts of 16 units, towers of 8 units, batch 256) on 10,000
samples, once as 32 sequential ``fit`` runs and once as one vectorised population, with the
same data, seeds, epochs and steps. It checks that both give the same numbers per seed (the
largest difference of the final validation losses and whether the best epochs agree) and
prints the times and the speed-up, repeated and interleaved (population, sequential, ...).

    python benchmarks/bench_population.py                # 32 seeds, 3 epochs, 2 threads
    python benchmarks/bench_population.py --seeds 64 --epochs 5 --threads 1
    python benchmarks/bench_population.py --device cuda  # on a GPU, unchanged otherwise
    python benchmarks/bench_population.py --harness      # mtlbook.analysis.compare, both trainers

With ``--harness`` it times :func:`mtlbook.analysis.compare` instead (single-task, Shared-Bottom and
MMoE on ``correlated:0.5``, every seed its own data): its default trainer, which trains each
configuration's seeds as one population, against ``trainer=train_jobs`` (one ``fit`` per
seed), and checks that the two tables agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import mtlbook as mb
from mtlbook.training.population import fit_population
from mtlbook.utils import resolve_device


def final_valid_loss(history) -> np.ndarray:
    rows = history[
        (history["split"] == "valid") & (history["task"] == "all") & (history["metric"] == "loss")
    ]
    return rows.sort_values("epoch").groupby("seed")["value"].last().to_numpy()


def harness(args) -> None:
    from mtlbook.analysis.runs import train_jobs

    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "device": args.device,
        "n_samples": args.samples,
    }
    models = ["single", "shared_bottom", "mmoe"]

    def run(**kwargs):
        return mb.compare(models, "correlated:0.5", seeds=args.seeds, **settings, **kwargs)

    run()  # warm-up
    times: dict[str, list[float]] = {"population": [], "sequential": []}
    for _ in range(args.repeats):
        for name, kwargs in (("population", {}), ("sequential", {"trainer": train_jobs})):
            start = time.perf_counter()
            out = run(**kwargs).raw
            times[name].append(time.perf_counter() - start)
            if name == "population":
                pop = out
            else:
                seq = out
    diff = np.abs(pop["value"].to_numpy() - seq["value"].to_numpy())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); compare({models}, "
        f"'correlated:0.5', seeds={args.seeds}), {args.samples} samples per seed (60/20/20), "
        f"batch {args.batch_size}, {args.epochs} epochs, {args.repeats} repeats"
    )
    print(
        f"max |metric, population − sequential| over the table: {diff.max():.2e}; "
        f"best epochs equal: {bool((pop['best_epoch'] == seq['best_epoch']).all())}"
    )
    for name, values in times.items():
        print(
            f"{name:>10}: {statistics.median(values):7.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    ratios = [s / p for s, p in zip(times["sequential"], times["population"], strict=True)]
    print(
        f"speed-up: {statistics.median(ratios):.1f}x (range {min(ratios):.1f}–"
        f"{max(ratios):.1f}x over repeats)"
    )


def gemm_floor(
    members: int, batch: int, n_in: int, n_out: int, device: str, repeats: int = 200
) -> float:
    """Seconds per member and step of the matrix products no implementation can skip: the
    first layer of the experts and the gates (``n_in`` inputs to ``n_out`` = experts × units +
    gates × experts outputs) forward and its weight gradient, as one batched matrix product
    per member (``torch.bmm`` over ``[members, batch, n_in]``), the median of ``repeats``."""
    x = torch.randn(members, batch, n_in, device=device)
    w = torch.randn(members, n_in, n_out, device=device)
    g = torch.randn(members, batch, n_out, device=device)
    xt = x.transpose(1, 2)

    def products() -> None:
        torch.bmm(x, w)
        torch.bmm(xt, g)
        if x.is_cuda:
            torch.cuda.synchronize()

    for _ in range(10):
        products()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        products()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--samples", type=int, default=10_000, help="training samples")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device",
        default="cpu",
        help='"cpu" (default), "cuda" or "auto": where both the population and the sequential '
        "runs train (the result tables come back to the CPU either way)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--harness",
        action="store_true",
        help="time mtlbook.analysis.compare with both trainers instead",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.harness:
        harness(args)
        return

    n_valid = args.samples // 5
    data = mb.make_correlated_tasks(args.samples + n_valid, 0.5, seed=0)
    train, valid = data.split((args.samples / len(data), n_valid / len(data)), seed=0)
    seeds = list(range(args.seeds))

    def make_model(seed: int) -> mb.models.MMoE:
        return mb.models.MMoE(
            train.schema, n_experts=8, expert_units=(16,), tower_units=(8,), seed=seed
        )

    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": 1e-3,
        "device": args.device,
    }

    def population():
        return fit_population(make_model, train, valid, seeds, **settings)

    def population_of_one():
        return fit_population(make_model, train, valid, seeds[:1], **settings)

    def sequential():
        return [
            mb.fit(make_model(s), train, valid, seed=s, progress=False, **settings) for s in seeds
        ]

    population()  # warm-up (vmap, allocator)
    times: dict[str, list[float]] = {"population": [], "sequential": [], "one": []}
    runs = (("population", population), ("sequential", sequential), ("one", population_of_one))
    for _ in range(args.repeats):
        for name, run in runs:
            start = time.perf_counter()
            out = run()
            times[name].append(time.perf_counter() - start)
            if name == "population":
                pop = out
            elif name == "sequential":
                seq = out

    pop_loss = final_valid_loss(pop.history)
    seq_loss = np.array(
        [final_valid_loss(r.history.assign(seed=s))[0] for s, r in zip(seeds, seq, strict=True)]
    )
    same_best = all(pop.summary["best_epoch"].to_numpy() == [r.best_epoch for r in seq])
    steps = args.epochs * -(-len(train) // args.batch_size)
    ratios = [s / p for s, p in zip(times["sequential"], times["population"], strict=True)]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); MMoE 8 experts × 16 "
        f"units, towers 8, {len(train)} training / {len(valid)} validation samples, "
        f"batch {args.batch_size}, {args.epochs} epochs ({steps} steps per seed), "
        f"{args.seeds} seeds, {args.repeats} repeats"
    )
    print(
        f"max |final validation loss, population − sequential| over seeds: "
        f"{np.abs(pop_loss - seq_loss).max():.2e} (losses ≈ {seq_loss.mean():.3f}); "
        f"best epochs equal: {same_best}"
    )
    for name, values in times.items():
        label = "population of 1" if name == "one" else name
        print(
            f"{label:>15}: {statistics.median(values):7.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    print(
        f"speed-up: {statistics.median(ratios):.1f}x (range {min(ratios):.1f}–"
        f"{max(ratios):.1f}x over repeats; fastest run vs fastest run "
        f"{min(times['sequential']) / min(times['population']):.1f}x)"
    )
    n_out = 8 * 16 + len(train.task_names) * 8  # 8 experts of 16 units, a gate of 8 per task
    device = str(resolve_device(args.device))
    floor = gemm_floor(args.seeds, args.batch_size, train.schema.n_dense, n_out, device)
    per_step = statistics.median(times["population"]) / (args.seeds * steps)
    marginal = [
        (k - one) / ((args.seeds - 1) * steps)
        for k, one in zip(times["population"], times["one"], strict=True)
    ]
    added = statistics.median(marginal) if args.seeds > 1 else float("nan")
    print(
        f"per member and step: population {1e3 * per_step:.3f} ms (all its time, validation "
        f"and selection included), {1e3 * added:.3f} ms added by each member beyond the "
        f"first; GEMM floor {1e3 * floor:.3f} ms (experts' and gates' first layer, forward and "
        f"weight gradient, measured now): {per_step / floor:.1f}x and {added / floor:.1f}x "
        "the floor"
    )


if __name__ == "__main__":
    main()
