"""Negative transfer: is a task worse off shared than alone? A paired check over seeds.

:func:`negative_transfer` trains a multi-task model and the single-task baseline on paired data
over several seeds and gives, per task, the paired gain with its interval and a verdict
(:func:`~mtlbook.analysis.intervals.verdict`); :func:`summarise_transfer` does the arithmetic
on any results frame; :func:`plot_negative_transfer` draws the gains with their intervals. The
runs go through the comparison harness (:mod:`mtlbook.analysis.compare`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data import MultiTaskData
from ..metrics import LOWER_IS_BETTER
from ..weighting import Weighting
from ._common import tidy_layout
from .compare import (
    MetricSelection,
    _plan,
    _primary_metrics,
    _select_metrics,
    _vectorised,
    resolve_models,
    resolve_weightings,
)
from .intervals import mean_interval, verdict
from .runs import Factory, ModelSpec, repeat_fits

if TYPE_CHECKING:  # matplotlib is imported by the plot functions only
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure, SubFigure

__all__ = ["negative_transfer", "plot_negative_transfer", "summarise_transfer"]

_VERDICT_COLORS = {"positive": "#228833", "negative": "#cc3311", "inconclusive": "#777777"}


def summarise_transfer(
    results: pd.DataFrame,
    model: str,
    baseline: str = "single",
    metrics: MetricSelection = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per task: ``model`` against ``baseline`` over paired seeds, with a verdict.

    ``results`` has columns ``model, seed, task, metric, value`` (one weighting only), such as
    the output of :func:`~mtlbook.analysis.runs.repeat_fits`. Only seeds that both models ran
    are used.

    The verdict rule: the per-seed relative gain (PLE sign convention, positive = better for
    AUC and MSE alike) is averaged over the K seeds with a Student-t interval at
    ``confidence``; ``positive`` when the whole interval lies above 0, ``negative`` when it
    lies below 0, ``inconclusive`` otherwise (including a single seed, which has no interval).
    That is a two-sided paired t-test per task at level ``1 − confidence``, with no
    correction for testing several tasks.

    Returns:
        pandas.DataFrame:
        One row per task and metric: ``task, metric, model, baseline, n``; ``model_mean,
        model_lo, model_hi`` and ``baseline_mean, baseline_lo, baseline_hi`` (each model's
        metric); ``diff_mean, diff_lo, diff_hi`` (paired ``model − baseline`` in the metric's
        own units: negative is better for MSE); ``gain_mean, gain_lo, gain_hi`` (paired
        relative gain in %, positive = better); ``verdict``.
    """
    present = set(results["model"])
    for name in (model, baseline):
        if name not in present:
            raise ValueError(f"model {name!r} is not in the results; they have {sorted(present)}")
    if "weighting" in results.columns and results["weighting"].nunique() > 1:
        raise ValueError("the results mix several weightings; filter them to one first")
    rows = results[results["model"].isin([model, baseline])]
    if metrics is None:
        metrics = _primary_metrics(rows)
    rows = _select_metrics(rows, metrics)
    keys = ["task", "metric", "seed"]
    wide = rows.pivot_table(index=keys, columns="model", values="value", aggfunc="first")
    wide = wide.dropna(subset=[model, baseline]).reset_index()
    if wide.empty:
        raise ValueError(f"{model!r} and {baseline!r} share no seed; nothing to pair")
    lower = wide["metric"].isin(LOWER_IS_BETTER)
    wide["diff"] = wide[model] - wide[baseline]
    better = wide["diff"].where(~lower, -wide["diff"])
    wide["gain"] = 100.0 * better / wide[baseline].abs()
    by = ["task", "metric"]
    out = None
    for column, prefix in (
        (model, "model"),
        (baseline, "baseline"),
        ("diff", "diff"),
        ("gain", "gain"),
    ):
        s = mean_interval(wide, by, value=column, confidence=confidence)
        s = s.rename(
            columns={"mean": f"{prefix}_mean", "lo": f"{prefix}_lo", "hi": f"{prefix}_hi"}
        ).drop(columns="std")
        out = s if out is None else out.merge(s.drop(columns="n"), on=by)
    assert out is not None  # the loop above ran four times
    out["model"], out["baseline"] = model, baseline
    out["verdict"] = [
        verdict(lo, hi) for lo, hi in zip(out["gain_lo"], out["gain_hi"], strict=True)
    ]
    stats = [
        f"{prefix}_{stat}"
        for prefix in ("model", "baseline", "diff", "gain")
        for stat in ("mean", "lo", "hi")
    ]
    return out[["task", "metric", "model", "baseline", "n", *stats, "verdict"]]


