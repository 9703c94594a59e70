"""Loss balancing on tasks of different scales (chapter 12.4 of the book).

When a click log-loss (≈ 0.2) and a dwell-time squared error in seconds² (hundreds to
thousands) are added with equal weights, the shared layers follow the larger loss. This module
holds the small tools the chapter uses to show that and to compare the remedies of
:mod:`mtlbook.weighting`:

* :func:`without_groups` drops the user ids of a data set (so no GAUC is computed during
  validation, which makes the many short runs of a comparison faster);
* :func:`initial_losses` and :func:`inverse_loss_weights`: the manual remedy, a fixed weight
  per task inversely proportional to its loss at initialisation;
* :class:`RecordingTrainer`: a trainer for :func:`~mtlbook.experiments.repeat_fits` (and so for
  :func:`~mtlbook.compare.compare`) that keeps every adaptive run's history, whose per-epoch
  ``weight`` rows show how a strategy moved the task weights;
* :func:`weight_frame`, :func:`plot_weight_history`, :func:`plot_metric_history`,
  :func:`plot_scale_mismatch` and :func:`plot_strategy_run` draw them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .data import MultiTaskData
from .experiments import FitJob, FitOutcome
from .metrics import evaluate
from .models.base import MultiTaskModel
from .population import population_trainer
from .training import fit
from .weighting import EqualWeight, FixedWeights

__all__ = [
    "RecordingTrainer",
    "initial_losses",
    "inverse_loss_weights",
    "plot_metric_history",
    "plot_scale_mismatch",
    "plot_strategy_run",
    "plot_weight_history",
    "transfer_by_weighting",
    "weight_frame",
    "without_groups",
]


def without_groups(data: MultiTaskData) -> MultiTaskData:
    """A copy of ``data`` without group ids, so that :func:`~mtlbook.evaluate` skips GAUC.

    GAUC (per-user AUC) is the slowest metric of a validation pass; a comparison that reports
    AUC only does not need it.

    Example:
        >>> import mtlbook as mb
        >>> data = without_groups(mb.simulate_funnel(500, seed=0))
        >>> data.groups is None, len(data)
        (True, 500)
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"expected a MultiTaskData, got {type(data).__name__}")
    out = data.subset(np.arange(len(data)))
    out.groups = None
    return out


@torch.no_grad()
def initial_losses(model: MultiTaskModel, data: MultiTaskData, max_rows: int = 20_000,
                   seed: int = 0) -> dict[str, float]:
    """Each task's mean loss (log-loss or MSE) at the model's current weights.

    Computed in evaluation mode on ``data`` (a random sample of ``max_rows`` rows drawn with
    ``seed`` when it is larger), the model's parameters untouched. On an untrained model these
    are the loss scales a manual weighting has to undo.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.simulate_funnel(2_000, seed=0, with_dwell_time=True)
        >>> losses = initial_losses(SharedBottom(data.schema, seed=0), data)
        >>> losses["dwell_time"] > 100 * losses["click"]
        True
    """
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected a mtlbook MultiTaskModel, got {type(model).__name__}")
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"expected a MultiTaskData, got {type(data).__name__}")
    if data.schema.tasks != model.schema.tasks:
        raise ValueError(f"the data's tasks {list(data.task_names)} are not the model's "
                         f"{list(model.task_names)}")
    if len(data) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(data), max_rows, replace=False))
        data = data.subset(rows)
    device = next(model.parameters()).device
    batch = next(iter(data.loader(len(data), shuffle=False))).to(device)
    was_training = model.training
    model.eval()
    try:
        losses = model.task_losses(model(batch), batch)
    finally:
        model.train(was_training)
    return {name: float(value) for name, value in losses.items()}


def inverse_loss_weights(losses: Mapping[str, float]) -> dict[str, float]:
    """Weights ``w_k ∝ 1 / L_k``, scaled to sum to the number of tasks.

    With these weights every task's weighted loss starts at the same size (the manual
    counterpart of what GradNorm and uncertainty weighting learn).

    Example:
        >>> w = inverse_loss_weights({"click": 0.5, "dwell_time": 500.0})
        >>> {k: round(v, 4) for k, v in w.items()}
        {'click': 1.998, 'dwell_time': 0.002}
    """
    values = {k: float(v) for k, v in losses.items()}
    if not values:
        raise ValueError("losses is empty")
    bad = {k: v for k, v in values.items() if not (np.isfinite(v) and v > 0)}
    if bad:
        raise ValueError(f"every loss must be positive and finite, got {bad}")
    inverse = {k: 1.0 / v for k, v in values.items()}
    scale = len(inverse) / sum(inverse.values())
    return {k: v * scale for k, v in inverse.items()}


