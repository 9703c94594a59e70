"""Funnel models scored against the simulator's ground truth (chapter 12.5 of the book).

On real logs a post-click conversion rate (CVR) can only be checked on the clicked impressions,
the one place where a conversion label exists, yet a ranker uses it on *every* impression.
:func:`mtlbook.simulate_funnel` knows, for every impression, the true ``pctr``, the true
``pcvr`` (the purchase probability *if* it were clicked) and ``pctcvr = pctr·pcvr``, so this
module scores predictions against those probabilities directly:

* :class:`NaiveCVR` marks the classic baseline: one network for the CTR on every impression and
  a separate one for the CVR trained on the clicked impressions only (each with its own best
  epoch); :func:`fit_funnel_models` trains it, ESMM, AITM (or any funnel model) on several
  simulated worlds and returns every test prediction next to the truth;
* :func:`funnel_predictions` turns one trained model (ESMM, AITM, or a naive pair) into the
  columns ``pctr, pcvr, pctcvr``;
* :func:`expected_auc` is the AUC one would get, on average, if every impression's label were
  drawn from its true probability (no sampling noise); :func:`excess_logloss` is the expected
  log-loss above the irreducible one, i.e. the mean KL divergence from the truth;
  :func:`score_against_truth` reports these with the rank correlation, the RMSE and the ratio
  of mean prediction to mean truth on all, clicked and unclicked impressions;
  :func:`paired_improvement` gives the paired, sign-adjusted difference to a baseline;
* :func:`selection_shift` shows how clicked impressions differ from all of them (the
  sample-selection bias); :func:`plot_truth_calibration` draws predictions against the truth;
* :func:`rank_tradeoff` ranks impressions by ``RankScore = pCTR^α · pCVR^β`` (per user or
  globally, top ``k``) and measures the *true* expected clicks and purchases of what it picks;
  :func:`tradeoff_by_seed` does it for every model and seed (plus an oracle that ranks by the
  true rates) and :func:`plot_tradeoff` draws the clicks-vs-purchases curve.

Example:
    >>> import mtlbook as mb
    >>> from mtlbook.models import ESMM, SingleTask
    >>> worlds = [mb.simulate_funnel(5_000, seed=s, n_users=100, n_items=50)
    ...           .split((0.5, 0.2, 0.3), seed=s) for s in range(3)]
    >>> run = fit_funnel_models(worlds, range(3), {
    ...     "naive": NaiveCVR(lambda schema, seed: SingleTask(schema, seed=seed)),
    ...     "ESMM": lambda schema, seed: ESMM(schema, seed=seed)}, epochs=2)
    >>> scores = score_against_truth(run.predictions, "pcvr")
    >>> sorted(scores["metric"].unique())
    ['auc_labels', 'auc_truth', 'excess_logloss', 'mean_ratio', 'rmse', 'spearman']
    >>> gains = paired_improvement(scores, baseline="naive")  # > 0: ESMM is better
    >>> list(gains.columns)
    ['quantity', 'subset', 'metric', 'model', 'mean', 'std', 'n', 'lo', 'hi', 'wins']
    >>> trade = tradeoff_by_seed(run.predictions, alphas=[1], betas=[0, 1], k=5)
    >>> sorted(trade["model"].unique())
    ['ESMM', 'naive', 'oracle']
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from .data import MultiTaskData, Schema
from .experiments import mean_interval
from .models.aitm import AITM
from .models.base import MultiTaskModel
from .models.esmm import ESMM
from .population import fit_population
from .training import fit

__all__ = ["FunnelRun", "NaiveCVR", "excess_logloss", "expected_auc", "fit_funnel_models",
           "funnel_predictions", "paired_improvement", "plot_tradeoff", "plot_truth_calibration",
           "rank_tradeoff", "score_against_truth", "selection_shift", "top_k_mask",
           "tradeoff_by_seed"]

Factory = Callable[[Schema, int], MultiTaskModel]
QUANTITIES = ("pctr", "pcvr", "pctcvr")
#: Direction of each metric of :func:`score_against_truth`: +1 higher is better, −1 lower is
#: better, 0 closer to 1 is better (``mean_ratio``).
METRIC_DIRECTION = {"auc_truth": 1, "auc_labels": 1, "spearman": 1, "excess_logloss": -1,
                    "rmse": -1, "mean_ratio": 0}
_EPS = 1e-6


# ------------------------------------------------------------------------------- checks
def _as_prob(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} values, expected {n}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if len(arr) and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} must be probabilities in [0, 1], got values in "
                         f"[{arr.min():.3g}, {arr.max():.3g}]")
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
        raise ValueError("the AUC is undefined: prob gives no chance of both a positive and a "
                         "negative impression")
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
        kl = (np.where(q > 0, q * np.log(q / p), 0.0)
              + np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - p)), 0.0))
    return float(max(kl.mean(), 0.0))


def _metrics(pred: np.ndarray, truth: np.ndarray, labels: np.ndarray | None
             ) -> dict[str, float]:
    constant = np.ptp(pred) == 0 or np.ptp(truth) == 0  # no rank correlation is defined
    out = {"auc_truth": expected_auc(pred, truth),
           "spearman": np.nan if constant else float(stats.spearmanr(pred, truth)[0]),
           "excess_logloss": excess_logloss(pred, truth),
           "rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
           "mean_ratio": float(pred.mean() / truth.mean())}
    if labels is not None and 0 < labels.sum() < len(labels):
        out["auc_labels"] = float(roc_auc_score(labels, pred))
    return out


# ------------------------------------------------------------------------------- predictions
def _strip_groups(data: MultiTaskData) -> MultiTaskData:
    """A shallow copy without groups: validation then skips the (unneeded, slow) GAUC."""
    out = copy.copy(data)
    out.groups = None
    return out


def _predict_tasks(model: MultiTaskModel, data: MultiTaskData) -> pd.DataFrame:
    """``model.predict`` on ``data`` restricted to the model's tasks."""
    tasks = list(model.task_names)
    if tuple(data.task_names) != tuple(tasks):
        data = data.select_tasks(tasks)
    return model.predict(data)


