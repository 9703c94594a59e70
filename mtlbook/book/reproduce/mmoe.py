"""Full tier of chapter 12.3.3: the MMoE paper's synthetic study, by the paper's protocol.

Ma et al. (KDD 2018, §5) train Shared-Bottom, OMoE and MMoE on two regression tasks of
correlation 0.5, 0.9 and 1.0, 200 times each, **drawing new data for every run**, with Adam and
a learning rate chosen from {1e-4, 1e-3, 1e-2}, and report the average loss (Fig. 4) and the
distribution of the final losses (Fig. 5). The live run of the chapter cannot: it keeps one data
set, one learning rate and a few hundred steps. This study follows the protocol:

* every restart draws its own data (``make_correlated_tasks(n_samples, p, seed=1000 + r)``) and
  its own initial weights (seed ``r``); restart ``r`` of every model and learning rate sees the
  same data, so the models are compared on paired data sets;
* every learning rate of the grid is trained; for each model and correlation the rate with the
  lowest mean validation loss is selected (validation only), and the test losses of that rate
  are reported;
* training runs until the summed validation loss has not improved for ``early_stopping`` epochs
  (at most ``epochs``); each run keeps its best validation epoch.

The runs of one (model, correlation, learning rate) train as one population
(:func:`~mtlbook.training.population.fit_population`, one data set per member).

Reduction from the paper, stated beside the results: 100 restarts instead of 200 (to stay near an
hour on two CPU cores); the paper gives neither the number of samples nor the batch size, nor the
generator's constants (:func:`~mtlbook.data.make_correlated_tasks` documents ours).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...analysis.runs import Factory
from ...data import Schema, make_correlated_tasks
from ...training.population import fit_population
from ..ch12_3_3a import SCORE_COLUMNS, paper_models
from . import Study, median_interval

__all__ = ["STUDY", "as_scores", "selected", "study"]

#: Columns of the stored results.
COLUMNS = ["correlation", "model", "lr", "restart", "best_epoch", "split", "task", "value"]

FULL: dict[str, Any] = {
    "correlations": [0.5, 0.9, 1.0],
    "restarts": 100,
    "n_samples": 10_000,
    "fractions": [0.6, 0.2, 0.2],
    "lrs": [1e-4, 1e-3, 1e-2],
    "epochs": 100,
    "early_stopping": 8,
    "batch_size": 128,
    "data_seed": 1000,
}


def study(settings: dict[str, Any]) -> pd.DataFrame:
    """Train every model, correlation, learning rate and restart of ``settings``.

    Args:
        settings: ``FULL``'s keys; ``restarts`` may be smaller, and ``lrs_by_cell``
            (``{(model, correlation): lr}``) may restrict each model and correlation to one rate.
            Optional: ``n_experts`` (default 8, the paper's) and ``models`` (a subset of
            ``SharedBottom, OMoE, MMoE``; default all three).

    Returns:
        Tidy rows (``COLUMNS``): each restart's validation loss (``split="valid"``, task
        ``all``, at its best epoch) and test MSE per task and their sum (``split="test"``).
    """
    models = paper_models(int(settings.get("n_experts", 8)))
    if "models" in settings:
        models = {name: models[name] for name in settings["models"]}
    restarts = list(range(int(settings["restarts"])))
    only = settings.get("lrs_by_cell")
    rows = []
    for p in settings["correlations"]:
        splits = [
            make_correlated_tasks(settings["n_samples"], p, seed=settings["data_seed"] + r).split(
                tuple(settings["fractions"]), seed=settings["data_seed"] + r
            )
            for r in restarts
        ]
        train, valid, test = (list(part) for part in zip(*splits, strict=True))
        schema = train[0].schema
        for name, factory in models.items():
            lrs = [only[(name, p)]] if only else settings["lrs"]

            def make_model(seed: int, f: Factory = factory, schema: Schema = schema):
                return f(schema, seed)

            for lr in lrs:
                result = fit_population(
                    make_model,
                    train,
                    valid,
                    restarts,
                    epochs=settings["epochs"],
                    early_stopping=settings["early_stopping"],
                    batch_size=settings["batch_size"],
                    lr=lr,
                    progress=False,
                )
                summary = result.summary.set_index("member")
                scores = result.evaluate(test)
                mse = scores[scores["metric"] == "mse"]
                total = mse.groupby(["member"], as_index=False)["value"].sum().assign(task="all")
                tested = pd.concat([mse[["member", "task", "value"]], total], ignore_index=True)
                validated = summary.reset_index()[["member", "best_score"]].rename(
                    columns={"best_score": "value"}
                )
                for split, frame in (("valid", validated.assign(task="all")), ("test", tested)):
                    rows.append(
                        frame.assign(
                            correlation=p,
                            model=name,
                            lr=lr,
                            restart=frame["member"],
                            best_epoch=frame["member"].map(summary["best_epoch"]).to_numpy(),
                            split=split,
                        )[COLUMNS]
                    )
    out = pd.concat(rows, ignore_index=True)
    out["value"] = out["value"].astype(float).round(7)
    return out


def selected(results: pd.DataFrame) -> pd.DataFrame:
    """The test rows of each model and correlation at its selected learning rate: the rate with
    the lowest mean validation loss over the restarts."""
    valid = results[results["split"] == "valid"]
    mean = valid.groupby(["model", "correlation", "lr"], as_index=False)["value"].mean()
    best = mean.loc[mean.groupby(["model", "correlation"])["value"].idxmin()]
    keys = best[["model", "correlation", "lr"]]
    return results[results["split"] == "test"].merge(keys, on=["model", "correlation", "lr"])


def as_scores(results: pd.DataFrame) -> pd.DataFrame:
    """The selected test rows (:func:`selected`) in the layout of
    :attr:`~mtlbook.book.ch12_3_3a.RestartStudy.scores`, so that the chapter's summaries,
    claims and plots (:func:`~mtlbook.book.ch12_3_3a.restart_summary`,
    :func:`~mtlbook.book.ch12_3_3a.compare_with_paper`, ...) read the full study as they read
    the live one."""
    rows = selected(results)
    return rows.assign(member=rows["restart"], seed=rows["restart"])[SCORE_COLUMNS].reset_index(
        drop=True
    )


def verify(stored: pd.DataFrame, reduced: pd.DataFrame) -> pd.DataFrame:
    """For each model and correlation (task1 test MSE at the stored selected learning rate):
    the stored median, the reduced run's median and its distribution-free interval, and
    whether the stored median lies inside."""
    full = selected(stored)
    full = full[full["task"] == "task1"]
    small = reduced[(reduced["split"] == "test") & (reduced["task"] == "task1")]
    rows = []
    for (name, p), group in full.groupby(["model", "correlation"]):
        lr = float(group["lr"].iloc[0])
        mine = small[(small["model"] == name) & (small["correlation"] == p)]
        mine = mine[np.isclose(mine["lr"], lr)]["value"].to_numpy()
        if len(mine) == 0:
            raise ValueError(f"the reduced run has no {name} at p={p} and lr={lr:g}")
        lo, hi = median_interval(mine)
        stored_median = float(group["value"].median())
        rows.append(
            {
                "model": name,
                "correlation": p,
                "lr": lr,
                "stored_median": stored_median,
                "reduced_median": float(np.median(mine)),
                "lo": lo,
                "hi": hi,
                "inside": lo <= stored_median <= hi,
            }
        )
    return pd.DataFrame(rows)


def _reduced(stored: pd.DataFrame | None) -> dict[str, Any]:
    settings: dict[str, Any] = {**FULL, "restarts": 8}
    if stored is not None:
        keys = selected(stored)[["model", "correlation", "lr"]].drop_duplicates()
        settings["lrs_by_cell"] = {
            (m, float(p)): float(lr) for m, p, lr in keys.itertuples(index=False)
        }
    return settings


STUDY = Study(
    name="mmoe",
    version="v1",
    title="MMoE paper, synthetic study (Ma et al. 2018, Figs. 4 and 5), by its protocol",
    run=study,
    full=FULL,
    reduced=_reduced,
    verify=verify,
    reductions=(
        "100 restarts per model and correlation instead of the paper's 200, to fit about an "
        "hour on two CPU cores",
        "10,000 samples per data set (60/20/20), batch 128, at most 100 epochs (4,700 steps) "
        "with early stopping after 8 without improvement: the paper gives none of these",
        "the generator's constants c, m, alpha_i, beta_i are ours "
        "(mtlbook.data.make_correlated_tasks); the paper does not publish them",
    ),
)
