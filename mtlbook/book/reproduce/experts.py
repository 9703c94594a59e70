"""Full tier of chapter 12.3.3: how many experts? MMoE and OMoE from 1 to 16 experts.

The syllabus says the number of experts is a design choice, and the chapter's widget lets a
reader move a slider over it for one seed; a slider is not evidence. This study follows the
protocol of the MMoE study (:mod:`mtlbook.book.reproduce.mmoe`: data redrawn per restart, early
stopping on the validation loss, test MSE) for OMoE and MMoE with 1, 2, 4, 8 and 16 experts of
16 units at correlations 0.5, 0.9 and 1, 30 restarts each, at the learning rate the MMoE study
selected for both mixtures (1e-2). With one expert both models are a Shared-Bottom of 16 units.

Reductions: one learning rate (the MMoE study's selection at 8 experts) instead of a grid per
expert count; 30 restarts instead of the paper's 200; the model grows with the expert count
(the question is what more experts buy, not a comparison at matched size).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import Study, interval_check
from .mmoe import FULL as MMOE_FULL
from .mmoe import study as mmoe_study

__all__ = ["STUDY", "study"]

FULL: dict[str, Any] = {
    **MMOE_FULL,
    "n_experts": [1, 2, 4, 8, 16],
    "models": ["OMoE", "MMoE"],
    "restarts": 30,
    "lrs": [1e-2],
}


def study(settings: dict[str, Any]) -> pd.DataFrame:
    """The MMoE study's rows (:func:`mtlbook.book.reproduce.mmoe.study`) for every expert count
    of ``settings``, with a column ``n_experts``."""
    frames = [
        mmoe_study({**settings, "n_experts": int(n)}).assign(n_experts=int(n))
        for n in settings["n_experts"]
    ]
    return pd.concat(frames, ignore_index=True)


def verify(stored: pd.DataFrame, reduced: pd.DataFrame) -> pd.DataFrame:
    """For every expert count, model and correlation of the reduced run: the stored mean task1
    test MSE, the reduced run's mean and its 99 % t-interval, and whether the stored mean lies
    inside (:func:`~mtlbook.book.reproduce.interval_check`)."""

    def task1(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["split"] == "test") & (frame["task"] == "task1")]

    return interval_check(task1(stored), task1(reduced), ["n_experts", "model", "correlation"])


def _reduced(stored: pd.DataFrame | None) -> dict[str, Any]:
    return {**FULL, "restarts": 6, "n_experts": [1, 8], "correlations": [0.5, 1.0]}


STUDY = Study(
    name="experts",
    version="v1",
    title="MMoE and OMoE with 1 to 16 experts on the MMoE paper's synthetic tasks",
    run=study,
    full=FULL,
    reduced=_reduced,
    verify=verify,
    reductions=(
        "30 restarts per cell, one learning rate (1e-2, the MMoE study's selection for both "
        "mixtures at 8 experts) instead of a grid per expert count",
        "the reduced re-check covers 1 and 8 experts at correlations 0.5 and 1",
    ),
)