def funnel_predictions(model, data: MultiTaskData, *, ctr_task: str = "click",
                       ctcvr_task: str = "purchase") -> pd.DataFrame:
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
    if isinstance(model, tuple) and len(model) == 2 and all(
            isinstance(m, MultiTaskModel) and len(m.task_names) == 1 for m in model):
        ctr_model, cvr_model = model
        pctr = _predict_tasks(ctr_model, data).iloc[:, 0].to_numpy(np.float64)
        pcvr = _predict_tasks(cvr_model, data).iloc[:, 0].to_numpy(np.float64)
        return pd.DataFrame({"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr})
    raise TypeError(f"funnel_predictions needs an ESMM, an AITM or a pair (ctr_model, "
                    f"cvr_model) of single-task models, got {type(model).__name__}")


@dataclass(frozen=True)
class NaiveCVR:
    """The click-space baseline for :func:`fit_funnel_models`: ``factory`` builds one model for
    the CTR, trained on every training impression, and another for the CVR, trained on the
    **clicked** training impressions only (label: bought), validated on the clicked validation
    impressions. Each gets its own best epoch. ``pctcvr = pctr · pcvr``.

    The clicked subset is much smaller than the training split, so an epoch over it has far
    fewer optimisation steps. ``cvr_epochs`` is the CVR model's maximum number of epochs;
    ``None`` (default) gives it as many mini-batch steps as the other models may take
    (``epochs × len(train) / len(clicked train)``, at most ``max_cvr_epochs``); early stopping
    applies as for the other models.
    """

    factory: Factory
    cvr_epochs: int | None = None
    max_cvr_epochs: int = 200


@dataclass
class FunnelRun:
    """What :func:`fit_funnel_models` returns.

    Attributes:
        predictions: tidy DataFrame, one row per (model, seed, test impression): ``model,
            seed, row, user, clicked, purchase`` (the observed labels), the predictions
            ``pctr, pcvr, pctcvr`` and the truth ``true_pctr, true_pcvr, true_pctcvr``.
        models: model name → list of trained models, one per seed (a ``(ctr, cvr)`` pair for
            :class:`NaiveCVR`).
        summary: one row per (model, part, seed) with the best epoch and the training time.
    """

    predictions: pd.DataFrame
    models: dict[str, list] = field(repr=False)
    summary: pd.DataFrame


def _check_worlds(worlds, seeds, ctr_task: str, ctcvr_task: str) -> list[tuple]:
    worlds = [tuple(w) for w in worlds]
    if len(worlds) != len(seeds):
        raise ValueError(f"{len(worlds)} worlds for {len(seeds)} seeds; give one "
                         "(train, valid, test) per seed")
    for i, world in enumerate(worlds):
        if len(world) != 3 or not all(isinstance(d, MultiTaskData) for d in world):
            raise TypeError(f"worlds[{i}] must be a (train, valid, test) triple of "
                            "MultiTaskData, e.g. simulate_funnel(...).split((0.5, 0.2, 0.3))")
        for d in world:
            missing = [t for t in (ctr_task, ctcvr_task) if t not in d.task_names]
            if missing:
                raise ValueError(f"worlds[{i}] has no task(s) {missing}; its tasks are "
                                 f"{list(d.task_names)}")
        test = world[2]
        if test.truth is None or not set(QUANTITIES) <= set(test.truth.columns):
            raise ValueError(f"worlds[{i}]'s test split has no truth columns {QUANTITIES}; "
                             "use data made by simulate_funnel")
    return worlds


def fit_funnel_models(worlds: Sequence[tuple[MultiTaskData, MultiTaskData, MultiTaskData]],
                      seeds: Sequence[int], models: Mapping[str, Factory | NaiveCVR], *,
                      ctr_task: str = "click", ctcvr_task: str = "purchase",
                      **fit_kwargs) -> FunnelRun:
    """Train funnel models on several simulated worlds; predict every test impression.

    Seed ``seeds[i]`` owns ``worlds[i]`` (its own simulation and split) and the models' initial
    weights, so the models of one seed are paired. A funnel model (``name → (schema, seed) →
    model``, e.g. ESMM or AITM) is trained on the tasks ``(ctr_task, ctcvr_task)`` of every
    training impression, all seeds as one vectorised population
    (:func:`mtlbook.fit_population`); a :class:`NaiveCVR` trains its CTR models as one
    population and its CVR models on the clicked impressions one seed at a time (the clicked
    subsets differ in size). Model selection uses the validation splits only.

    Args:
        worlds: one ``(train, valid, test)`` per seed from :func:`mtlbook.simulate_funnel`
            (the test split must carry the truth).
        seeds: the seeds, one per world.
        models: name → factory or :class:`NaiveCVR`.
        ctr_task, ctcvr_task: the click task and the "clicked and bought" task.
        **fit_kwargs: passed to :func:`mtlbook.fit_population` / :func:`mtlbook.fit`
            (``epochs``, ``lr``, ``batch_size``, ``early_stopping``, ...).

    Returns:
        A :class:`FunnelRun`.
    """
    seeds = [int(s) for s in seeds]
    worlds = _check_worlds(worlds, seeds, ctr_task, ctcvr_task)
    if not models:
        raise ValueError("models is empty")
    fit_kwargs.setdefault("progress", False)
    pair = [ctr_task, ctcvr_task]
    parts = [[_strip_groups(d.select_tasks(pair)) for d in world] for world in worlds]
    trained: dict[str, list] = {}
    summary: list[dict] = []

    def population(factory: Factory, tasks: list[str], label: str, part: str) -> list:
        train = [p[0].select_tasks(tasks) for p in parts]
        valid = [p[1].select_tasks(tasks) for p in parts]
        start = time.perf_counter()
        result = fit_population(lambda s: factory(train[0].schema, s), train, valid, seeds,
                                **fit_kwargs)
        seconds = time.perf_counter() - start
        for k, seed in enumerate(seeds):
            summary.append({"model": label, "part": part, "seed": seed,
                            "best_epoch": int(result.summary.loc[k, "best_epoch"]),
                            "seconds": seconds / len(seeds)})
        return [result.model(k) for k in range(len(seeds))]

    for name, spec in models.items():
        if isinstance(spec, NaiveCVR):
            ctr_models = population(spec.factory, [ctr_task], name, "ctr")
            cvr_models = []
            for seed, (train, valid, _) in zip(seeds, parts, strict=True):
                tr = train.subset(train.labels[ctr_task] == 1).select_tasks([ctcvr_task])
                va = valid.subset(valid.labels[ctr_task] == 1).select_tasks([ctcvr_task])
                model = spec.factory(tr.schema, seed)
                epochs = spec.cvr_epochs or min(spec.max_cvr_epochs, math.ceil(
                    fit_kwargs.get("epochs", 10) * len(train) / max(len(tr), 1)))
                result = fit(model, tr, va, seed=seed, **{**fit_kwargs, "epochs": epochs})
                summary.append({"model": name, "part": "cvr (clicked only)", "seed": seed,
                                "best_epoch": result.best_epoch,
                                "seconds": result.train_seconds})
                cvr_models.append(model.eval())
            trained[name] = list(zip(ctr_models, cvr_models, strict=True))
        elif callable(spec):
            trained[name] = population(spec, pair, name, "ctr + ctcvr")
        else:
            raise TypeError(f"models[{name!r}] must be a factory (schema, seed) -> model or a "
                            f"NaiveCVR, got {type(spec).__name__}")

    frames = []
    for i, (seed, world) in enumerate(zip(seeds, worlds, strict=True)):
        test = world[2]
        truth = test.truth[list(QUANTITIES)].add_prefix("true_").reset_index(drop=True)
        users = test.groups if test.groups is not None else np.zeros(len(test), dtype=int)
        for name, per_seed in trained.items():
            pred = funnel_predictions(per_seed[i], parts[i][2], ctr_task=ctr_task,
                                      ctcvr_task=ctcvr_task)
            frames.append(pd.concat([pd.DataFrame({
                "model": name, "seed": seed, "row": np.arange(len(test)), "user": users,
                "clicked": test.labels[ctr_task].astype(bool),
                "purchase": test.labels[ctcvr_task]}), pred, truth], axis=1))
    predictions = pd.concat(frames, ignore_index=True)
    return FunnelRun(predictions, trained, pd.DataFrame(summary))


# ------------------------------------------------------------------------------- scoring
def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} has no column(s) {missing}; it has {list(frame.columns)}")


def score_against_truth(predictions: pd.DataFrame, quantity: str = "pcvr", *,
                        by: Sequence[str] = ("model", "seed"),
                        subsets: Sequence[str] = ("all", "clicked", "not clicked"),
                        purchase_labels: pd.Series | None = None) -> pd.DataFrame:
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
            mask = {"all": np.ones_like(clicked), "clicked": clicked,
                    "not clicked": ~clicked}[subset]
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


def paired_improvement(scores: pd.DataFrame, baseline: str, *,
                       by: Sequence[str] = ("quantity", "subset", "metric"),
                       confidence: float = 0.95) -> pd.DataFrame:
    """Paired (same seed) improvement of every model over ``baseline``, with an interval.

    Positive always means better than the baseline: ``m − b`` for higher-better metrics,
    ``b − m`` for lower-better ones and ``|log b| − |log m|`` for ``mean_ratio`` (closer to 1).

    Args:
        scores: output of :func:`score_against_truth` (columns ``model, seed, metric, value``
            and those in ``by``).
        baseline: the model to compare against.
        by: grouping columns besides ``model``.

    Returns:
        :func:`~mtlbook.experiments.mean_interval` of the improvements per
        ``[*by, model]`` (columns ``mean, std, n, lo, hi``) plus ``wins``: on how many seeds
        the model was better.
    """
    _check_columns(scores, ["model", "seed", "metric", "value", *by], "scores")
    if baseline not in set(scores["model"]):
        raise ValueError(f"baseline {baseline!r} not among the models "
                         f"{sorted(set(scores['model']))}")
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


def selection_shift(data: MultiTaskData, *, ctr_task: str = "click") -> pd.DataFrame:
    """How the clicked impressions differ from all of them: the sample-selection bias.

    Returns one row per subset (``all``, ``clicked``, ``not clicked``) with the number of
    impressions, the mean of every truth column (``pctr``, ``pcvr``, ``pctcvr``) and of every
    dense feature (standardised over all impressions, so a mean far from 0 is a shift).
    """
    if data.truth is None or not set(QUANTITIES) <= set(data.truth.columns):
        raise ValueError(f"data has no truth columns {QUANTITIES}; use data made by "
                         "simulate_funnel")
    if ctr_task not in data.task_names:
        raise ValueError(f"no task {ctr_task!r}; the data's tasks are {list(data.task_names)}")
    clicked = data.labels[ctr_task].astype(bool)
    frame = data.truth.reset_index(drop=True).copy()
    if data.dense is not None:
        dense = (data.dense - data.dense.mean(0)) / (data.dense.std(0) + 1e-12)
        frame = frame.join(pd.DataFrame(dense, columns=data.schema.dense))
    rows = {}
    for name, mask in [("all", np.ones_like(clicked)), ("clicked", clicked),
                       ("not clicked", ~clicked)]:
        rows[name] = {"impressions": int(mask.sum()), **frame[mask].mean().to_dict()}
    return pd.DataFrame(rows).T


def plot_truth_calibration(predictions: pd.DataFrame, quantity: str = "pcvr", *,
                           seed: int | None = None, n_bins: int = 10,
                           subsets: Sequence[str] = ("clicked", "not clicked")) -> plt.Figure:
    """Predicted against true probability, one panel per impression subset.

    Impressions are binned by the **true** probability (quantile bins); each line shows, per
    bin, the mean prediction of one model against the mean truth. On the diagonal a model is
    right on average for impressions of that true rate; above it, it overestimates.
    """
    _check_columns(predictions, ["model", "seed", "clicked", quantity, f"true_{quantity}"],
                   "predictions")
    frame = predictions if seed is None else predictions[predictions["seed"] == seed]
    if frame.empty:
        raise ValueError(f"no predictions for seed {seed!r}")
    fig, axes = plt.subplots(1, len(subsets), figsize=(4.6 * len(subsets), 4), sharex=True,
                             sharey=True, squeeze=False)
    top = 0.0
    pooled = "all seeds" if seed is None else f"seed {seed}"
    for ax, subset in zip(axes[0], subsets, strict=True):
        mask = {"all": np.ones(len(frame), bool), "clicked": frame["clicked"].to_numpy(bool),
                "not clicked": ~frame["clicked"].to_numpy(bool)}[subset]
        part = frame[mask]
        bins = pd.qcut(part[f"true_{quantity}"], n_bins, labels=False, duplicates="drop")
        table = part.groupby(["model", bins])[[quantity, f"true_{quantity}"]].mean()
        for model in part["model"].unique():  # in the order the models appear
            curve = table.loc[model]
            ax.plot(curve[f"true_{quantity}"], curve[quantity], marker="o", ms=3, label=model)
            top = max(top, float(curve.to_numpy().max()))
        n = mask.sum() // frame["model"].nunique()
        ax.set(title=f"{subset} impressions (n={n:,}, {pooled})",
               xlabel=f"true {quantity} (bin mean)", ylabel=f"predicted {quantity} (bin mean)")
    for ax in axes[0]:
        ax.plot([0, 1.05 * top], [0, 1.05 * top], color="grey", ls="--", lw=1, label="perfect")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------- ranking
def top_k_mask(score, k: int, groups=None) -> np.ndarray:
    """Boolean mask of the ``k`` highest scores, globally or within each group.

    Ties keep the original order (stable sort). A group with fewer than ``k`` rows has all of
    them selected.

    Example:
        >>> top_k_mask([0.1, 0.9, 0.5, 0.3], 1, groups=[0, 0, 1, 1]).tolist()
        [False, True, True, False]
    """
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if np.isnan(score).any():
        raise ValueError("score contains NaN values")
    if groups is None:
        groups = np.zeros(len(score), dtype=np.int64)
    groups = np.asarray(groups).reshape(-1)
    if len(groups) != len(score):
        raise ValueError(f"groups has {len(groups)} entries, score {len(score)}")
    order = np.lexsort((-score, groups))  # by group, then by score descending (stable)
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))  # group start of each row
    mask = np.zeros(len(score), dtype=bool)
    mask[order[np.arange(len(order)) - first < k]] = True
    return mask


