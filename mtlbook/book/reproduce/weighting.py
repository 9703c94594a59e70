"""Full tier of chapter 12.4.1: the loss-weighting table at ten seeds and a converged budget.

The live run of chapter 12.4.1 trains a Shared-Bottom on the funnel with click,
purchase and dwell time (a regression in seconds whose loss is three to four orders of magnitude
larger than the log-losses) under every strategy of
:func:`~mtlbook.weighting.standard_strategies`, on three seeds and for at most ten epochs.
Uncertainty weighting and GradNorm then end near equal weights, and the chapter asks whether
that is a matter of budget: both *learn* their weights, and ten epochs may be too short.

This study trains the same model on the same data, under every strategy, on ten seeds, for up
to ``epochs`` epochs with a patience of ``early_stopping`` epochs on the validation click AUC
(the chapter's monitor), and keeps for every run its test metrics, its best and last epoch, and
the task weights the strategy applied at its best and at its last epoch. The single-task models
(one per task, same budget) are the reference. The manual weights are the chapter's: the
inverse of each task's loss under an untrained model, on seed 0's training split.

Reductions: the weighting papers (Kendall et al. 2018, Chen et al. 2018, ...) evaluate on other
data (scene understanding, NYUv2, ...); no number of theirs is reproduced, only the question of
the chapter answered at a longer budget.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...analysis.compare import compare, model_factory
from ...analysis.runs import PerTask, RecordingTrainer
from ...data import MultiTaskData, simulate_funnel
from ...models import SharedBottom, SingleTask
from ...weighting import standard_strategies
from ..ch12_4a import initial_losses, inverse_loss_weights
from . import Study, interval_check

__all__ = ["STUDY", "study"]

#: Columns of the stored results.
COLUMNS = ["model", "weighting", "seed", "task", "metric", "value"]

#: Each task's headline metric.
METRICS = {"click": "auc", "purchase": "auc", "dwell_time": "mse"}

FULL: dict[str, Any] = {
    "seeds": 10,
    "weightings": [
        "equal",
        "manual",
        "uncertainty",
        "dwa",
        "rlw",
        "famo",
        "gradnorm",
        "pcgrad",
        "mgda",
        "cagrad",
        "imtl",
    ],
    "n_impressions": 20_000,
    "n_users": 1_000,
    "n_items": 500,
    "fractions": [0.6, 0.2, 0.2],
    "epochs": 60,
    "early_stopping": 15,
    "lr": 1e-2,
    "batch_size": 1024,
    "monitor": "click:auc",
}


def _funnel(settings: dict[str, Any]):
    def make(seed: int) -> MultiTaskData:
        return simulate_funnel(
            settings["n_impressions"],
            seed=seed,
            n_users=settings["n_users"],
            n_items=settings["n_items"],
            with_dwell_time=True,
        ).without_groups()

    return make


def manual_weights(settings: dict[str, Any]) -> dict[str, float]:
    """The chapter's manual weights: ``1 / L_k`` of an untrained Shared-Bottom on seed 0's
    training split, scaled to sum to the number of tasks."""
    train = _funnel(settings)(0).split(tuple(settings["fractions"]), seed=0)[0]
    model = model_factory(SharedBottom, bottom_units=(32,), tower_units=(16,))(train.schema, 0)
    return inverse_loss_weights(initial_losses(model, train))


def study(settings: dict[str, Any]) -> pd.DataFrame:
    """Train the single-task reference and the Shared-Bottom under every weighting of
    ``settings`` on every seed.

    Returns:
        Tidy rows (``COLUMNS``): every test metric of every run; ``best_epoch`` and
        ``epochs_run`` (task ``all``); and, for the Shared-Bottom runs, each task's weight at
        the best epoch (``weight_best``) and at the last (``weight_last``).
    """
    seeds = list(range(int(settings["seeds"])))
    fit = {k: settings[k] for k in ("epochs", "early_stopping", "lr", "batch_size", "monitor")}
    make = _funnel(settings)
    fractions = tuple(settings["fractions"])
    single = compare(
        {"single": PerTask(model_factory(SingleTask, hidden_units=(32, 16)))},
        make,
        seeds=seeds,
        fractions=fractions,
        **{**fit, "monitor": "loss"},  # each single-task model on its own validation loss
    ).raw
    strategies = standard_strategies(fixed_weights=manual_weights(settings), seed=0)
    strategies = {"manual" if k == "fixed" else k: v for k, v in strategies.items()}
    unknown = sorted(set(settings["weightings"]) - set(strategies))
    if unknown:
        raise ValueError(f"unknown weighting(s) {unknown}; known: {sorted(strategies)}")
    recorder = RecordingTrainer(vectorise=False)
    shared = compare(
        {"shared_bottom": model_factory(SharedBottom, bottom_units=(32,), tower_units=(16,))},
        make,
        seeds=seeds,
        fractions=fractions,
        weightings={w: strategies[w] for w in settings["weightings"]},
        trainer=recorder,
        **fit,
    ).raw
    raw = pd.concat([single.assign(weighting="-"), shared], ignore_index=True)
    rows = [raw[COLUMNS]]
    epochs = raw.drop_duplicates(["model", "weighting", "seed"])
    for column in ("best_epoch", "epochs_run"):
        rows.append(epochs.assign(task="all", metric=column, value=epochs[column])[COLUMNS])
    for (model, weighting, seed), history in recorder.histories.items():
        weights = history[(history["split"] == "train") & (history["metric"] == "weight")]
        if weights.empty:
            continue
        by_epoch = weights.pivot_table(index="epoch", columns="task", values="value")
        best = int(
            epochs[(epochs["weighting"] == weighting) & (epochs["seed"] == seed)][
                "best_epoch"
            ].iloc[0]
        )
        for metric, epoch in (("weight_best", best), ("weight_last", by_epoch.index.max())):
            for task, value in by_epoch.loc[epoch].items():
                rows.append(
                    pd.DataFrame([[model, weighting, seed, task, metric, value]], columns=COLUMNS)
                )
    out = pd.concat(rows, ignore_index=True)
    out["value"] = out["value"].astype(float).round(7)
    return out


def headline(results: pd.DataFrame) -> pd.DataFrame:
    """Each run's headline test metric per task (``METRICS``)."""
    keep = [METRICS.get(t) == m for t, m in zip(results["task"], results["metric"], strict=True)]
    return results[keep]


def verify(stored: pd.DataFrame, reduced: pd.DataFrame) -> pd.DataFrame:
    """For every weighting of the reduced run and every task's headline metric: the stored mean
    over the full run's seeds, the reduced run's mean and its 99 % t-interval, and whether the
    stored mean lies inside (:func:`~mtlbook.book.reproduce.interval_check`)."""
    return interval_check(
        headline(stored), headline(reduced), ["model", "weighting", "task", "metric"]
    )


def _reduced(stored: pd.DataFrame | None) -> dict[str, Any]:
    # the strategies the chapter's question is about, and the two references
    return {**FULL, "seeds": 3, "weightings": ["equal", "manual", "uncertainty", "gradnorm"]}


STUDY = Study(
    name="weighting",
    version="v1",
    title="Loss weighting on the funnel with dwell time: every strategy, 10 seeds, long budget",
    run=study,
    full=FULL,
    reduced=_reduced,
    verify=verify,
    reductions=(
        "the chapter's data and model (20,000 impressions per seed, Shared-Bottom 32-16); "
        "the weighting papers' own benchmarks are not re-run",
        "at most 60 epochs with a patience of 15 on the validation click AUC (the live run: 10 "
        "and 3); 10 seeds (the live run: 3)",
    ),
)
