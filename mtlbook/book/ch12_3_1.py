"""Chapter 12.3.1 (Shared-Bottom): single-task vs Shared-Bottom as the tasks'
correlation falls.

:func:`correlation_sweep` runs the models over seeds at several correlations of the MMoE
paper's synthetic tasks (:func:`mtlbook.make_correlated_tasks`) and
:func:`plot_correlation_sweep` draws the metric against the correlation and
:func:`plot_history` a training history (the architecture's diagram is
:func:`mtlbook.book.diagrams.plot_shared_bottom`).
Every plotting function returns the matplotlib Figure it drew, labelled in Chinese (task and
model names through :func:`mtlbook.book.page.zh`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..analysis.intervals import mean_interval
from ..analysis.runs import ModelSpec, repeat_fits
from ..data import MultiTaskData, make_correlated_tasks
from ..metrics import LOWER_IS_BETTER
from .page import zh

__all__ = ["correlation_sweep", "plot_correlation_sweep", "plot_history"]


def plot_correlation_sweep(
    results: pd.DataFrame, metric: str = "mse", confidence: float = 0.95
) -> plt.Figure:
    """Test ``metric`` against task correlation, one panel per task, one line per model,
    with the mean over seeds and its Student-t interval as error bars.

    ``results`` is the output of :func:`mtlbook.book.ch12_3_1.correlation_sweep`.
    """
    rows = results[results["metric"] == metric]
    if rows.empty:
        raise ValueError(
            f"no rows with metric {metric!r}; metrics are {sorted(results['metric'].unique())}"
        )
    summary = mean_interval(rows, ["task", "model", "correlation"], confidence=confidence)
    tasks = list(dict.fromkeys(summary["task"]))
    models = list(dict.fromkeys(summary["model"]))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models)), strict=True))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for k, model in enumerate(models):
            s = summary[(summary["task"] == task) & (summary["model"] == model)]
            shift = (k - (len(models) - 1) / 2) * 0.012  # keep error bars apart
            ax.errorbar(
                s["correlation"] + shift,
                s["mean"],
                yerr=[s["mean"] - s["lo"], s["hi"] - s["mean"]],
                marker="o",
                capsize=3,
                label=zh(model),
                color=palette[model],
            )
        better = "越低越好" if metric in LOWER_IS_BETTER else "越高越好"
        ax.set(title=zh(task), xlabel="任务相关度 p", ylabel=f"测试 {zh(metric)}（{better}）")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    return fig


def plot_history(history: pd.DataFrame, metric: str = "loss") -> plt.Figure:
    """Training and validation ``metric`` per epoch, one line per task and split."""
    rows = history[(history["metric"] == metric) & (history["task"] != "all")]
    rows = rows.assign(**{"任务": rows["task"].map(zh), "划分": rows["split"].map(zh)})
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    sns.lineplot(data=rows, x="epoch", y="value", hue="任务", style="划分", ax=ax)
    ax.set(xlabel="轮次", ylabel=zh(metric))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def correlation_sweep(
    correlations: Iterable[float],
    models: Mapping[str, ModelSpec],
    seeds: Iterable[int],
    *,
    n_samples: int = 3_000,
    task_type: str = "regression",
    sparse_task: str | None = None,
    label_fraction: float = 1.0,
    **fit_kwargs,
) -> pd.DataFrame:
    """:func:`repeat_fits` on :func:`~mtlbook.data.make_correlated_tasks` data for each
    task correlation; the result has an extra ``correlation`` column.

    With ``sparse_task`` and ``label_fraction < 1`` that task keeps labels on only that
    fraction of the *training* split (validation and test keep all of them).
    """
    seeds = list(seeds)
    transform = None
    if sparse_task is not None and label_fraction < 1.0:

        def transform(train: MultiTaskData, seed: int) -> MultiTaskData:
            return train.subsample_labels(sparse_task, label_fraction, seed=seed)

    frames = []
    for p in correlations:

        def make_data(seed: int, p: float = p) -> MultiTaskData:
            return make_correlated_tasks(n_samples, p, task_type=task_type, seed=seed)

        frame = repeat_fits(make_data, models, seeds, transform_train=transform, **fit_kwargs)
        frames.append(frame.assign(correlation=float(p)))
    return pd.concat(frames, ignore_index=True)