def rank_tradeoff(pctr, pcvr, true_pctr, true_pctcvr, *, alphas: Sequence[float],
                  betas: Sequence[float], k: int, groups=None) -> pd.DataFrame:
    """Expected clicks and purchases when ranking by ``pCTR^α · pCVR^β``.

    For every ``(α, β)`` of the grid, the top ``k`` impressions (per group, e.g. per user, or
    globally with ``groups=None``) by ``α·log pCTR + β·log pCVR`` (the same order as the
    product) are selected and scored with the **true** probabilities: expected clicks
    ``Σ true_pctr`` and expected purchases ``Σ true_pctcvr`` of the selection. Only the ratio
    ``β/α`` changes the order (scaling both exponents by a positive number does not).

    Args:
        pctr, pcvr: the model's predictions, ``[n]`` each.
        true_pctr, true_pctcvr: the truth, ``[n]`` each.
        alphas, betas: the exponents; every pair of the grid is evaluated (``α = β = 0`` ranks
            nothing: the selection is then the first ``k`` rows, a random pick for shuffled
            data).
        k: how many impressions to keep per group (or in total).
        groups: optional ``[n]`` group ids (users).

    Returns:
        DataFrame with columns ``alpha, beta, clicks, purchases, clicks_vs_best,
        purchases_vs_best, clicks_vs_random, purchases_vs_random``: totals over the selection,
        as a fraction of the best possible (top ``k`` by the true pCTR, resp. the true
        pCTCVR) and as a multiple of a random selection of the same size.
    """
    n = len(np.asarray(pctr).reshape(-1))
    log_ctr = np.log(np.clip(_as_prob("pctr", pctr, n), 1e-12, 1.0))
    log_cvr = np.log(np.clip(np.asarray(pcvr, dtype=np.float64).reshape(-1), 1e-12, None))
    if len(log_cvr) != n or not np.isfinite(log_cvr).all():
        raise ValueError(f"pcvr must hold {n} finite values ≥ 0")
    t_ctr = _as_prob("true_pctr", true_pctr, n)
    t_ctcvr = _as_prob("true_pctcvr", true_pctcvr, n)
    grid = [(float(a), float(b)) for a in alphas for b in betas]
    if not grid:
        raise ValueError("alphas and betas must not be empty")
    best_clicks = t_ctr[top_k_mask(t_ctr, k, groups)].sum()
    best_purchases = t_ctcvr[top_k_mask(t_ctcvr, k, groups)].sum()
    if groups is None:
        share = np.full(n, min(k, n) / n)
    else:
        _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True,
                                       return_counts=True)
        share = np.minimum(k, counts)[inverse] / counts[inverse]  # P(row is picked at random)
    random_clicks, random_purchases = (share * t_ctr).sum(), (share * t_ctcvr).sum()
    rows = []
    for a, b in grid:
        chosen = top_k_mask(a * log_ctr + b * log_cvr, k, groups)
        clicks, purchases = t_ctr[chosen].sum(), t_ctcvr[chosen].sum()
        rows.append({"alpha": a, "beta": b, "clicks": clicks, "purchases": purchases,
                     "clicks_vs_best": clicks / best_clicks,
                     "purchases_vs_best": purchases / best_purchases,
                     "clicks_vs_random": clicks / random_clicks,
                     "purchases_vs_random": purchases / random_purchases})
    return pd.DataFrame(rows)


