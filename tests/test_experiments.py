"""Repeated experiments: intervals, paired gains, sweeps and weighting comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mtlbook as mb
from mtlbook.analysis.intervals import mean_interval, mtl_gain
from mtlbook.analysis.runs import PerTask, repeat_fits, time_overhead
from mtlbook.book.ch12_3_1 import correlation_sweep
from mtlbook.models import SharedBottom, SingleTask
from mtlbook.weighting import EqualWeight, FixedWeights

FIT = {"epochs": 2, "batch_size": 128, "lr": 1e-2}


def _small(seed: int):
    return mb.make_correlated_tasks(300, 0.5, n_features=6, seed=seed)


def test_mean_interval_matches_scipy():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    df = pd.DataFrame({"g": "a", "value": values})
    row = mean_interval(df, ["g"]).iloc[0]
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert row["mean"] == pytest.approx(values.mean())
    assert row["n"] == 4
    assert (row["lo"], row["hi"]) == pytest.approx((lo, hi))


def test_mean_interval_single_value_has_no_interval():
    row = mean_interval(pd.DataFrame({"g": ["a"], "value": [3.0]}), ["g"]).iloc[0]
    assert row["mean"] == 3.0 and np.isnan(row["lo"]) and np.isnan(row["hi"])


def test_mean_interval_errors():
    df = pd.DataFrame({"g": ["a"], "value": [1.0]})
    with pytest.raises(ValueError, match="confidence"):
        mean_interval(df, ["g"], confidence=1.5)
    with pytest.raises(ValueError, match="missing"):
        mean_interval(df, ["missing"])


def test_mtl_gain_sign_convention_and_pairing():
    rows = []
    for seed, (base_auc, model_auc, base_mse, model_mse) in enumerate(
        [(0.70, 0.77, 2.0, 1.0), (0.60, 0.66, 4.0, 3.0)]
    ):
        rows += [
            ("ST", seed, "a", "auc", base_auc),
            ("MTL", seed, "a", "auc", model_auc),
            ("ST", seed, "b", "mse", base_mse),
            ("MTL", seed, "b", "mse", model_mse),
        ]
    df = pd.DataFrame(rows, columns=["model", "seed", "task", "metric", "value"])
    gain = mtl_gain(df, "ST").set_index("metric")
    # AUC: (m − b)/b per seed = +10 % both times; MSE: (b − m)/b = +50 % and +25 %.
    assert gain.loc["auc", "mean"] == pytest.approx(10.0)
    assert gain.loc["mse", "mean"] == pytest.approx(37.5)
    assert set(gain["model"]) == {"MTL"}
    with pytest.raises(ValueError, match="baseline"):
        mtl_gain(df, "nope")


def test_repeat_fits_per_task_and_weightings():
    models = {
        "ST": PerTask(lambda s, seed: SingleTask(s, hidden_units=(4,), seed=seed)),
        "SB": lambda s, seed: SharedBottom(s, bottom_units=(4,), tower_units=(2,), seed=seed),
    }
    weightings = {
        "equal": EqualWeight,
        "fixed": lambda: FixedWeights(weights={"task1": 1.0, "task2": 0.5}),
    }
    df = repeat_fits(_small, models, seeds=[0, 1], weightings=weightings, **FIT)
    assert list(df.columns) == [
        "model",
        "weighting",
        "seed",
        "task",
        "metric",
        "value",
        "best_epoch",
        "epochs_run",
        "train_seconds",
    ]
    mse = df[df["metric"] == "mse"]
    # 2 models × 2 weightings × 2 seeds × 2 tasks, each task of PerTask from its own model.
    assert len(mse) == 16
    assert set(mse["weighting"]) == {"equal", "fixed"}
    overhead = time_overhead(df, baseline="equal")
    assert set(overhead["weighting"]) == {"equal", "fixed"}
    assert (overhead.loc[overhead["weighting"] == "equal", "ratio"] == 1.0).all()
    with pytest.raises(ValueError, match="weightings"):
        repeat_fits(_small, models, seeds=[0], weighting=EqualWeight(), **FIT)


def test_repeat_fits_is_deterministic():
    models = {"SB": lambda s, seed: SharedBottom(s, bottom_units=(4,), seed=seed)}
    a = repeat_fits(_small, models, seeds=[3], **FIT)
    b = repeat_fits(_small, models, seeds=[3], **FIT)
    pd.testing.assert_series_equal(a["value"], b["value"])


def test_correlation_sweep_keeps_test_labels_dense():
    models = {"SB": lambda s, seed: SharedBottom(s, bottom_units=(4,), seed=seed)}
    df = correlation_sweep(
        [0.0, 1.0], models, [0], n_samples=300, sparse_task="task2", label_fraction=0.2, **FIT
    )
    assert sorted(df["correlation"].unique()) == [0.0, 1.0]
    assert set(df["task"]) == {"task1", "task2"}
