"""Command line: ``python -m mtlbook COMMAND ...``, four commands.

``compare`` runs :func:`mtlbook.analysis.compare.compare`: models (× loss weightings) over
seeds on generated data, a table of test metrics with intervals::

    python -m mtlbook compare --data funnel --models single,shared_bottom,mmoe,ple --seeds 5
    python -m mtlbook compare --data correlated:0.5 --models single,mmoe \\
        --weightings equal,uncertainty --epochs 20 --early-stopping 3 --csv results.csv

It prints the test metrics per configuration (mean and interval over seeds) and, with
``--baseline``, the paired gains over that model. A bad model, weighting, data or metric name
exits with status 2 and a message listing the valid names.

``train``, ``predict`` and ``evaluate`` (:mod:`mtlbook.cli`) take a user's own files: train a
model and save the run (:func:`mtlbook.save`), score a file with a saved run, print a saved
run's metrics on a labelled file::

    python -m mtlbook train train.csv --test test.csv --layout aliexpress --model mmoe \\
        --epochs 5 --out runs/mmoe
    python -m mtlbook predict runs/mmoe test.csv -o scores.parquet --keep search_id
    python -m mtlbook evaluate runs/mmoe test.csv --metrics auc,logloss

Their errors (a missing file or column, a bad option, a run of another version) print one
line ``error: ...`` on stderr and exit with status 2. ``python -m mtlbook COMMAND --help``
shows each command's options and examples.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .cli import _positive_int, add_commands


def _names_epilog() -> str:
    from .analysis.compare import DATA_NAMES, MODEL_NAMES
    from .weighting import standard_strategies

    lines = ["models (--models, comma-separated; class names such as MMoE work too):"]
    lines += [f"  {name:<14} {text}" for name, text in MODEL_NAMES.items()]
    lines += ["", "data (--data):"]
    lines += [f"  {name:<20} {text}" for name, text in DATA_NAMES.items()]
    lines += [
        "",
        "weightings (--weightings, comma-separated):",
        "  " + ", ".join(standard_strategies()),
        "",
        "example:",
        "  python -m mtlbook compare --data funnel --models single,shared_bottom,mmoe,ple "
        "--seeds 5 --epochs 10",
    ]
    return "\n".join(lines)


def _split_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the documentation and the tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m mtlbook",
        description="mtlbook: multi-task learning for recommender systems.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmp = commands.add_parser(
        "compare",
        help="train models over seeds and print a table with intervals",
        description="Train every model (under every loss weighting) on every seed, select each "
        "fit's epoch on the validation split and print the test metrics: mean and "
        "Student-t interval over seeds.",
        epilog=_names_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp.add_argument(
        "--data",
        default="funnel",
        help="data name, e.g. funnel, funnel_dwell, correlated:0.5, "
        "correlated-binary:0.9 (default: funnel)",
    )
    cmp.add_argument(
        "--models",
        type=_split_names,
        default=["single", "shared_bottom"],
        help="comma-separated model names (default: single,shared_bottom)",
    )
    cmp.add_argument(
        "--weightings",
        type=_split_names,
        default=None,
        help="comma-separated loss weightings (default: equal weights)",
    )
    cmp.add_argument(
        "--seeds", type=_positive_int, default=5, help="number of seeds, 0 … N-1 (default: 5)"
    )
    cmp.add_argument(
        "--samples",
        type=_positive_int,
        default=None,
        help="size of the generated data (default: 50000 impressions for the "
        "funnel, 5000 samples for correlated tasks)",
    )
    cmp.add_argument("--epochs", type=_positive_int, default=10, help="maximum epochs (10)")
    cmp.add_argument(
        "--early-stopping",
        type=_positive_int,
        default=None,
        metavar="PATIENCE",
        help="stop after this many epochs without validation improvement",
    )
    cmp.add_argument("--batch-size", type=_positive_int, default=256, help="batch size (256)")
    cmp.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (0.001)")
    cmp.add_argument(
        "--metrics",
        type=_split_names,
        default=None,
        help="comma-separated metrics to show, e.g. auc,mse (default: all)",
    )
    cmp.add_argument(
        "--confidence", type=float, default=0.95, help="interval level (default: 0.95)"
    )
    cmp.add_argument(
        "--baseline",
        default=None,
        help="also print the paired gain (%%) of every model over this one, e.g. single",
    )
    cmp.add_argument(
        "--csv", default=None, metavar="PATH", help="write the per-seed results here (atomically)"
    )
    cmp.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )
    cmp.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    cmp.add_argument("--progress", action="store_true", help="show a progress bar")
    cmp.set_defaults(run=_compare, command_parser=cmp)
    add_commands(commands)
    return parser


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import pandas as pd
    import torch

    from .analysis.compare import _plan, _run

    if not 0 < args.confidence < 1:
        parser.error(f"--confidence must lie in (0, 1), got {args.confidence}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        plan = _plan(
            args.models, args.data, args.weightings, args.seeds, args.samples, args.metrics
        )
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    if args.baseline is not None and args.baseline not in plan.models:
        parser.error(f"--baseline {args.baseline!r} is not among --models {list(plan.models)}")
    fit_kwargs = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "early_stopping": args.early_stopping,
        "device": args.device,
    }
    result = _run(
        plan,
        fractions=(0.6, 0.2, 0.2),
        metrics=args.metrics,
        confidence=args.confidence,
        csv=args.csv,
        progress=args.progress,
        **fit_kwargs,
    )
    elapsed = time.perf_counter() - start
    print(
        f"data {args.data}, {args.seeds} seed(s), ≤ {args.epochs} epochs; test metrics, "
        f"mean [{args.confidence:.0%} interval] over seeds; {elapsed:.0f} s"
    )
    with pd.option_context(
        "display.width", 200, "display.max_columns", 50, "display.max_colwidth", 40
    ):
        print(result.table(wide=True).to_string())
        if args.baseline is not None:
            gains = result.gains(args.baseline)
            wide = gains.pivot(
                index=["model", "weighting"], columns=["task", "metric"], values="formatted"
            )
            print(f"\ngain over {args.baseline} in % (positive = better), paired by seed")
            print(wide.to_string())
    if args.csv is not None:
        print(f"\nper-seed results written to {args.csv}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in a saved run
    return args.run(args, args.command_parser)


if __name__ == "__main__":
    sys.exit(main())
