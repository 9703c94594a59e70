"""Compare every loss-weighting strategy on scale-mismatched tasks (chapter 12.4's table).

The funnel simulator with dwell time gives three tasks on very different scales: click and
purchase log-losses (≈ 0.1) and the dwell-time squared error in seconds² (hundreds), defined
on clicked impressions only. One model (Shared-Bottom by default) is trained under every
strategy of :func:`mtlbook.weighting.standard_strategies`, over several seeds; the script
prints the test metrics per task (mean and 95 % interval over seeds) and each strategy's
training time per epoch relative to equal weights, paired by seed in the same run.

Model selection (best epoch, early stopping) uses the validation click AUC: the default
monitor, the sum of the validation losses, is itself dominated by the dwell-time MSE and would
pick the epoch with the best dwell time for every strategy, hiding what the weighting did to
the other tasks.

    python benchmarks/bench_weighting.py                 # defaults below
    python benchmarks/bench_weighting.py --seeds 5 --model MMoE
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

import mtlbook as mb
from mtlbook import models
from mtlbook.analysis.intervals import mean_interval
from mtlbook.analysis.runs import repeat_fits, time_overhead
from mtlbook.weighting import standard_strategies

METRICS = {"click": "auc", "purchase": "auc", "dwell_time": "mse"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SharedBottom", choices=models.__all__)
    parser.add_argument("--impressions", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def make_data(seed: int):
        return mb.simulate_funnel(
            args.impressions, seed=seed, with_dwell_time=True, n_users=1000, n_items=500
        )

    # Manual weights: scale the dwell-time MSE down to the size of the log-losses.
    strategies = standard_strategies(
        fixed_weights={"click": 1.0, "purchase": 1.0, "dwell_time": 1e-3},
        schedule={
            "initial_weights": {"click": 1.0, "purchase": 1.0, "dwell_time": 1e-3},
            "ratios": {"click": 1.0, "purchase": 1.1, "dwell_time": 1.0},
        },
    )
    model_cls = getattr(models, args.model)
    start = time.perf_counter()
    factory = {args.model: lambda schema, seed: model_cls(schema, seed=seed)}
    results = repeat_fits(
        make_data,
        factory,
        range(args.seeds),
        weightings=strategies,
        epochs=args.epochs,
        batch_size=512,
        lr=args.lr,
        early_stopping=3,
        monitor="click:auc",
    )
    elapsed = time.perf_counter() - start

    wanted = pd.Series(METRICS).rename("metric").rename_axis("task").reset_index()
    rows = results.merge(wanted, on=["task", "metric"])
    summary = mean_interval(rows, ["weighting", "task", "metric"])
    summary["cell"] = summary.apply(
        lambda r: f"{r['mean']:.4g} [{r['lo']:.4g}, {r['hi']:.4g}]", axis=1
    )
    table = summary.pivot(index="weighting", columns="task", values="cell")[list(METRICS)]
    overhead = time_overhead(results).set_index("weighting")
    table["time/epoch vs equal"] = overhead["ratio"].map("{:.2f}x".format)
    table = table.loc[list(strategies)]
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), model {args.model}, "
        f"{args.impressions} impressions, {args.seeds} seeds, ≤ {args.epochs} epochs; "
        f"test metrics: click/purchase AUC (↑), dwell_time MSE in s² (↓); "
        f"mean [95 % interval]; total {elapsed:.0f} s"
    )
    with pd.option_context("display.width", 200, "display.max_columns", 10):
        print(table.to_string())


if __name__ == "__main__":
    main()
