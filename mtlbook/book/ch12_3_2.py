"""Sweeping the strength ``λ`` of soft parameter sharing, all runs as one vectorised population.

:class:`~mtlbook.models.SoftSharing` moves from independent task networks (``λ = 0``) to hard
sharing (``λ → ∞``) as the penalty ``λ Σ_{a<b} ‖θ_a − θ_b‖²`` grows. Chapter 12.3.2 of the book
trains it for several ``λ`` and several seeds. Since ``λ`` is a number, not part of the
architecture, every ``(λ, seed)`` pair can be one member of a single
:func:`~mtlbook.training.population.fit_population` run: :class:`SweepSoftSharing` stores ``λ`` as a
frozen (non-trainable) parameter, so the members differ only in their parameters, as a
population requires.

* :func:`soft_sharing_sweep` trains the grid and reports, per member, the test metrics at the
  validation-best epoch, that epoch's validation loss and the distance ``‖θ_a − θ_b‖`` the
  penalty controls (before and after training);
* the reference models (the single-task baseline, Shared-Bottom) train on the same split,
  also as populations, with :func:`mtlbook.analysis.runs.population_scores`;
* :func:`select_lambda` picks ``λ`` on the validation loss only;
* :func:`plot_lambda_sweep` draws each task's test metric against ``λ`` (log axis, ``λ = 0`` at
  the left edge) with the references as horizontal bands, and :func:`plot_weight_distance` the
  distance against ``λ``;
* :func:`plot_soft_sharing_diagram` draws the architecture: one network per task, the tied
  layers joined by dashed "L2 约束" links.

The figures are labelled in Chinese (task and model names through
:func:`mtlbook.book.page.zh`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import nn

from ..analysis.intervals import mean_interval
from ..data import MultiTaskData, Schema
from ..metrics import LOWER_IS_BETTER
from ..models.soft_sharing import SoftSharing
from ..training.population import fit_population
from .diagrams import arrow, box, canvas, finish
from .page import zh

__all__ = [
    "SweepSoftSharing",
    "plot_lambda_sweep",
    "plot_soft_sharing_diagram",
    "plot_weight_distance",
    "select_lambda",
    "soft_sharing_sweep",
]


class SweepSoftSharing(SoftSharing):
    """:class:`~mtlbook.models.SoftSharing` whose ``λ`` is a frozen parameter.

    Identical to ``SoftSharing`` in every respect (same layers, same initial weights for the
    same ``seed``, same loss) except that ``λ`` is stored in ``penalty_weight``, a parameter
    with ``requires_grad=False``: the optimiser never changes it, but members of a
    :func:`~mtlbook.training.population.fit_population` run may hold different values of it.
    ``n_parameters()`` counts trainable parameters only, so it is unchanged.

    Example:
        >>> from mtlbook import make_correlated_tasks
        >>> data = make_correlated_tasks(500, 0.5)
        >>> model = SweepSoftSharing(data.schema, l2_lambda=0.1, hidden_units=(16,))
        >>> bool(torch.isclose(model.regularization(), 0.1 * model.distance()))
        True
    """

    def __init__(self, schema: Schema, l2_lambda: float = 1e-2, **options) -> None:
        super().__init__(schema, l2_lambda=l2_lambda, **options)
        self.penalty_weight = nn.Parameter(torch.tensor(self.l2_lambda), requires_grad=False)

    def regularization(self) -> torch.Tensor:
        """``λ Σ_{a<b} ‖θ_a − θ_b‖²`` with ``λ`` read from ``penalty_weight``."""
        return self.penalty_weight * self.distance()


def _check_lambdas(lambdas: Sequence[float]) -> list[float]:
    values = [float(v) for v in lambdas]
    if not values:
        raise ValueError("lambdas is empty; give at least one λ, e.g. [0, 1e-3, 1e-2, 1e-1, 1]")
    bad = [v for v in values if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise ValueError(f"every λ must be a finite number ≥ 0, got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"lambdas contains repeated values: {values}")
    return values


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, int | np.integer):
        raise TypeError(f"seeds must be a sequence such as range({seeds}), got one integer")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    if min(seeds) < 0:
        raise ValueError(f"seeds must be ≥ 0, got {seeds}")
    return seeds


def soft_sharing_sweep(
    train: MultiTaskData,
    valid: MultiTaskData,
    test: MultiTaskData,
    lambdas: Sequence[float],
    seeds: Sequence[int],
    *,
    model_options: Mapping | None = None,
    **fit_kwargs,
) -> pd.DataFrame:
    """Train :class:`~mtlbook.models.SoftSharing` for every ``λ`` × seed in one population.

    Member ``(λ_i, seeds[j])`` starts from ``SoftSharing(..., seed=seeds[j])``: for a given
    seed, every ``λ`` starts from the same initial weights. Its mini-batch order is drawn from
    the member's own code ``i·S + seeds[j]`` (``S = max(seeds) + 1``), so batch orders differ
    between ``λ`` values; each member selects its best epoch and stops early on ``valid``, as
    :func:`mtlbook.fit` would. All members share one training set: the spread over seeds
    measures the randomness of initialisation and batch order, not that of the data.

    Args:
        train, valid, test: the split; ``test`` is scored once, at each member's best epoch.
        lambdas: the ``λ`` values (``0`` gives independent networks).
        seeds: the seeds of the initial weights.
        model_options: keyword arguments of ``SoftSharing`` (``hidden_units``, ...).
        **fit_kwargs: passed to :func:`~mtlbook.training.population.fit_population` (``epochs``,
            ``lr``, ``early_stopping``, ...).

    Returns:
        Tidy DataFrame with columns ``l2_lambda, seed, task, metric, value`` (test metrics),
        ``valid_loss`` (validation ``monitor`` value at the best epoch), ``best_epoch``,
        ``distance`` (``sqrt(Σ_{a<b} ‖θ_a − θ_b‖²)`` over the tied parameters after training)
        and ``initial_distance`` (the same before training).

    Example:
        >>> from mtlbook import make_correlated_tasks
        >>> data = make_correlated_tasks(600, 0.8, n_features=10)
        >>> train, valid, test = data.split((0.6, 0.2, 0.2), seed=0)
        >>> sweep = soft_sharing_sweep(train, valid, test, [0, 0.01, 1], seeds=[0, 1],
        ...                            model_options={"hidden_units": (8,)}, epochs=2,
        ...                            device="cpu")
        >>> sorted(sweep["l2_lambda"].unique().tolist())
        [0.0, 0.01, 1.0]
        >>> select_lambda(sweep) in (0.0, 0.01, 1.0)
        True
    """
    lambdas, seeds = _check_lambdas(lambdas), _check_seeds(seeds)
    options = dict(model_options or {})
    for key in ("l2_lambda", "seed"):
        if key in options:
            raise ValueError(f"model_options must not set {key!r}: the sweep sets it per member")
    stride = max(seeds) + 1
    codes = [i * stride + s for i in range(len(lambdas)) for s in seeds]

    def make(code: int) -> SweepSoftSharing:
        return SweepSoftSharing(
            train.schema, l2_lambda=lambdas[code // stride], seed=code % stride, **options
        )

    result = fit_population(make, train, valid, codes, **fit_kwargs)
    scores = result.evaluate(test)
    rows = []
    for member, code in enumerate(codes):
        model = result.model(member)
        assert isinstance(model, SweepSoftSharing)  # built by make() above
        with torch.no_grad():
            distance = float(model.distance()) ** 0.5
            initial = float(make(code).distance()) ** 0.5
        summary = result.summary.loc[member]
        extra = {
            "l2_lambda": lambdas[code // stride],
            "seed": code % stride,
            "valid_loss": float(summary["best_score"]),
            "best_epoch": int(summary["best_epoch"]),
            "distance": distance,
            "initial_distance": initial,
        }
        part = scores[scores["member"] == member][["task", "metric", "value"]]
        rows.append(part.assign(**extra))
    columns = [
        "l2_lambda",
        "seed",
        "task",
        "metric",
        "value",
        "valid_loss",
        "best_epoch",
        "distance",
        "initial_distance",
    ]
    return pd.concat(rows, ignore_index=True)[columns]


def select_lambda(sweep: pd.DataFrame) -> float:
    """The ``λ`` with the lowest validation loss (mean over seeds) in a
    :func:`soft_sharing_sweep` result; the test columns are not looked at."""
    if "valid_loss" not in sweep.columns:
        raise ValueError("expected the output of soft_sharing_sweep (it has no 'valid_loss')")
    per_member = sweep.drop_duplicates(["l2_lambda", "seed"])
    return float(per_member.groupby("l2_lambda")["valid_loss"].mean().idxmin())


def _lambda_axis(ax: plt.Axes, lambdas: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    """A log axis for ``λ`` with ``λ = 0`` drawn one decade left of the smallest positive λ;
    returns the map from ``λ`` to the plotted position."""
    positive = sorted(v for v in lambdas if v > 0)
    zero_at = positive[0] / 10 if positive else 1.0

    def where(values):
        values = np.asarray(values, dtype=float)
        return np.where(values > 0, values, zero_at)

    ax.set_xscale("log")
    ticks = ([zero_at] if 0 in lambdas else []) + positive
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0" if t == zero_at and 0 in lambdas else f"{t:g}" for t in ticks])
    ax.minorticks_off()
    return where


def plot_lambda_sweep(
    sweep: pd.DataFrame,
    references: pd.DataFrame | None = None,
    metric: str = "mse",
    confidence: float = 0.95,
) -> plt.Figure:
    """Each task's test ``metric`` against ``λ``, mean over seeds with its Student-t interval.

    ``λ = 0`` sits at the left edge of the log axis (labelled ``0``). Each model in
    ``references`` (scores of :func:`~mtlbook.analysis.runs.population_scores`) is a horizontal line
    at its mean with a shaded interval. One panel per task.
    """
    rows = sweep[sweep["metric"] == metric]
    if rows.empty:
        raise ValueError(
            f"no rows with metric {metric!r}; metrics are {sorted(sweep['metric'].unique())}"
        )
    summary = mean_interval(rows, ["task", "l2_lambda"], confidence=confidence)
    tasks = list(dict.fromkeys(summary["task"]))
    ref = None
    if references is not None:
        ref = mean_interval(
            references[references["metric"] == metric], ["task", "model"], confidence=confidence
        )
    models = [] if ref is None else list(dict.fromkeys(ref["model"]))
    palette = sns.color_palette("colorblind", 1 + len(models))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 3.7), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        s = summary[summary["task"] == task].sort_values("l2_lambda")
        where = _lambda_axis(ax, list(s["l2_lambda"]))
        x = where(s["l2_lambda"])
        ax.errorbar(
            x,
            s["mean"],
            yerr=[s["mean"] - s["lo"], s["hi"] - s["mean"]],
            marker="o",
            capsize=3,
            color=palette[0],
            label="SoftSharing（软共享）",
        )
        for k, model in enumerate(models, start=1):
            assert ref is not None  # models come from the references
            r = ref[(ref["task"] == task) & (ref["model"] == model)]
            if r.empty:
                continue
            mean, lo, hi = (float(r[c].iloc[0]) for c in ("mean", "lo", "hi"))
            ax.axhline(mean, color=palette[k], linestyle="--", label=zh(model))
            if not np.isnan(lo):
                ax.axhspan(lo, hi, color=palette[k], alpha=0.15, linewidth=0)
        better = "越低越好" if metric in LOWER_IS_BETTER else "越高越好"
        ax.set(
            title=zh(task),
            xlabel="惩罚强度 λ（对数刻度）",
            ylabel=f"测试 {zh(metric)}（{better}）",
        )
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_weight_distance(sweep: pd.DataFrame, confidence: float = 0.95) -> plt.Figure:
    """``‖θ_a − θ_b‖`` of the tied parameters against ``λ`` (log–log), after training (mean
    and interval over seeds) and, dashed, before training."""
    per_member = sweep.drop_duplicates(["l2_lambda", "seed"])
    after = mean_interval(
        per_member, ["l2_lambda"], value="distance", confidence=confidence
    ).sort_values("l2_lambda")
    before = per_member.groupby("l2_lambda")["initial_distance"].mean()
    fig, ax = plt.subplots(figsize=(5.2, 3.7))
    where = _lambda_axis(ax, list(after["l2_lambda"]))
    x = where(after["l2_lambda"])
    ax.errorbar(
        x,
        after["mean"],
        yerr=[after["mean"] - after["lo"], after["hi"] - after["mean"]],
        marker="o",
        capsize=3,
        label="训练后（验证集最佳轮次）",
    )
    ax.plot(where(before.index), before.values, linestyle="--", color="grey", label="初始化时")
    ax.set_yscale("log")
    ax.set(xlabel="惩罚强度 λ（对数刻度）", ylabel="两套任务网络的距离 ‖θ₁ − θ₂‖")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_soft_sharing_diagram(
    tasks: Sequence[str] = ("任务 1", "任务 2"), n_layers: int = 2, embeddings: bool = True
) -> plt.Figure:
    """Soft sharing: one column (network) per task; corresponding tied layers joined by dashed
    "L2 约束" links, the towers left free. With three tasks or more only neighbouring columns
    are linked, although the penalty ties every pair.

    Args:
        tasks: the tasks' names, one column each (two or three fit the page).
        n_layers: number of bottom layers drawn per network (all tied).
        embeddings: draw each task's own embedding table (tied too); ``False`` for data
            without categorical features.
    """
    tasks = list(tasks)
    if len(tasks) < 2 or n_layers < 1:
        raise ValueError(f"need at least two tasks and one layer, got {tasks}, {n_layers}")
    step, col_w = 3.4, 1.7  # distance between columns, width of a column's boxes
    width = step * (len(tasks) - 1) + col_w + 0.4
    tied = (["嵌入层"] if embeddings else []) + [f"底层第 {i + 1} 层" for i in range(n_layers)]
    y_tower = 1.35 + 0.9 * len(tied)
    height = y_tower + 1.2
    fig, ax = canvas(width, height, scale=min(1.0, 7.5 / width))
    xs = [0.2 + col_w / 2 + step * i for i in range(len(tasks))]
    box(ax, width / 2, 0.45, width - 0.4, 0.45, "输入特征 x（每个任务读同一份）", "input")
    for i, (x, task) in enumerate(zip(xs, tasks, strict=True)):
        kind = ("task", "task2")[i % 2]
        prev = 0.68
        for j, label in enumerate(tied):  # the tied layers of task i's own network
            y = 1.35 + 0.9 * j
            box(ax, x, y, col_w, 0.45, label, kind)
            arrow(ax, x, prev, x, y - 0.23)
            prev = y + 0.23
        box(ax, x, y_tower, col_w, 0.45, "任务塔（不约束）", kind)
        box(ax, x, y_tower + 0.8, col_w, 0.38, f"ŷ {task}", "output")
        arrow(ax, x, prev, x, y_tower - 0.23)
        arrow(ax, x, y_tower + 0.23, x, y_tower + 0.61)
    for left, right in pairwise(xs):  # neighbouring columns; the penalty ties every pair
        mid = (left + right) / 2
        for j in range(len(tied)):
            y = 1.35 + 0.9 * j
            arrow(ax, left + col_w / 2 + 0.05, y, mid - 0.42, y, style="-", dashed=True)
            arrow(ax, mid + 0.42, y, right - col_w / 2 - 0.05, y, style="-", dashed=True)
            box(ax, mid, y, 0.8, 0.3, "L2 约束", "gate", fontsize=8)
    return finish(fig)
