"""Predictions scored against the ground truth of a simulator, not only against labels.

On real logs a post-click conversion rate (CVR) can only be checked on the clicked impressions,
the one place where a conversion label exists, yet a ranker uses it on *every* impression.
:func:`mtlbook.simulate_funnel` knows, for every impression, the true ``pctr``, the true
``pcvr`` (the purchase probability *if* it were clicked) and ``pctcvr = pctr·pcvr``, so
predictions can be scored against those probabilities directly:

* :func:`funnel_predictions` turns one trained model (ESMM, AITM, or a pair of single-task
  models) into the columns ``pctr, pcvr, pctcvr``;
* :func:`expected_auc` is the AUC one would get, on average, if every impression's label were
  drawn from its true probability (no sampling noise); :func:`excess_logloss` is the expected
  log-loss above the irreducible one, i.e. the mean KL divergence from the truth;
  :func:`score_against_truth` reports these with the rank correlation, the RMSE and the ratio
  of mean prediction to mean truth on all, clicked and unclicked impressions;
  :func:`paired_improvement` gives the paired, sign-adjusted difference to a baseline;
* :func:`plot_truth_calibration` draws predictions against the truth.

Chapter 12.5 of the book scores ESMM, AITM and a naive CVR model with these functions
(its training and ranking study is :mod:`mtlbook.book.ch12_5`).

Example:
    >>> import numpy as np
    >>> truth = np.array([0.1, 0.4, 0.7, 0.2])
    >>> round(expected_auc(truth, truth), 4)  # the best AUC the truth allows
    0.8401
    >>> round(float(excess_logloss(truth, truth)), 6)  # no excess loss for the truth itself
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from ..data import MultiTaskData
from ..models.aitm import AITM
from ..models.base import MultiTaskModel
from ..models.esmm import ESMM
from .intervals import mean_interval

__all__ = [
    "METRIC_DIRECTION",
    "QUANTITIES",
    "excess_logloss",
    "expected_auc",
    "funnel_predictions",
    "paired_improvement",
    "plot_truth_calibration",
    "score_against_truth",
]

QUANTITIES = ("pctr", "pcvr", "pctcvr")
#: Direction of each metric of :func:`score_against_truth`: +1 higher is better, −1 lower is
#: better, 0 closer to 1 is better (``mean_ratio``).
METRIC_DIRECTION = {
    "auc_truth": 1,
    "auc_labels": 1,
    "spearman": 1,
    "excess_logloss": -1,
    "rmse": -1,
    "mean_ratio": 0,
}
_EPS = 1e-6


# ------------------------------------------------------------------------------- checks
def _as_prob(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} values, expected {n}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if len(arr) and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values in "
            f"[{arr.min():.3g}, {arr.max():.3g}]"
        )
    return arr


# ------------------------------------------------------------------------------- metrics
def expected_auc(score, prob) -> float:
    """The AUC of ``score`` against labels drawn as ``y_i ~ Bernoulli(prob_i)``, in expectation.

    It is the probability that a random impression that converts scores higher than a random one
    that does not (ties count one half), averaged over the label draws: each pair ``(i, j)``,
    ``i ≠ j``, is a (positive, negative) pair with probability ``prob_i·(1 − prob_j)``. With
    0/1 ``prob`` it is the ordinary AUC (``sklearn.metrics.roc_auc_score``). Scoring against
    the true probabilities removes the noise of one sampled set of outcomes.

    Args:
        score: ``[n]`` predictions (any real numbers; only their order matters).
        prob: ``[n]`` true probabilities in [0, 1].

    Returns:
        The expected AUC in [0, 1].

    Example:
        >>> round(expected_auc([0.1, 0.4, 0.8], [0.1, 0.3, 0.6]), 4)
        0.8425
    """
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    q = _as_prob("prob", prob, len(score))
    if not np.isfinite(score).all():
        raise ValueError("score contains NaN or inf values")
    self_pairs = float(np.sum(q * (1 - q)))
    denominator = q.sum() * (1 - q).sum() - self_pairs
    if denominator <= 0:
        raise ValueError(
            "the AUC is undefined: prob gives no chance of both a positive and a "
            "negative impression"
        )
    _, group = np.unique(score, return_inverse=True)  # tied scores share a group, in order
    positive = np.bincount(group, weights=q)
    negative = np.bincount(group, weights=1 - q)
    below = np.cumsum(negative) - negative  # negative mass strictly below each score
    numerator = np.sum(positive * (below + 0.5 * negative)) - 0.5 * self_pairs
    return float(numerator / denominator)


def excess_logloss(pred, prob) -> float:
    """Mean KL divergence ``KL(Bernoulli(prob) ‖ Bernoulli(pred))``: the expected log-loss of
    ``pred`` on labels drawn from ``prob`` minus the unavoidable part (the entropy of ``prob``).

    0 for a perfect prediction; it punishes miscalibration and wrong ranking alike. ``pred`` is
    clipped to ``[1e-6, 1 − 1e-6]``.

    Example:
        >>> excess_logloss([0.2, 0.5], [0.2, 0.5])
        0.0
    """
    p = np.clip(_as_prob("pred", pred), _EPS, 1 - _EPS)
    q = _as_prob("prob", prob, len(p))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(q > 0, q * np.log(q / p), 0.0) + np.where(
            q < 1, (1 - q) * np.log((1 - q) / (1 - p)), 0.0
        )
    return float(max(kl.mean(), 0.0))


def _metrics(pred: np.ndarray, truth: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    constant = np.ptp(pred) == 0 or np.ptp(truth) == 0  # no rank correlation is defined
    out = {
        "auc_truth": expected_auc(pred, truth),
        "spearman": np.nan if constant else float(stats.spearmanr(pred, truth)[0]),
        "excess_logloss": excess_logloss(pred, truth),
        "rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
        "mean_ratio": float(pred.mean() / truth.mean()),
    }
    if labels is not None and 0 < labels.sum() < len(labels):
        out["auc_labels"] = float(roc_auc_score(labels, pred))
    return out


def _predict_tasks(model: MultiTaskModel, data: MultiTaskData) -> pd.DataFrame:
    """``model.predict`` on ``data`` restricted to the model's tasks."""
    tasks = list(model.task_names)
    if tuple(data.task_names) != tuple(tasks):
        data = data.select_tasks(tasks)
    return model.predict(data)