def transfer_by_weighting(baseline_raw: pd.DataFrame, mtl_raw: pd.DataFrame,
                          metrics: Mapping[str, str] | None = None, model: str | None = None,
                          baseline: str | None = None, confidence: float = 0.95
                          ) -> pd.DataFrame:
    """Negative-transfer verdicts of a multi-task model under each of its weightings.

    The baseline (single-task models: nothing to weight) is trained once; the multi-task
    model once per weighting. Each weighting's rows are paired with the baseline's by seed and
    passed to :func:`~mtlbook.compare.summarise_transfer`.

    Args:
        baseline_raw: per-seed results of the baseline (one model name).
        mtl_raw: per-seed results of the multi-task model under one or more weightings.
        metrics: task → metric (default: AUC for binary tasks, MSE for regression ones).
        model, baseline: the model names (default: the only one in each frame).
        confidence: interval level.

    Returns:
        :func:`~mtlbook.compare.summarise_transfer`'s columns plus ``weighting``.
    """
    from .compare import summarise_transfer

    def only(frame: pd.DataFrame, name: str | None, what: str) -> str:
        names = sorted(set(frame["model"]))
        if name is None:
            if len(names) != 1:
                raise ValueError(f"{what} has models {names}; name the one to use")
            return names[0]
        if name not in names:
            raise ValueError(f"{what} has no model {name!r}; it has {names}")
        return name

    model, baseline = only(mtl_raw, model, "mtl_raw"), only(baseline_raw, baseline,
                                                          "baseline_raw")
    base = baseline_raw[baseline_raw["model"] == baseline]
    frames = []
    for weighting, rows in mtl_raw[mtl_raw["model"] == model].groupby("weighting", sort=False):
        pair = pd.concat([base.assign(weighting=weighting), rows], ignore_index=True)
        frames.append(summarise_transfer(pair, model, baseline, metrics=None if metrics is None
                                         else dict(metrics), confidence=confidence)
                      .assign(weighting=weighting))
    return pd.concat(frames, ignore_index=True)


def _constant(job: FitJob) -> bool:
    if job.make_weighting is None:
        return True
    return type(job.make_weighting()) in (EqualWeight, FixedWeights)


class RecordingTrainer:
    """A trainer for :func:`~mtlbook.experiments.repeat_fits` that keeps the histories.

    Jobs with a constant weighting (equal or :class:`~mtlbook.weighting.FixedWeights`) go to
    :func:`~mtlbook.population.population_trainer` (vectorised, no history kept) unless
    ``vectorise=False``; every other job is trained with :func:`mtlbook.fit`, and its history
    is kept in :attr:`histories` under ``(model, weighting, seed)``. With
    ``vectorise=False`` every job runs through ``fit``, so the training times of all
    strategies are measured the same way (what
    :func:`~mtlbook.experiments.time_overhead` compares).

    Pass it as ``trainer=`` to :func:`~mtlbook.compare.compare` or
    :func:`~mtlbook.experiments.repeat_fits`.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.compare import compare
        >>> recorder = RecordingTrainer()
        >>> result = compare(["shared_bottom"], "correlated:0.5", n_samples=300, seeds=1,
        ...                  weightings=["uncertainty"], epochs=2, trainer=recorder)
        >>> sorted(recorder.histories)
        [('shared_bottom', 'uncertainty', 0)]
        >>> int(weight_frame(recorder.histories)["epoch"].max())
        2
    """

    def __init__(self, vectorise: bool = True) -> None:
        self.vectorise = bool(vectorise)
        self.histories: dict[tuple[str, str, int], pd.DataFrame] = {}

    def __call__(self, jobs: Sequence[FitJob], fit_kwargs: Mapping[str, Any],
                 progress: bool = False) -> list[FitOutcome]:
        outcomes: list[FitOutcome | None] = [None] * len(jobs)
        together = [i for i, job in enumerate(jobs) if self.vectorise and _constant(job)]
        if together:
            done = population_trainer([jobs[i] for i in together], fit_kwargs, progress)
            for i, outcome in zip(together, done, strict=True):
                outcomes[i] = outcome
        for i, job in enumerate(jobs):
            if outcomes[i] is not None:
                continue
            model = job.make_model(job.train.schema, job.seed)
            weighting = None if job.make_weighting is None else job.make_weighting()
            result = fit(model, job.train, job.valid, seed=job.seed, weighting=weighting,
                         **fit_kwargs)
            for label in job.labels:
                self.histories[(job.model, label, job.seed)] = result.history
            outcomes[i] = FitOutcome(metrics=evaluate(model, job.report),
                                     best_epoch=result.best_epoch,
                                     epochs_run=result.epochs_run,
                                     train_seconds=result.train_seconds)
        return outcomes  # type: ignore[return-value]


