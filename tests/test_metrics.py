"""evaluate(), score_predictions() and gauc() against scikit-learn and plain loops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

import mtlbook as mb
from mtlbook.data import MultiTaskData
from mtlbook.metrics import gauc, score_predictions
from mtlbook.models import SharedBottom


def _loop_gauc(y, s, groups) -> float:
    """Impression-weighted mean of per-group AUCs, groups with both classes only."""
    total, weight = 0.0, 0
    for g in np.unique(groups):
        rows = groups == g
        if 0 < y[rows].sum() < rows.sum():
            total += rows.sum() * roc_auc_score(y[rows], s[rows])
            weight += rows.sum()
    return total / weight if weight else float("nan")


def _as_dict(metrics: pd.DataFrame) -> dict[tuple[str, str], float]:
    assert list(metrics.columns) == ["task", "metric", "value"]
    return {(t, m): v for t, m, v in metrics.itertuples(index=False)}


@pytest.fixture(scope="module")
def funnel_scores(funnel_small):
    model = SharedBottom(funnel_small.schema, seed=0)
    mb.fit(
        model,
        *funnel_small.split((0.7, 0.3), seed=0),
        epochs=1,
        batch_size=256,
        lr=1e-2,
        device="cpu",
        progress=False,
    )
    return model, model.predict(funnel_small), mb.evaluate(model, funnel_small)


def test_evaluate_metric_set(funnel_small, funnel_scores):
    _, _, metrics = funnel_scores
    got = _as_dict(metrics)
    assert set(got) == {
        ("click", "auc"),
        ("click", "logloss"),
        ("click", "gauc"),
        ("purchase", "auc"),
        ("purchase", "logloss"),
        ("purchase", "gauc"),
        ("dwell_time", "mse"),
        ("dwell_time", "mae"),
    }
    assert all(np.isfinite(v) for v in got.values())


def test_auc_and_logloss_equal_sklearn(funnel_small, funnel_scores):
    _, pred, metrics = funnel_scores
    got = _as_dict(metrics)
    for task in ("click", "purchase"):
        y = funnel_small.labels[task].astype(float)
        p = pred[task].to_numpy(np.float64)
        assert 0 < y.sum() < len(y)
        assert got[(task, "auc")] == pytest.approx(roc_auc_score(y, p), rel=1e-9)
        assert got[(task, "logloss")] == pytest.approx(log_loss(y, p), rel=1e-7)


def test_gauc_in_evaluate_equals_loop(funnel_small, funnel_scores):
    _, pred, metrics = funnel_scores
    got = _as_dict(metrics)
    for task in ("click", "purchase"):
        y = funnel_small.labels[task].astype(float)
        p = pred[task].to_numpy(np.float64)
        expected = _loop_gauc(y, p, funnel_small.groups)
        assert got[(task, "gauc")] == pytest.approx(expected, rel=1e-9)


def test_masked_regression_scored_on_its_subspace(funnel_small, funnel_scores):
    _, pred, metrics = funnel_scores
    got = _as_dict(metrics)
    mask = funnel_small.masks["dwell_time"]
    assert 0 < mask.sum() < len(mask)
    y = funnel_small.labels["dwell_time"].astype(float)
    p = pred["dwell_time"].to_numpy(np.float64)
    mse, mae = mean_squared_error(y[mask], p[mask]), mean_absolute_error(y[mask], p[mask])
    assert got[("dwell_time", "mse")] == pytest.approx(mse, rel=1e-9)
    assert got[("dwell_time", "mae")] == pytest.approx(mae, rel=1e-9)
    assert got[("dwell_time", "mse")] != pytest.approx(mean_squared_error(y, p), rel=1e-3)


def test_mse_mae_equal_sklearn(correlated_small):
    model = SharedBottom(correlated_small.schema, seed=1)
    pred = model.predict(correlated_small)
    got = _as_dict(mb.evaluate(model, correlated_small))
    assert set(got) == {(t, m) for t in ("task1", "task2") for m in ("mse", "mae")}
    for task in ("task1", "task2"):
        y = correlated_small.labels[task].astype(float)
        p = pred[task].to_numpy(np.float64)
        assert got[(task, "mse")] == pytest.approx(mean_squared_error(y, p), rel=1e-9)
        assert got[(task, "mae")] == pytest.approx(mean_absolute_error(y, p), rel=1e-9)


def _random_groups(seed: int, n: int = 2_000, n_groups: int = 60):
    rng = np.random.default_rng(seed)
    groups = rng.integers(n_groups, size=n) ** 2  # uneven sizes, non-consecutive ids
    y = (rng.random(n) < 0.3).astype(float)
    scores = np.round(rng.random(n) + 0.3 * y, 1)  # ties within groups
    return y, scores, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gauc_equals_loop_with_ties(seed):
    y, s, groups = _random_groups(seed)
    assert len(np.unique(s)) < 20  # many ties
    expected = _loop_gauc(y, s, groups)
    assert gauc(y, s, groups) == pytest.approx(expected, rel=1e-12)


def test_gauc_skips_single_class_groups():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.5, 0.6, 0.3, 0.2, 0.4, 0.7])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # group 1 all positive, group 2 all negative
    # group 0: AUC 1 (2 rows); group 3: AUC 0 (2 rows) → 0.5
    assert gauc(y, s, groups) == pytest.approx(0.5)
    assert gauc(y, s, groups) == pytest.approx(_loop_gauc(y, s, groups))
    assert np.isnan(gauc(np.ones(4), np.arange(4.0), np.array([0, 0, 1, 1])))


def test_gauc_weights_by_group_size():
    y = np.array([1, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.1, 0.9, 0.5, 0.5])
    groups = np.array([0, 0, 1, 1, 1, 1])  # group 0: AUC 1 (2 rows); group 1: AUC 1/3 (4 rows)
    expected = (2 * 1.0 + 4 * roc_auc_score(y[2:], s[2:])) / 6
    assert gauc(y, s, groups) == pytest.approx(expected)


def test_masked_binary_task_scored_on_its_subspace():
    rng = np.random.default_rng(0)
    n = 400
    click = rng.random(n) < 0.4
    buy = np.where(click, (rng.random(n) < 0.5).astype(float), np.nan)
    data = MultiTaskData(
        dense=rng.standard_normal((n, 2)),
        labels={"click": click.astype(float), "buy": buy},
        tasks={"click": "binary", "buy": "binary"},
        masks={"buy": click},
        dense_names=["a", "b"],
        groups=rng.integers(15, size=n),
    )
    pred = pd.DataFrame({"click": rng.random(n), "buy": rng.random(n)})
    # Outside the mask the predictions are wildly wrong; they must not count.
    pred.loc[~click, "buy"] = 0.999
    got = _as_dict(score_predictions(pred, data))
    y, p = buy[click], pred["buy"].to_numpy()[click]
    assert got[("buy", "auc")] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert got[("buy", "logloss")] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert got[("buy", "gauc")] == pytest.approx(_loop_gauc(y, p, data.groups[click]), rel=1e-12)
    y_click = click.astype(float)
    assert got[("click", "auc")] == pytest.approx(
        roc_auc_score(y_click, pred["click"].to_numpy()), rel=1e-12
    )


def test_score_predictions_missing_column(correlated_small):
    pred = pd.DataFrame({"task1": np.zeros(len(correlated_small))})
    with pytest.raises(ValueError, match="task2"):
        score_predictions(pred, correlated_small)


def test_single_class_auc_is_nan():
    data = MultiTaskData(
        dense=np.zeros((5, 1)), labels={"y": np.zeros(5)}, tasks={"y": "binary"}, dense_names=["x"]
    )
    with pytest.warns(RuntimeWarning, match="task 'y' has only one class"):
        got = _as_dict(score_predictions(pd.DataFrame({"y": np.full(5, 0.2)}), data))
    assert np.isnan(got[("y", "auc")])
    assert got[("y", "logloss")] == pytest.approx(
        log_loss(np.zeros(5), np.full(5, 0.2), labels=[0, 1])
    )
