"""Evaluation: AUC, log-loss and GAUC for binary tasks, MSE and MAE for regression.

AUC and log-loss come from scikit-learn; MSE and MAE are plain NumPy means. GAUC (Zhou et
al., KDD 2018) is the impression-weighted mean of per-group AUCs over the groups (users) that
have both positive and negative samples; it is computed for all groups at once from
within-group ranks (the Mann–Whitney form of the AUC), which the tests check against
scikit-learn group by group.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from .data import MultiTaskData

__all__ = ["LOWER_IS_BETTER", "evaluate", "gauc", "score_predictions"]

#: Metrics for which a smaller value is better (the others — AUC, GAUC — are higher-better).
LOWER_IS_BETTER = frozenset({"loss", "logloss", "mse", "mae"})


def gauc(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC: per-group AUC weighted by group size, over groups with both classes.

    Returns NaN when no group has both classes.
    """
    frame = pd.DataFrame(
        {"g": np.asarray(groups), "y": np.asarray(y_true, float), "s": np.asarray(y_score, float)}
    )
    frame["rank"] = frame.groupby("g")["s"].rank(method="average")
    stats = (
        frame.assign(pos_rank=frame["rank"] * frame["y"])
        .groupby("g")
        .agg(n=("y", "size"), n_pos=("y", "sum"), pos_rank=("pos_rank", "sum"))
    )
    stats["n_neg"] = stats["n"] - stats["n_pos"]
    stats = stats[(stats["n_pos"] > 0) & (stats["n_neg"] > 0)]
    if stats.empty:
        return float("nan")
    auc = (stats["pos_rank"] - stats["n_pos"] * (stats["n_pos"] + 1) / 2) / (
        stats["n_pos"] * stats["n_neg"]
    )
    return float(np.average(auc, weights=stats["n"]))


def _binary_metrics(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None) -> dict[str, float]:
    both = 0 < y.sum() < len(y)
    out = {
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }
    if groups is not None:
        out["gauc"] = gauc(y, p, groups)
    return out


def _regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    # Plain NumPy: the same numbers as scikit-learn's mean_squared_error / mean_absolute_error
    # (the tests check it) without their input validation, which dominates on small data
    # evaluated every epoch.
    error = p - y
    return {"mse": float(np.mean(error * error)), "mae": float(np.mean(np.abs(error)))}


def score_predictions(predictions: pd.DataFrame, data: MultiTaskData) -> pd.DataFrame:
    """Metrics of given predictions (one column per task, probabilities for binary tasks).

    Masked tasks are scored on their subspace only. Returns a tidy DataFrame with columns
    ``task, metric, value``. A binary task with one class only gets AUC NaN and a
    ``RuntimeWarning`` naming it (shown once per task under Python's default warning filter).
    """
    rows: list[tuple[str, str, float]] = []
    for task in data.schema.tasks:
        if task.name not in predictions:
            raise ValueError(f"predictions have no column for task {task.name!r}")
        mask = data.mask(task.name)
        y = data.labels[task.name][mask].astype(np.float64)
        p = predictions[task.name].to_numpy(np.float64)[mask]
        if len(y) == 0:
            continue
        if task.kind == "binary":
            groups = None if data.groups is None else data.groups[mask]
            metrics = _binary_metrics(y, p, groups)
            if not 0 < y.sum() < len(y):
                warnings.warn(
                    f"task {task.name!r} has only one class in the data evaluated, "
                    "so its AUC is NaN; evaluate on data with both classes",
                    RuntimeWarning,
                    stacklevel=2,
                )
        else:
            metrics = _regression_metrics(y, p)
        rows.extend((task.name, k, v) for k, v in metrics.items())
    return pd.DataFrame(rows, columns=["task", "metric", "value"])


def evaluate(model, data: MultiTaskData, batch_size: int = 8192) -> pd.DataFrame:
    """Evaluate a model on a data set: a tidy DataFrame with columns ``task, metric, value``.

    Binary tasks get ``auc`` and ``logloss`` (and ``gauc`` when the data have group ids),
    regression tasks ``mse`` and ``mae``; masked tasks are evaluated on their subspace.
    """
    return score_predictions(model.predict(data, batch_size=batch_size), data)