def weight_frame(histories: Mapping[tuple[str, str, int], pd.DataFrame] | pd.DataFrame
                 ) -> pd.DataFrame:
    """The per-epoch task weights of fit histories as one tidy frame.

    Args:
        histories: :attr:`RecordingTrainer.histories`, or one :attr:`~mtlbook.FitResult.history`.

    Returns:
        Columns ``model, weighting, seed, epoch, task, weight`` (``model``, ``weighting`` and
        ``seed`` are ``None`` for a single history). The weight of an epoch is the one the
        strategy applied at its last step.
    """
    if isinstance(histories, pd.DataFrame):
        histories = {(None, None, None): histories}
    frames = []
    for (model, weighting, seed), history in histories.items():
        rows = history[(history["split"] == "train") & (history["metric"] == "weight")]
        frames.append(pd.DataFrame({"model": model, "weighting": weighting, "seed": seed,
                                    "epoch": rows["epoch"].to_numpy(),
                                    "task": rows["task"].to_numpy(),
                                    "weight": rows["value"].to_numpy()}))
    if not frames:
        raise ValueError("no history given")
    return pd.concat(frames, ignore_index=True)


def plot_weight_history(weights: pd.DataFrame, weightings: Sequence[str] | None = None,
                        col_wrap: int = 4) -> plt.Figure:
    """Task weights against the epoch, one panel per strategy (log scale), one line per task
    (mean over seeds, with their range shaded when there are several).

    Args:
        weights: the output of :func:`weight_frame`.
        weightings: the strategies to draw, in order (default: all).
        col_wrap: panels per row.
    """
    if weights.empty:
        raise ValueError("the weight frame is empty")
    names = list(dict.fromkeys(weights["weighting"])) if weightings is None else list(weightings)
    unknown = sorted(set(names) - set(weights["weighting"]))
    if unknown:
        raise ValueError(f"no weights recorded for {unknown}; have "
                         f"{sorted(set(weights['weighting']))}")
    tasks = list(dict.fromkeys(weights["task"]))
    palette = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    n_cols = min(col_wrap, len(names))
    n_rows = -(-len(names) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.3 * n_cols, 2.7 * n_rows),
                             squeeze=False, sharex=True)
    for ax, name in zip(axes.flat, names, strict=False):
        rows = weights[weights["weighting"] == name]
        for task in tasks:
            g = rows[rows["task"] == task].groupby("epoch")["weight"]
            mean, lo, hi = g.mean(), g.min(), g.max()
            ax.plot(mean.index, mean.to_numpy(), marker="o", markersize=3, color=palette[task],
                    label=task)
            if rows["seed"].nunique() > 1:
                ax.fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color=palette[task],
                                alpha=0.2, linewidth=0)
        ax.set(yscale="log", title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("task weight")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_metric_history(histories: Mapping[tuple[str, str, int], pd.DataFrame], task: str,
                        metric: str, weightings: Sequence[str] | None = None,
                        reference: float | None = None, ax: plt.Axes | None = None
                        ) -> plt.Figure:
    """A validation metric against the epoch for several strategies (mean over the recorded
    seeds, their range shaded), with an optional horizontal reference line (e.g. the
    single-task model's test value).

    Args:
        histories: :attr:`RecordingTrainer.histories`.
        task, metric: what to draw, e.g. ``"click"``, ``"auc"``.
        weightings: the strategies to draw (default: all recorded).
        reference: the value of the reference line (``None``: none).
        ax: axes to draw on (default: a new figure).
    """
    frames = [h[(h["split"] == "valid") & (h["task"] == task) & (h["metric"] == metric)]
              .assign(weighting=w, seed=s) for (_, w, s), h in histories.items()]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        raise ValueError(f"no validation rows for {task}:{metric} in the histories")
    names = list(dict.fromkeys(rows["weighting"])) if weightings is None else list(weightings)
    unknown = sorted(set(names) - set(rows["weighting"]))
    if unknown:
        raise ValueError(f"no history recorded for {unknown}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    palette = dict(zip(names, sns.color_palette("tab10", len(names)), strict=True))
    for name in names:
        g = rows[rows["weighting"] == name].groupby("epoch")["value"]
        mean = g.mean()
        ax.plot(mean.index, mean.to_numpy(), marker="o", markersize=3, color=palette[name],
                label=name)
        ax.fill_between(mean.index, g.min().to_numpy(), g.max().to_numpy(),
                        color=palette[name], alpha=0.15, linewidth=0)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1, label="single-task")
    ax.set(xlabel="epoch", ylabel=f"validation {task} {metric.upper()}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.figure.tight_layout()
    return ax.figure


def plot_scale_mismatch(history: pd.DataFrame, norms: pd.DataFrame) -> plt.Figure:
    """Why equal weights fail: each task's training loss per epoch and its gradient norm on
    the shared parameters per step, both on a log scale.

    Args:
        history: a :attr:`~mtlbook.FitResult.history`.
        norms: :meth:`~mtlbook.diagnostics.GradientConflict.norms` of the same run.
    """
    losses = history[(history["split"] == "train") & (history["metric"] == "loss")
                     & (history["task"] != "all")]
    if losses.empty or norms.empty:
        raise ValueError("need a fit history with training losses and a non-empty norm frame")
    tasks = list(dict.fromkeys(losses["task"]))
    palette = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    sns.lineplot(losses, x="epoch", y="value", hue="task", palette=palette, marker="o",
                 ax=axes[0])
    axes[0].set(yscale="log", ylabel="training loss (log-loss or MSE)",
                title="loss per task (equal weights)")
    sns.lineplot(norms, x="step", y="norm", hue="task", palette=palette, marker="o",
                 markersize=3, ax=axes[1])
    axes[1].set(yscale="log", ylabel="||grad of L_k|| on shared params",
                title="gradient norm per task")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_strategy_run(history: pd.DataFrame, test: pd.DataFrame,
                      reference: Mapping[str, float] | None = None, title: str = ""
                      ) -> plt.Figure:
    """One run of one strategy: task weights over training, and its test metrics.

    Args:
        history: the run's :attr:`~mtlbook.FitResult.history`.
        test: ``task, metric, value`` rows of the run's test metrics (e.g. from
            :func:`~mtlbook.evaluate`), one headline metric per task.
        reference: optional task → value drawn as a marker (e.g. the single-task models').
        title: the figure's title.
    """
    weights = weight_frame(history)
    tasks = list(dict.fromkeys(weights["task"]))
    palette = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    fig, axes = plt.subplots(1, 1 + len(test), figsize=(3.6 + 2.2 * len(test), 3.2),
                             gridspec_kw={"width_ratios": [2.2] + [1] * len(test)})
    for task in tasks:
        rows = weights[weights["task"] == task]
        axes[0].plot(rows["epoch"], rows["weight"], marker="o", color=palette[task], label=task)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="task weight", title="weights")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    for ax, (_, row) in zip(axes[1:], test.iterrows(), strict=True):
        ax.bar([0], [row["value"]], color=palette.get(row["task"], "#777777"), width=0.6)
        if reference is not None and row["task"] in reference:
            ax.scatter([0], [reference[row["task"]]], marker="_", s=900, color="black",
                       zorder=3)
        ax.set(xticks=[], title=f"{row['task']} {row['metric'].upper()}")
        if row["metric"] == "auc":
            ax.set_ylim(0.4, max(0.8, row["value"] + 0.05))
        ax.grid(axis="y", alpha=0.3)
    if reference is not None:
        title = f"{title}\n(black line: single-task reference)" if title else \
            "black line: single-task reference"
    fig.suptitle(title)
    fig.tight_layout()
    return fig
