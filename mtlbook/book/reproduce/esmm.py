"""Full tier of chapter 12.5: ESMM against a naive CVR model, scored against the simulator's truth.

ESMM (Ma et al., SIGIR 2018) argues that a CVR model trained on clicked impressions only suffers
from sample-selection bias and data sparsity, and that modelling pCTCVR = pCTR × pCVR over
**every** impression cures both. Real logs cannot test the claim on the impressions nobody
clicked (their CVR label is a counterfactual); the book's funnel simulator can, because it knows
every impression's true pCVR. The live run of chapter 12.5 uses one small world and eight seeds;
this study asks *where* ESMM's advantage appears and where it vanishes, on two axes:

* **the world**: the chapter's small world (200 users, 100 items, clicks 6 %, purchases 1.5 %:
  ids that a small model can learn) and the simulator's default one (2,000 users, 1,000 items,
  clicks 4 %, purchases 1 %: ten times more ids, rarer clicks), both with 200,000 impressions;
* **selection on what the features do not show** (``selection_bias`` ρ of
  :func:`~mtlbook.data.simulate_funnel`): the correlation of the click and the conversion noise,
  from −0.5 (clicking favours impressions that convert *less*) through 0 to 0.9, with the noise
  raised to ``context_noise = 1`` so that the knob has an effect worth measuring (it acts through
  ρ·noise²). One more cell keeps the simulator's default noise (0.3) at ρ = 0: the setting the
  question was first asked in.

Every cell trains ESMM and the naive CVR model (:class:`~mtlbook.book.ch12_5.NaiveCVR`: a CTR
model on every impression, a CVR model on the clicked ones) on the same ``seeds`` worlds, to
convergence (early stopping on the validation loss, the epoch cap never reached), and scores
their pCVR and pCTCVR on every test impression against the truth
(:func:`~mtlbook.analysis.truth.score_against_truth`). Seed ``s`` owns its world (simulation,
split) and both models' initial weights, so the two models are compared seed by seed.

Reductions: the ESMM paper reports results on real logs (public Ali-CCP and an industrial set),
which have no true pCVR; the simulator is ours, so no number of the paper is reproduced here,
only its claim's direction. Models are small (embeddings of 8, towers of 32 and 16 units).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...analysis.runs import Factory
from ...analysis.truth import paired_improvement, score_against_truth
from ...data import simulate_funnel
from ...models import ESMM, SingleTask
from ..ch12_5 import NaiveCVR, fit_funnel_models
from . import Study, interval_check

__all__ = ["STUDY", "gains", "study"]

#: Columns of the stored results.
COLUMNS = [
    "world",
    "context_noise",
    "selection_bias",
    "model",
    "seed",
    "quantity",
    "subset",
    "metric",
    "value",
]

#: The two worlds: keyword arguments of :func:`~mtlbook.data.simulate_funnel`.
WORLDS: dict[str, dict[str, Any]] = {
    "small": {"n_users": 200, "n_items": 100, "click_rate": 0.06, "purchase_rate": 0.015},
    "default": {"n_users": 2_000, "n_items": 1_000, "click_rate": 0.04, "purchase_rate": 0.01},
}

FULL: dict[str, Any] = {
    # (world, context_noise, selection_bias) cells
    "cells": [
        *[("small", 1.0, rho) for rho in (-0.5, 0.0, 0.5, 0.9)],
        *[("default", 1.0, rho) for rho in (-0.5, 0.0, 0.5, 0.9)],
        ("default", 0.3, 0.0),
    ],
    "seeds": 30,
    "n_impressions": 200_000,
    "split": [0.5, 0.2, 0.3],
    "tower": [32, 16],
    "epochs": 30,
    "early_stopping": 3,
    "lr": 3e-3,
    "batch_size": 512,
}

#: The quantities scored against the truth.
QUANTITIES = ("pcvr", "pctcvr")


def study(settings: dict[str, Any]) -> pd.DataFrame:
    """Train and score ESMM and the naive CVR model in every cell of ``settings``.

    Returns:
        Tidy rows (``COLUMNS``): per cell, model and seed the scores of
        :func:`~mtlbook.analysis.truth.score_against_truth` for ``QUANTITIES`` on the test
        impressions (subsets ``all``, ``clicked``, ``not clicked``), and the best epoch of each
        trained part (``quantity="fit"``, ``subset`` the part, ``metric="best_epoch"``).
    """
    seeds = list(range(int(settings["seeds"])))
    tower = tuple(settings["tower"])
    models: dict[str, Factory | NaiveCVR] = {
        "naive": NaiveCVR(lambda schema, seed: SingleTask(schema, hidden_units=tower, seed=seed)),
        "ESMM": lambda schema, seed: ESMM(schema, tower_units=tower, seed=seed),
    }
    fit = {k: settings[k] for k in ("epochs", "early_stopping", "lr", "batch_size")}
    frames = []
    for world, noise, rho in settings["cells"]:
        worlds: list[Any] = [
            simulate_funnel(
                settings["n_impressions"],
                seed=s,
                context_noise=noise,
                selection_bias=rho,
                **WORLDS[world],
            ).split(tuple(settings["split"]), seed=s)
            for s in seeds
        ]
        run = fit_funnel_models(worlds, seeds, models, **fit)
        scores = pd.concat(
            [score_against_truth(run.predictions, q) for q in QUANTITIES], ignore_index=True
        )
        epochs = run.summary.rename(columns={"part": "subset", "best_epoch": "value"}).assign(
            quantity="fit", metric="best_epoch"
        )
        for part in (scores, epochs):
            frames.append(
                part.assign(world=world, context_noise=noise, selection_bias=rho)[COLUMNS]
            )
    out = pd.concat(frames, ignore_index=True)
    out["value"] = out["value"].astype(float).round(7)
    return out


def gains(results: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """ESMM's paired improvement over the naive model in every cell (positive: ESMM is better;
    :func:`~mtlbook.analysis.truth.paired_improvement`), per quantity, subset and metric."""
    scored = results[results["quantity"] != "fit"]
    keys = ["world", "context_noise", "selection_bias"]
    parts = []
    for cell, part in scored.groupby(keys, sort=False):
        gain = paired_improvement(part, baseline="naive", confidence=confidence)
        parts.append(gain.assign(**dict(zip(keys, cell, strict=True))))
    out = pd.concat(parts, ignore_index=True)
    return out[keys + [c for c in out.columns if c not in keys]]


#: The values the reduced re-run checks: each model's mean pCVR score on every test impression.
CHECKED = ("auc_truth", "excess_logloss", "mean_ratio")


def verify(stored: pd.DataFrame, reduced: pd.DataFrame) -> pd.DataFrame:
    """For every cell, model and metric of ``CHECKED`` (pCVR, all test impressions): the stored
    mean over the full run's seeds, the reduced run's mean and its 99 % t-interval, and whether
    the stored mean lies inside (:func:`~mtlbook.book.reproduce.interval_check`)."""

    def pick(frame: pd.DataFrame) -> pd.DataFrame:
        keep = (
            (frame["quantity"] == "pcvr")
            & (frame["subset"] == "all")
            & frame["metric"].isin(CHECKED)
        )
        return frame[keep]

    keys = ["world", "context_noise", "selection_bias", "model", "metric"]
    return interval_check(pick(stored), pick(reduced), keys)


def _reduced(stored: pd.DataFrame | None) -> dict[str, Any]:
    # both worlds at the two ends of the ρ sweep that the chapter compares, and the default cell
    cells = [c for c in FULL["cells"] if c[2] in (0.0, 0.9)]
    return {**FULL, "seeds": 4, "cells": cells}


STUDY = Study(
    name="esmm",
    version="v1",
    title="ESMM vs a naive CVR model against the simulator's true pCVR, by world and selection",
    run=study,
    full=FULL,
    reduced=_reduced,
    verify=verify,
    reductions=(
        "simulated worlds instead of the paper's real logs (which have no true pCVR): the "
        "direction of the paper's claim is tested, none of its numbers",
        "30 seeds per cell; small models (embeddings 8, towers 32-16) trained to convergence "
        "with early stopping (at most 30 epochs, patience 3), one learning rate (3e-3)",
        "the reduced re-check covers rho = 0 and 0.9 in both worlds and the default cell",
    ),
)