def negative_transfer(
    mtl_model: str | Factory | Mapping[str, ModelSpec | str],
    data: MultiTaskData | Callable[[int], MultiTaskData] | str,
    seeds: int | Iterable[int] = 5,
    baseline: str | ModelSpec = "single",
    metrics: MetricSelection = None,
    confidence: float = 0.95,
    *,
    weighting: str | Callable[[], Weighting] | None = None,
    n_samples: int | None = None,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Does sharing help or hurt each task? A multi-task model against the single-task
    baseline over paired seeds, with a verdict per task.

    Both are trained on the same data, splits and seeds (each seed draws fresh named data);
    each selects its epoch on the validation split and is scored on the test split. See
    :func:`summarise_transfer` for the columns and the verdict rule (``positive``: the gain's
    interval lies above 0; ``negative``: below 0; ``inconclusive``: it contains 0).

    Args:
        mtl_model: a model name (``"shared_bottom"``), a ``(schema, seed) → model`` factory,
            or a one-entry mapping name → either.
        data: data, a data function or a name, as in :func:`compare`.
        seeds: the number of seeds or the seeds.
        baseline: the reference: ``"single"`` (a separate SingleTask per task), another
            name, or a factory / :class:`~mtlbook.analysis.runs.PerTask`.
        metrics: per-task metrics; default AUC for binary tasks, MSE for regression tasks.
        confidence: interval level.
        weighting: the multi-task model's loss weighting (a name of
            :func:`~mtlbook.weighting.standard_strategies` or a factory); default equal.
        n_samples: size of named data.
        **fit_kwargs: passed to :func:`~mtlbook.analysis.runs.repeat_fits` (``transform_train``,
            ``fractions``, ...) and :func:`mtlbook.fit` (``epochs``, ``lr``, ...).
            As in :func:`compare`, the seeds train as vectorised populations by default.

    Example:
        >>> from mtlbook.analysis.transfer import negative_transfer
        >>> verdicts = negative_transfer("shared_bottom", "correlated:0.0", seeds=3,
        ...                              n_samples=600, epochs=3)
        >>> verdicts["task"].tolist()
        ['task1', 'task2']
        >>> set(verdicts["verdict"]) <= {"positive", "negative", "inconclusive"}
        True
    """
    if isinstance(mtl_model, Mapping):
        if len(mtl_model) != 1:
            raise ValueError(f"give one multi-task model, got {list(mtl_model)}")
        models = resolve_models(mtl_model)
    elif isinstance(mtl_model, str):
        models = resolve_models([mtl_model])
    else:
        label = getattr(mtl_model, "__name__", "mtl")
        models = resolve_models({"mtl" if label == "<lambda>" else label: mtl_model})
    name = next(iter(models))
    base_name = baseline if isinstance(baseline, str) else "baseline"
    if base_name == name:
        raise ValueError(f"the model and the baseline are both {name!r}")
    models.update(resolve_models({base_name: baseline}))
    if weighting is not None and not isinstance(weighting, str) and not callable(weighting):
        raise TypeError("weighting must be a name or a () → Weighting factory")
    weightings: dict[str, Callable[[], Weighting]] | None
    if isinstance(weighting, str):
        weightings = resolve_weightings([weighting])
    else:
        weightings = None if weighting is None else {"custom": weighting}
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    plan = _plan(models, data, weightings, seeds, n_samples, metrics)
    raw = repeat_fits(
        plan.make_data,
        plan.models,
        plan.seeds,
        weightings=plan.weightings,
        **_vectorised(fit_kwargs),
    )
    return summarise_transfer(raw, name, base_name, metrics, confidence)


def plot_negative_transfer(frame: pd.DataFrame, ax: plt.Axes | None = None) -> Figure | SubFigure:
    """The paired gain of each task with its interval, coloured by verdict, around 0.

    ``frame`` is the output of :func:`negative_transfer` or :func:`summarise_transfer`.

    Example:
        >>> from mtlbook.analysis.transfer import negative_transfer, plot_negative_transfer
        >>> verdicts = negative_transfer("shared_bottom", "correlated:0.0", seeds=3,
        ...                              n_samples=600, epochs=3)
        >>> fig = plot_negative_transfer(verdicts)
    """
    import matplotlib.pyplot as plt

    needed = ["task", "metric", "gain_mean", "gain_lo", "gain_hi", "verdict"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {missing} missing; pass the output of negative_transfer")
    rows = frame.reset_index(drop=True)
    fig: Figure | SubFigure
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.6 * len(rows)))
    else:
        fig = ax.figure
    labels = [f"{t} ({m.upper()})" for t, m in zip(rows["task"], rows["metric"], strict=True)]
    ypos = np.arange(len(rows))[::-1]
    for yy, (_, row) in zip(ypos, rows.iterrows(), strict=True):
        color = _VERDICT_COLORS.get(row["verdict"], "#777777")
        err = np.nan_to_num(
            [[row["gain_mean"] - row["gain_lo"]], [row["gain_hi"] - row["gain_mean"]]]
        )
        ax.errorbar(row["gain_mean"], yy, xerr=err, fmt="o", color=color, capsize=4, markersize=7)
        ax.annotate(
            row["verdict"],
            (row["gain_mean"], yy),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
            color=color,
        )
    ax.axvline(0, color="#333333", linewidth=1)
    ax.set_yticks(ypos, labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    model = rows["model"].iloc[0] if "model" in rows else "MTL"
    base = rows["baseline"].iloc[0] if "baseline" in rows else "baseline"
    n = int(rows["n"].min()) if "n" in rows else None
    ax.set_xlabel(
        f"gain of {model} over {base} in % (positive = better)"
        + (f"; {n} paired seeds" if n else "")
    )
    ax.grid(axis="x", alpha=0.3)
    tidy_layout(fig)
    return fig