def funnel_predictions(
    model, data: MultiTaskData, *, ctr_task: str = "click", ctcvr_task: str = "purchase"
) -> pd.DataFrame:
    """``pctr``, ``pcvr`` and ``pctcvr`` of a trained funnel model for every row of ``data``.

    Args:
        model: an :class:`~mtlbook.models.ESMM` (its own three outputs); an
            :class:`~mtlbook.models.AITM` (``pctr`` and ``pctcvr`` are its click and purchase
            outputs, ``pcvr = min(pctcvr / pctr, 1)``); or a pair ``(ctr_model, cvr_model)``
            of single-task models (``pctcvr = pctr · pcvr``), as :class:`NaiveCVR` trains them.
        data: the impressions (with at least the tasks the model was trained on).
        ctr_task, ctcvr_task: task names of the click and of "clicked and bought" (AITM) or of
            the conversion (the naive pair's CVR model predicts its only task).

    Returns:
        A DataFrame with columns ``pctr, pcvr, pctcvr`` (one row per impression).
    """
    if isinstance(model, ESMM):
        return _predict_tasks(model, data)[list(QUANTITIES)].astype(np.float64)
    if isinstance(model, AITM):
        pred = _predict_tasks(model, data)
        pctr = pred[ctr_task].to_numpy(np.float64)
        pctcvr = pred[ctcvr_task].to_numpy(np.float64)
        pcvr = np.minimum(pctcvr / np.maximum(pctr, 1e-12), 1.0)
        return pd.DataFrame({"pctr": pctr, "pcvr": pcvr, "pctcvr": pctcvr})
    if (
        isinstance(model, tuple)
        and len(model) == 2
        and all(isinstance(m, MultiTaskModel) and len(m.task_names) == 1 for m in model)
    ):
        ctr_model, cvr_model = model
        pctr = _predict_tasks(ctr_model, data).iloc[:, 0].to_numpy(np.float64)
        pcvr = _predict_tasks(cvr_model, data).iloc[:, 0].to_numpy(np.float64)
        return pd.DataFrame({"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr})
    raise TypeError(
        f"funnel_predictions needs an ESMM, an AITM or a pair (ctr_model, "
        f"cvr_model) of single-task models, got {type(model).__name__}"
    )


# ------------------------------------------------------------------------------- scoring
def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} has no column(s) {missing}; it has {list(frame.columns)}")


def score_against_truth(
    predictions: pd.DataFrame,
    quantity: str = "pcvr",
    *,
    by: Sequence[str] = ("model", "seed"),
    subsets: Sequence[str] = ("all", "clicked", "not clicked"),
    purchase_labels: pd.Series | None = None,
) -> pd.DataFrame:
    """Score one predicted quantity against its truth, per group and impression subset.

    Metrics (see :data:`METRIC_DIRECTION` for which way is better):

    * ``auc_truth`` — :func:`expected_auc` against the true probability;
    * ``spearman`` — rank correlation with the true probability;
    * ``excess_logloss`` — :func:`excess_logloss` (mean KL from the truth);
    * ``rmse`` — root mean squared error against the true probability;
    * ``mean_ratio`` — mean prediction / mean truth (1 = calibrated on average);
    * ``auc_labels`` — the ordinary AUC on the *observed* labels, where they exist: for
      ``pctr`` the clicks; for ``pcvr`` the purchases of the clicked impressions (subset
      ``clicked`` only); for ``pctcvr`` the purchases. It needs the ``purchase`` column in
      ``predictions`` (or ``purchase_labels``) for ``pcvr``/``pctcvr``; skipped otherwise.

    Args:
        predictions: :attr:`FunnelRun.predictions` (columns ``quantity``,
            ``true_<quantity>``, ``clicked`` and those in ``by``).
        quantity: ``"pctr"``, ``"pcvr"`` or ``"pctcvr"``.
        by: grouping columns; one set of scores per group.
        subsets: any of ``"all"``, ``"clicked"``, ``"not clicked"`` test impressions.
        purchase_labels: optional observed purchase labels aligned with ``predictions``.

    Returns:
        A tidy DataFrame ``[*by, quantity, subset, metric, value]``.
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    bad = [s for s in subsets if s not in ("all", "clicked", "not clicked")]
    if bad:
        raise ValueError(f"unknown subset(s) {bad}; use 'all', 'clicked', 'not clicked'")
    _check_columns(predictions, [quantity, f"true_{quantity}", "clicked", *by], "predictions")
    frame = predictions
    if purchase_labels is not None:
        frame = frame.assign(purchase=np.asarray(purchase_labels))
    rows = []
    for key, group in frame.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        clicked = group["clicked"].to_numpy(bool)
        for subset in subsets:
            mask = {"all": np.ones_like(clicked), "clicked": clicked, "not clicked": ~clicked}[
                subset
            ]
            if mask.sum() < 2:
                continue
            pred = np.clip(group[quantity].to_numpy(np.float64)[mask], 0.0, 1.0)
            truth = group[f"true_{quantity}"].to_numpy(np.float64)[mask]
            labels = None
            if quantity == "pctr":
                labels = clicked[mask].astype(float)
            elif "purchase" in group and (quantity == "pctcvr" or subset == "clicked"):
                labels = group["purchase"].to_numpy(np.float64)[mask]
            for metric, value in _metrics(pred, truth, labels).items():
                rows.append((*key, quantity, subset, metric, value))
    return pd.DataFrame(rows, columns=[*by, "quantity", "subset", "metric", "value"])


def paired_improvement(
    scores: pd.DataFrame,
    baseline: str,
    *,
    by: Sequence[str] = ("quantity", "subset", "metric"),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Paired (same seed) improvement of every model over ``baseline``, with an interval.

    Positive always means better than the baseline: ``m − b`` for higher-better metrics,
    ``b − m`` for lower-better ones and ``|log b| − |log m|`` for ``mean_ratio`` (closer to 1).

    Args:
        scores: output of :func:`score_against_truth` (columns ``model, seed, metric, value``
            and those in ``by``).
        baseline: the model to compare against.
        by: grouping columns besides ``model``.

    Returns:
        :func:`~mtlbook.analysis.intervals.mean_interval` of the improvements per
        ``[*by, model]`` (columns ``mean, std, n, lo, hi``) plus ``wins``: on how many seeds
        the model was better.
    """
    _check_columns(scores, ["model", "seed", "metric", "value", *by], "scores")
    if baseline not in set(scores["model"]):
        raise ValueError(
            f"baseline {baseline!r} not among the models {sorted(set(scores['model']))}"
        )
    unknown = sorted(set(scores["metric"]) - set(METRIC_DIRECTION))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRIC_DIRECTION)}")
    keys = [*by, "seed"]
    base = scores[scores["model"] == baseline].set_index(keys)["value"]
    joined = scores[scores["model"] != baseline].join(base.rename("baseline"), on=keys)
    joined = joined.dropna(subset=["baseline"])
    direction = joined["metric"].map(METRIC_DIRECTION)
    m, b = joined["value"].to_numpy(), joined["baseline"].to_numpy()
    ratio = (direction == 0).to_numpy()
    improvement = np.where(direction == 1, m - b, b - m)
    improvement[ratio] = np.abs(np.log(b[ratio])) - np.abs(np.log(m[ratio]))
    joined = joined.assign(improvement=improvement, win=improvement > 0)
    out = mean_interval(joined, [*by, "model"], value="improvement", confidence=confidence)
    wins = joined.groupby([*by, "model"], sort=False)["win"].sum().rename("wins")
    return out.join(wins, on=[*by, "model"])