def tradeoff_by_seed(predictions: pd.DataFrame, *, alphas: Sequence[float],
                     betas: Sequence[float], k: int, per_user: bool = True,
                     oracle: bool = True) -> pd.DataFrame:
    """:func:`rank_tradeoff` for every model and seed of :attr:`FunnelRun.predictions`.

    Args:
        predictions: columns ``model, seed, user, pctr, pcvr, true_pctr, true_pcvr,
            true_pctcvr``.
        alphas, betas, k: as in :func:`rank_tradeoff`.
        per_user: top ``k`` per user (a slate per user); ``False``: top ``k`` of all test
            impressions of the seed.
        oracle: also rank by the **true** pCTR and pCVR (model ``"oracle"``): the best
            trade-off that this ranking rule can reach.

    Returns:
        :func:`rank_tradeoff`'s columns plus ``model`` and ``seed``.
    """
    _check_columns(predictions, ["model", "seed", "user", "pctr", "pcvr", "true_pctr",
                                 "true_pcvr", "true_pctcvr"], "predictions")
    frames = []
    for (model, seed), part in predictions.groupby(["model", "seed"], sort=False):
        sources = [(model, part["pctr"], part["pcvr"])]
        if oracle and model == predictions["model"].iloc[0]:  # once per seed
            sources.append(("oracle", part["true_pctr"], part["true_pcvr"]))
        for name, pctr, pcvr in sources:
            frame = rank_tradeoff(pctr, pcvr, part["true_pctr"], part["true_pctcvr"],
                                  alphas=alphas, betas=betas, k=k,
                                  groups=part["user"].to_numpy() if per_user else None)
            frames.append(frame.assign(model=name, seed=seed))
    columns = ["model", "seed", *frames[0].columns[:-2]]
    return pd.concat(frames, ignore_index=True)[columns]


