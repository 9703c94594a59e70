"""Chapter 12.5 (CTR, CVR and CTCVR): training the funnel models and ranking with them.

The chapter scores ESMM, AITM and a naive CVR model against the simulator's true rates
(:mod:`mtlbook.analysis.truth`). This module holds its own study:

* :class:`NaiveCVR` marks the classic baseline: one network for the CTR on every impression and
  a separate one for the CVR trained on the clicked impressions only (each with its own best
  epoch); :func:`fit_funnel_models` trains it, ESMM, AITM (or any funnel model) on several
  simulated worlds and returns every test prediction next to the truth;
* :func:`selection_shift` shows how clicked impressions differ from all of them (the
  sample-selection bias);
* :func:`rank_tradeoff` ranks impressions by ``RankScore = pCTR^α · pCVR^β`` (per user or
  globally, top ``k``) and measures the *true* expected clicks and purchases of what it picks;
  :func:`tradeoff_by_seed` does it for every model and seed (plus an oracle that ranks by the
  true rates) and :func:`plot_tradeoff` draws the clicks-vs-purchases curve.

Example:
    >>> import mtlbook as mb
    >>> from mtlbook.analysis.truth import paired_improvement, score_against_truth
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

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..analysis._common import tidy_layout
from ..analysis.runs import Factory
from ..analysis.truth import QUANTITIES, _as_prob, _check_columns, funnel_predictions
from ..data import MultiTaskData
from ..training.loop import fit
from ..training.population import fit_population
from .diagrams import arrow, box, canvas, finish
from .page import zh, zh_figure, zh_table

if TYPE_CHECKING:
    from matplotlib.figure import SubFigure

__all__ = [
    "METRIC_NAMES",
    "MODEL_NAMES",
    "ZH_FUNNEL",
    "FunnelRun",
    "NaiveCVR",
    "fit_funnel_models",
    "plot_aitm_diagram",
    "plot_esmm_diagram",
    "plot_selection_study",
    "plot_tradeoff",
    "rank_tradeoff",
    "selection_shift",
    "top_k_mask",
    "tradeoff_by_seed",
    "zh_funnel_table",
    "zh_truth_calibration",
]

#: The chapter's names of the models in figures and tables (others are shown as they are).
MODEL_NAMES: dict[str, str] = {"naive": "朴素 CVR", "oracle": "oracle（真实概率）"}
#: Chinese names of the scores of :func:`mtlbook.analysis.truth.score_against_truth`.
METRIC_NAMES: dict[str, str] = {
    "auc_truth": "对真实概率的 AUC",
    "auc_labels": "对观测标签的 AUC",
    "spearman": "秩相关",
    "excess_logloss": "超额对数损失",
    "rmse": "RMSE",
    "mean_ratio": "均值比",
}
QUANTITY_NAMES: dict[str, str] = {"pctr": "pCTR", "pcvr": "pCVR", "pctcvr": "pCTCVR"}
WORLD_NAMES: dict[str, str] = {"small": "小世界", "default": "默认世界"}
#: Every English word of the chapter's tables and of the library's figures it shows, in Chinese
#: (used with :func:`mtlbook.book.page.zh_table` / :func:`~mtlbook.book.page.zh_figure`).
ZH_FUNNEL: dict[str, str] = {
    **MODEL_NAMES,
    **METRIC_NAMES,
    **QUANTITY_NAMES,
    **WORLD_NAMES,
    "all": "全部曝光",
    "clicked": "点击过的曝光",
    "not clicked": "没被点击的曝光",
    "impressions": "曝光数",
    "quantity": "预测量",
    "subset": "曝光子集",
    "wins": "胜出种子数",
    "part": "部分",
    "ctr": "CTR 模型",
    "cvr (clicked only)": "CVR 模型（只用点击样本）",
    "ctr + ctcvr": "CTR 与 CTCVR（一个模型）",
    "log_price": "对数价格",
    "user_activity": "用户活跃度",
    "item_popularity": "物品热度",
    "clicks_vs_best": "期望点击 / 最优",
    "purchases_vs_best": "期望购买 / 最优",
    "world": "世界",
    "context_noise": "上下文噪声",
    "selection_bias": "选择强度 ρ",
    "max": "最大值",
    "perfect": "完全准确",
}


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
        raise ValueError(
            f"{len(worlds)} worlds for {len(seeds)} seeds; give one (train, valid, test) per seed"
        )
    for i, world in enumerate(worlds):
        if len(world) != 3 or not all(isinstance(d, MultiTaskData) for d in world):
            raise TypeError(
                f"worlds[{i}] must be a (train, valid, test) triple of "
                "MultiTaskData, e.g. simulate_funnel(...).split((0.5, 0.2, 0.3))"
            )
        for d in world:
            missing = [t for t in (ctr_task, ctcvr_task) if t not in d.task_names]
            if missing:
                raise ValueError(
                    f"worlds[{i}] has no task(s) {missing}; its tasks are {list(d.task_names)}"
                )
        test = world[2]
        if test.truth is None or not set(QUANTITIES) <= set(test.truth.columns):
            raise ValueError(
                f"worlds[{i}]'s test split has no truth columns {QUANTITIES}; "
                "use data made by simulate_funnel"
            )
    return worlds


def fit_funnel_models(
    worlds: Sequence[tuple[MultiTaskData, MultiTaskData, MultiTaskData]],
    seeds: Sequence[int],
    models: Mapping[str, Factory | NaiveCVR],
    *,
    ctr_task: str = "click",
    ctcvr_task: str = "purchase",
    **fit_kwargs,
) -> FunnelRun:
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
    parts = [[d.select_tasks(pair).without_groups() for d in world] for world in worlds]
    trained: dict[str, list] = {}
    summary: list[dict] = []

    def population(factory: Factory, tasks: list[str], label: str, part: str) -> list:
        train = [p[0].select_tasks(tasks) for p in parts]
        valid = [p[1].select_tasks(tasks) for p in parts]
        start = time.perf_counter()
        result = fit_population(
            lambda s: factory(train[0].schema, s), train, valid, seeds, **fit_kwargs
        )
        seconds = time.perf_counter() - start
        for k, seed in enumerate(seeds):
            summary.append(
                {
                    "model": label,
                    "part": part,
                    "seed": seed,
                    "best_epoch": int(result.summary.loc[k, "best_epoch"]),
                    "seconds": seconds / len(seeds),
                }
            )
        return [result.model(k) for k in range(len(seeds))]

    for name, spec in models.items():
        if isinstance(spec, NaiveCVR):
            ctr_models = population(spec.factory, [ctr_task], name, "ctr")
            cvr_models = []
            for seed, (train, valid, _) in zip(seeds, parts, strict=True):
                tr = train.subset(train.labels[ctr_task] == 1).select_tasks([ctcvr_task])
                va = valid.subset(valid.labels[ctr_task] == 1).select_tasks([ctcvr_task])
                model = spec.factory(tr.schema, seed)
                epochs = spec.cvr_epochs or min(
                    spec.max_cvr_epochs,
                    math.ceil(fit_kwargs.get("epochs", 10) * len(train) / max(len(tr), 1)),
                )
                result = fit(model, tr, va, seed=seed, **{**fit_kwargs, "epochs": epochs})
                summary.append(
                    {
                        "model": name,
                        "part": "cvr (clicked only)",
                        "seed": seed,
                        "best_epoch": result.best_epoch,
                        "seconds": result.train_seconds,
                    }
                )
                cvr_models.append(model.eval())
            trained[name] = list(zip(ctr_models, cvr_models, strict=True))
        elif callable(spec):
            trained[name] = population(spec, pair, name, "ctr + ctcvr")
        else:
            raise TypeError(
                f"models[{name!r}] must be a factory (schema, seed) -> model or a "
                f"NaiveCVR, got {type(spec).__name__}"
            )

    frames = []
    for i, (seed, world) in enumerate(zip(seeds, worlds, strict=True)):
        test = world[2]
        truth = test.truth[list(QUANTITIES)].add_prefix("true_").reset_index(drop=True)
        users = test.groups if test.groups is not None else np.zeros(len(test), dtype=int)
        for name, per_seed in trained.items():
            pred = funnel_predictions(
                per_seed[i], parts[i][2], ctr_task=ctr_task, ctcvr_task=ctcvr_task
            )
            frames.append(
                pd.concat(
                    [
                        pd.DataFrame(
                            {
                                "model": name,
                                "seed": seed,
                                "row": np.arange(len(test)),
                                "user": users,
                                "clicked": test.labels[ctr_task].astype(bool),
                                "purchase": test.labels[ctcvr_task],
                            }
                        ),
                        pred,
                        truth,
                    ],
                    axis=1,
                )
            )
    predictions = pd.concat(frames, ignore_index=True)
    return FunnelRun(predictions, trained, pd.DataFrame(summary))


def selection_shift(data: MultiTaskData, *, ctr_task: str = "click") -> pd.DataFrame:
    """How the clicked impressions differ from all of them: the sample-selection bias.

    Returns one row per subset (``all``, ``clicked``, ``not clicked``) with the number of
    impressions, the mean of every truth column (``pctr``, ``pcvr``, ``pctcvr``) and of every
    dense feature (standardised over all impressions, so a mean far from 0 is a shift).
    """
    if data.truth is None or not set(QUANTITIES) <= set(data.truth.columns):
        raise ValueError(
            f"data has no truth columns {QUANTITIES}; use data made by simulate_funnel"
        )
    if ctr_task not in data.task_names:
        raise ValueError(f"no task {ctr_task!r}; the data's tasks are {list(data.task_names)}")
    clicked = data.labels[ctr_task].astype(bool)
    frame = data.truth.reset_index(drop=True).copy()
    if data.dense is not None:
        dense = (data.dense - data.dense.mean(0)) / (data.dense.std(0) + 1e-12)
        frame = frame.join(pd.DataFrame(dense, columns=data.schema.dense))
    rows = {}
    for name, mask in [
        ("all", np.ones_like(clicked)),
        ("clicked", clicked),
        ("not clicked", ~clicked),
    ]:
        rows[name] = {"impressions": int(mask.sum()), **frame[mask].mean().to_dict()}
    return pd.DataFrame(rows).T


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


def rank_tradeoff(
    pctr,
    pcvr,
    true_pctr,
    true_pctcvr,
    *,
    alphas: Sequence[float],
    betas: Sequence[float],
    k: int,
    groups=None,
) -> pd.DataFrame:
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
        _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
        share = np.minimum(k, counts)[inverse] / counts[inverse]  # P(row is picked at random)
    random_clicks, random_purchases = (share * t_ctr).sum(), (share * t_ctcvr).sum()
    rows = []
    for a, b in grid:
        chosen = top_k_mask(a * log_ctr + b * log_cvr, k, groups)
        clicks, purchases = t_ctr[chosen].sum(), t_ctcvr[chosen].sum()
        rows.append(
            {
                "alpha": a,
                "beta": b,
                "clicks": clicks,
                "purchases": purchases,
                "clicks_vs_best": clicks / best_clicks,
                "purchases_vs_best": purchases / best_purchases,
                "clicks_vs_random": clicks / random_clicks,
                "purchases_vs_random": purchases / random_purchases,
            }
        )
    return pd.DataFrame(rows)


def tradeoff_by_seed(
    predictions: pd.DataFrame,
    *,
    alphas: Sequence[float],
    betas: Sequence[float],
    k: int,
    per_user: bool = True,
    oracle: bool = True,
) -> pd.DataFrame:
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
    _check_columns(
        predictions,
        ["model", "seed", "user", "pctr", "pcvr", "true_pctr", "true_pcvr", "true_pctcvr"],
        "predictions",
    )
    frames = []
    for (model, seed), part in predictions.groupby(["model", "seed"], sort=False):
        sources = [(model, part["pctr"], part["pcvr"])]
        if oracle and model == predictions["model"].iloc[0]:  # once per seed
            sources.append(("oracle", part["true_pctr"], part["true_pcvr"]))
        for name, pctr, pcvr in sources:
            frame = rank_tradeoff(
                pctr,
                pcvr,
                part["true_pctr"],
                part["true_pctcvr"],
                alphas=alphas,
                betas=betas,
                k=k,
                groups=part["user"].to_numpy() if per_user else None,
            )
            frames.append(frame.assign(model=name, seed=seed))
    columns = ["model", "seed", *frames[0].columns[:-2]]
    return pd.concat(frames, ignore_index=True)[columns]


def plot_tradeoff(
    tradeoff: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    label_points: Sequence[tuple[float, float]] = ((1, 0), (1, 0.5), (1, 1), (1, 2), (0, 1)),
    label_model: str | None = None,
    highlight: tuple[float, float] | None = None,
    ax: plt.Axes | None = None,
) -> plt.Figure | SubFigure:
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
    _check_columns(
        tradeoff, ["model", "alpha", "beta", "clicks_vs_best", "purchases_vs_best"], "tradeoff"
    )
    models = list(tradeoff["model"].unique()) if models is None else list(models)
    unknown = [m for m in models if m not in set(tradeoff["model"])]
    if unknown or not models:
        raise ValueError(
            f"model(s) {unknown or models} not in tradeoff; it has {sorted(set(tradeoff['model']))}"
        )
    label_model = models[0] if label_model is None else label_model
    fig, ax = plt.subplots(figsize=(6.5, 5)) if ax is None else (ax.figure, ax)
    data = tradeoff[(tradeoff["alpha"] != 0) | (tradeoff["beta"] != 0)]
    for name in models:
        df = (
            data[data["model"] == name]
            .groupby(["alpha", "beta"], as_index=False)[["clicks_vs_best", "purchases_vs_best"]]
            .mean()
        )
        df = df.assign(angle=np.arctan2(df["beta"], df["alpha"])).sort_values("angle")
        df = df.drop_duplicates("angle")
        (line,) = ax.plot(
            df["clicks_vs_best"],
            df["purchases_vs_best"],
            marker=".",
            label=MODEL_NAMES.get(name, name),
        )
        if name == label_model:
            for a, b in label_points:
                hit = df[np.isclose(df["angle"], np.arctan2(b, a))]
                if len(hit):
                    x, y = hit.iloc[0][["clicks_vs_best", "purchases_vs_best"]]
                    right = x > (df["clicks_vs_best"].min() + df["clicks_vs_best"].max()) / 2
                    ax.annotate(
                        f"α={a:g}, β={b:g}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(-6, 6) if right else (6, -12),
                        fontsize=8,
                        ha="right" if right else "left",
                    )
                    ax.plot(x, y, "o", color=line.get_color(), ms=5)
        if highlight is not None:
            hit = df[np.isclose(df["angle"], np.arctan2(highlight[1], highlight[0]))]
            if len(hit):
                ax.plot(
                    hit["clicks_vs_best"].iloc[:1],
                    hit["purchases_vs_best"].iloc[:1],
                    "*",
                    ms=16,
                    color=line.get_color(),
                    markeredgecolor="black",
                    zorder=5,
                )
    ax.margins(0.08)
    ax.set(xlabel="期望点击 / 最多可能的点击", ylabel="期望购买 / 最多可能的购买")
    ax.legend(fontsize=8, loc="upper left")
    return fig


# ------------------------------------------------------------------------------- predictions


def plot_selection_study(
    scores: pd.DataFrame,
    gains: pd.DataFrame,
    *,
    context_noise: float = 1.0,
    quantity: str = "pcvr",
    metrics: Sequence[str] = ("auc_truth", "excess_logloss"),
) -> plt.Figure | SubFigure:
    """The full-tier selection study of the chapter at a glance, against the selection on
    unobservables ``ρ`` (``selection_bias``), one line style per world.

    Left: each model's mean ratio (mean prediction / mean truth, over all test impressions,
    averaged over seeds). Then one panel per metric of ``metrics``: ESMM's paired improvement
    over the naive model with its interval (positive: ESMM is better).

    Args:
        scores: the study's tidy rows (columns ``world, context_noise, selection_bias, model,
            seed, quantity, subset, metric, value``).
        gains: the same cells' paired improvements (columns ``world, context_noise,
            selection_bias, quantity, subset, metric, model, mean, lo, hi``).
        context_noise: the cells drawn (the ``ρ`` sweep's noise level).
        quantity: the predicted quantity (``pcvr`` or ``pctcvr``).
        metrics: the improvements drawn, one panel each.
    """
    _check_columns(
        scores, ["world", "context_noise", "selection_bias", "model", "metric", "value"], "scores"
    )
    _check_columns(gains, ["world", "context_noise", "selection_bias", "mean", "lo", "hi"], "gains")
    pick = (scores["context_noise"] == context_noise) & (scores["quantity"] == quantity)
    part = scores[pick & (scores["subset"] == "all") & (scores["metric"] == "mean_ratio")]
    if part.empty:
        raise ValueError(f"no {quantity} mean_ratio rows at context_noise={context_noise}")
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(5 * (1 + len(metrics)), 3.8))
    styles = dict(zip(part["world"].unique(), ["-", "--", ":", "-."], strict=False))
    ratio = part.groupby(["world", "model", "selection_bias"], as_index=False)["value"].mean()
    for (world, model), line in ratio.groupby(["world", "model"], sort=False):
        axes[0].plot(
            line["selection_bias"],
            line["value"],
            styles[world],
            marker="o",
            color="C0" if model == "ESMM" else "C1",
            label=f"{MODEL_NAMES.get(model, model)}，{WORLD_NAMES.get(world, world)}",
        )
    axes[0].axhline(1, color="grey", lw=0.8)
    name = QUANTITY_NAMES.get(quantity, quantity)
    axes[0].set(
        xlabel="特征看不到的选择强度 ρ",
        ylabel=f"平均 {name} / 平均真实 {name}",
        title="全部曝光上的高估",
    )
    axes[0].legend(fontsize=8)
    chosen = gains[
        (gains["context_noise"] == context_noise)
        & (gains["quantity"] == quantity)
        & (gains["subset"] == "all")
    ]
    for ax, metric in zip(axes[1:], metrics, strict=True):
        rows = chosen[chosen["metric"] == metric]
        for world, line in rows.groupby("world", sort=False):
            line = line.sort_values("selection_bias")
            ax.errorbar(
                line["selection_bias"],
                line["mean"],
                yerr=[line["mean"] - line["lo"], line["hi"] - line["mean"]],
                fmt=styles.get(world, "-"),
                marker="o",
                capsize=3,
                label=WORLD_NAMES.get(world, world),
            )
        ax.axhline(0, color="grey", lw=0.8)
        label = METRIC_NAMES.get(metric, metric)
        ax.set(
            xlabel="特征看不到的选择强度 ρ",
            ylabel="ESMM − 朴素 CVR（正数更好）",
            title=f"ESMM 的改进：{label}",
        )
        ax.legend(fontsize=8)
    tidy_layout(fig)
    return fig


# ------------------------------------------------------------------------------- Chinese labels
def zh_funnel_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for the reader: column names, row labels and cells in Chinese
    (:data:`ZH_FUNNEL` on top of :data:`mtlbook.book.page.ZH_TERMS`), multi-level rows too."""
    out = zh_table(frame, columns=ZH_FUNNEL, values=ZH_FUNNEL, index=False)
    if isinstance(frame.index, pd.MultiIndex):
        out.index = pd.MultiIndex.from_tuples(
            [tuple(zh(v, ZH_FUNNEL) for v in row) for row in frame.index],
            names=[zh(n, ZH_FUNNEL) for n in frame.index.names],
        )
    else:
        out.index = pd.Index(
            [zh(v, ZH_FUNNEL) for v in frame.index], name=zh(frame.index.name, ZH_FUNNEL)
        )
    return out


def zh_truth_calibration(fig: Figure | SubFigure) -> Figure | SubFigure:
    """:func:`mtlbook.analysis.truth.plot_truth_calibration`'s figure with Chinese labels."""
    extra = dict(ZH_FUNNEL)
    pooled = {"all seeds": "全部种子"}
    for ax in fig.axes:
        title = ax.get_title()
        match = re.fullmatch(r"(.+) impressions \(n=([\d,]+), (.+)\)", title)
        if match:
            subset, n, seeds = match.groups()
            seeds = pooled.get(seeds, seeds.replace("seed", "种子"))
            extra[title] = f"{ZH_FUNNEL.get(subset, subset)}（n={n}，{seeds}）"
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            match = re.fullmatch(r"(true |predicted )(\w+) \(bin mean\)", label)
            if match:
                kind = "真实" if match.group(1) == "true " else "预测的"
                name = QUANTITY_NAMES.get(match.group(2), match.group(2))
                extra[label] = f"{kind} {name}（组内均值）"
    zh_figure(fig, extra=extra)  # type: ignore[arg-type]  # a SubFigure has the same API here
    return fig


# ------------------------------------------------------------------------------- diagrams
def plot_esmm_diagram() -> Figure:
    """ESMM: exposure features → shared embedding → a CTR tower and a CVR tower; pCTCVR is the
    product pCTR × pCVR; the two losses sit on pCTR and pCTCVR, both over every impression."""
    fig, ax = canvas(8.0, 5.6, scale=0.95)
    box(ax, 4.0, 0.4, 6.4, 0.45, "曝光特征 x（全部曝光，点没点都算）", "input")
    box(ax, 4.0, 1.3, 6.4, 0.45, "共享嵌入（两座塔共用）", "embedding")
    arrow(ax, 4.0, 0.63, 4.0, 1.07)
    for x, tower, out, kind in ((2.2, "CTR 塔", "pCTR", "task"), (5.8, "CVR 塔", "pCVR", "task2")):
        box(ax, x, 2.4, 1.8, 0.55, tower, kind)
        box(ax, x, 3.4, 1.3, 0.45, out, "output")
        arrow(ax, x, 1.53, x, 2.12)
        arrow(ax, x, 2.68, x, 3.17)
        arrow(ax, x + (0.5 if x < 4 else -0.5), 3.63, 4.0 + (-0.25 if x < 4 else 0.25), 4.15)
    box(ax, 4.0, 4.4, 0.55, 0.45, "×", "op", fontsize=13)
    box(ax, 4.0, 5.2, 1.6, 0.45, "pCTCVR", "output")
    arrow(ax, 4.0, 4.63, 4.0, 4.97)
    notes = (
        (1.35, 3.4, "right", "损失：点击\n（全部曝光）"),
        (6.65, 3.4, "left", "没有自己的损失"),
        (4.95, 5.2, "left", "损失：点击且购买\n（全部曝光）"),
    )
    for x, y, ha, text in notes:
        ax.text(x, y, text, ha=ha, va="center", fontsize=9, color="#555555")
    return finish(fig)


def plot_aitm_diagram(steps: Sequence[str] = ("点击", "购买")) -> Figure:
    """AITM for two steps: a tower per step on the shared embedding; the information transfer
    unit passes the first step's vector on, the attention unit mixes it with the second step's
    own vector; a head per step; the calibrator penalises pCTCVR > pCTR."""
    first, second = steps
    fig, ax = canvas(8.0, 6.2, scale=0.95)
    box(ax, 4.0, 0.4, 6.4, 0.45, "曝光特征 x（全部曝光）", "input")
    box(ax, 4.0, 1.3, 6.4, 0.45, "共享嵌入", "embedding")
    arrow(ax, 4.0, 0.63, 4.0, 1.07)
    for x, step, sub, kind in ((1.7, first, "1", "task"), (6.3, second, "2", "task2")):
        box(ax, x, 2.4, 2.0, 0.55, f"{step}塔 → $q_{sub}$", kind)
        arrow(ax, x, 1.53, x, 2.12)
    # step 1: z_1 = q_1 goes to its head and to the transfer unit
    box(ax, 3.7, 3.3, 1.9, 0.6, "信息传递\n$p_1 = \\mathrm{ReLU}(W z_1 + c)$", "gate", fontsize=9)
    arrow(ax, 1.7, 2.68, 1.7, 4.57)
    arrow(ax, 2.7, 2.55, 2.95, 3.0)
    ax.text(2.6, 2.95, "$z_1 = q_1$", fontsize=9, ha="right", color="#555555")
    # step 2: attention over (p_1, q_2)
    box(ax, 6.3, 3.9, 2.6, 0.7, "注意力单元\n$z_2 = w_1 h_3(p_1) + w_2 h_3(q_2)$", "op", fontsize=9)
    arrow(ax, 4.65, 3.5, 4.98, 3.85)
    arrow(ax, 6.3, 2.68, 6.3, 3.55)
    ax.text(4.75, 3.8, "$p_1$", fontsize=9, ha="right", color="#555555")
    ax.text(6.4, 3.1, "$q_2$", fontsize=9, ha="left", color="#555555")
    arrow(ax, 6.3, 4.25, 6.3, 4.57)
    for x, head, out in ((1.7, f"{first}头", "pCTR"), (6.3, f"{second}头", "pCTCVR")):
        box(ax, x, 4.8, 1.4, 0.45, head, "task" if x < 4 else "task2")
        box(ax, x, 5.7, 1.4, 0.45, out, "output")
        arrow(ax, x, 5.03, x, 5.47)
    arrow(ax, 2.45, 5.7, 5.55, 5.7, style="<|-|>", dashed=True, color="#aa3333")
    ax.text(4.0, 5.85, "校准器：惩罚 pCTCVR > pCTR", ha="center", fontsize=9, color="#aa3333")
    ax.text(4.0, 5.45, "两个损失都在全部曝光上", ha="center", fontsize=8.5, color="#555555")
    return finish(fig)