def plot_truth_calibration(
    predictions: pd.DataFrame,
    quantity: str = "pcvr",
    *,
    seed: int | None = None,
    n_bins: int = 10,
    subsets: Sequence[str] = ("clicked", "not clicked"),
) -> plt.Figure:
    """Predicted against true probability, one panel per impression subset.

    Impressions are binned by the **true** probability (quantile bins); each line shows, per
    bin, the mean prediction of one model against the mean truth. On the diagonal a model is
    right on average for impressions of that true rate; above it, it overestimates.
    """
    _check_columns(
        predictions, ["model", "seed", "clicked", quantity, f"true_{quantity}"], "predictions"
    )
    frame = predictions if seed is None else predictions[predictions["seed"] == seed]
    if frame.empty:
        raise ValueError(f"no predictions for seed {seed!r}")
    fig, axes = plt.subplots(
        1, len(subsets), figsize=(4.6 * len(subsets), 4), sharex=True, sharey=True, squeeze=False
    )
    top = 0.0
    pooled = "all seeds" if seed is None else f"seed {seed}"
    for ax, subset in zip(axes[0], subsets, strict=True):
        mask = {
            "all": np.ones(len(frame), bool),
            "clicked": frame["clicked"].to_numpy(bool),
            "not clicked": ~frame["clicked"].to_numpy(bool),
        }[subset]
        part = frame[mask]
        bins = pd.qcut(part[f"true_{quantity}"], n_bins, labels=False, duplicates="drop")
        table = part.groupby(["model", bins])[[quantity, f"true_{quantity}"]].mean()
        for model in part["model"].unique():  # in the order the models appear
            curve = table.loc[model]
            ax.plot(curve[f"true_{quantity}"], curve[quantity], marker="o", ms=3, label=model)
            top = max(top, float(curve.to_numpy().max()))
        n = mask.sum() // frame["model"].nunique()
        ax.set(
            title=f"{subset} impressions (n={n:,}, {pooled})",
            xlabel=f"true {quantity} (bin mean)",
            ylabel=f"predicted {quantity} (bin mean)",
        )
    for ax in axes[0]:
        ax.plot([0, 1.05 * top], [0, 1.05 * top], color="grey", ls="--", lw=1, label="perfect")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