def plot_tradeoff(tradeoff: pd.DataFrame, *, models: Sequence[str] | None = None,
                  label_points: Sequence[tuple[float, float]] = ((1, 0), (1, 0.5), (1, 1),
                                                                 (1, 2), (0, 1)),
                  label_model: str | None = None,
                  highlight: tuple[float, float] | None = None,
                  ax: plt.Axes | None = None) -> plt.Figure:
    """Expected purchases against expected clicks, each as a fraction of its best possible
    value, along the ``(α, β)`` grid: one curve per model, averaged over seeds.

    Points are ordered by the angle ``atan2(β, α)``, the only thing the ranking depends on.
    ``label_points`` are annotated on ``label_model`` (default: the first model drawn);
    ``highlight`` marks one ``(α, β)`` of the grid on every curve with a star (the widget).

    Args:
        tradeoff: output of :func:`tradeoff_by_seed` (or :func:`rank_tradeoff` with a
            ``model`` column).
        models: the models to draw, in order (default: all).
        ax: the axes to draw on (default: a new figure).
    """
    _check_columns(tradeoff, ["model", "alpha", "beta", "clicks_vs_best", "purchases_vs_best"],
                   "tradeoff")
    models = list(tradeoff["model"].unique()) if models is None else list(models)
    unknown = [m for m in models if m not in set(tradeoff["model"])]
    if unknown or not models:
        raise ValueError(f"model(s) {unknown or models} not in tradeoff; it has "
                         f"{sorted(set(tradeoff['model']))}")
    label_model = models[0] if label_model is None else label_model
    fig, ax = (plt.subplots(figsize=(6.5, 5)) if ax is None else (ax.figure, ax))
    data = tradeoff[(tradeoff["alpha"] != 0) | (tradeoff["beta"] != 0)]
    for name in models:
        df = (data[data["model"] == name]
              .groupby(["alpha", "beta"], as_index=False)[["clicks_vs_best", "purchases_vs_best"]]
              .mean())
        df = df.assign(angle=np.arctan2(df["beta"], df["alpha"])).sort_values("angle")
        df = df.drop_duplicates("angle")
        line, = ax.plot(df["clicks_vs_best"], df["purchases_vs_best"], marker=".", label=name)
        if name == label_model:
            for a, b in label_points:
                hit = df[np.isclose(df["angle"], np.arctan2(b, a))]
                if len(hit):
                    x, y = hit.iloc[0][["clicks_vs_best", "purchases_vs_best"]]
                    right = x > (df["clicks_vs_best"].min() + df["clicks_vs_best"].max()) / 2
                    ax.annotate(f"α={a:g}, β={b:g}", (x, y), textcoords="offset points",
                                xytext=(-6, 6) if right else (6, -12), fontsize=8,
                                ha="right" if right else "left")
                    ax.plot(x, y, "o", color=line.get_color(), ms=5)
        if highlight is not None:
            hit = df[np.isclose(df["angle"], np.arctan2(highlight[1], highlight[0]))]
            if len(hit):
                ax.plot(hit["clicks_vs_best"].iloc[:1], hit["purchases_vs_best"].iloc[:1], "*",
                        ms=16, color=line.get_color(), markeredgecolor="black", zorder=5)
    ax.margins(0.08)
    ax.set(xlabel="expected clicks / best possible",
           ylabel="expected purchases / best possible")
    ax.legend(fontsize=8, loc="upper left")
    return fig
