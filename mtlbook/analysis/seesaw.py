"""The seesaw: does a model buy one task's gain with another task's loss?

:func:`seesaw` sweeps architectures and/or task-loss weight ratios over seeds and collects both
tasks' metrics; :func:`seesaw_table` summarises them per configuration; :func:`plot_seesaw`
draws task A against task B with single-task crosshairs and the Pareto front
(:func:`pareto_front`), after Figure 1 of the PLE paper (Tang et al., RecSys 2020). The runs go
through the comparison harness (:mod:`mtlbook.analysis.compare`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data import MultiTaskData
from ..metrics import LOWER_IS_BETTER
from ..weighting import FixedWeights
from ._common import tidy_layout
from .compare import (
    _check_models_fit,
    _metric_names,
    _plan,
    _primary_metrics,
    _vectorised,
    resolve_models,
)
from .intervals import mean_interval
from .runs import ModelSpec, repeat_fits

if TYPE_CHECKING:  # matplotlib is imported by the plot functions only
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure, SubFigure

__all__ = ["pareto_front", "plot_seesaw", "seesaw", "seesaw_table"]


def pareto_front(
    table: pd.DataFrame, maximize: Sequence[str] = (), minimize: Sequence[str] = ()
) -> pd.Series:
    """Which rows of ``table`` are not dominated: a boolean Series aligned with its index.

    Row ``q`` dominates row ``p`` when ``q`` is at least as good in every objective and
    strictly better in one. Rows with a missing objective are never on the front; identical
    rows do not dominate each other.

    Args:
        table: one row per configuration.
        maximize: columns where higher is better (AUC).
        minimize: columns where lower is better (MSE, log-loss).

    Example:
        >>> import pandas as pd
        >>> summary = pd.DataFrame({"click_auc": [0.70, 0.72, 0.69],
        ...                         "dwell_time_mse": [10.0, 12.0, 11.0]}, index=list("abc"))
        >>> pareto_front(summary, maximize=["click_auc"], minimize=["dwell_time_mse"]).tolist()
        [True, True, False]
    """
    maximize, minimize = list(maximize), list(minimize)
    if not maximize and not minimize:
        raise ValueError("name at least one objective column in maximize= or minimize=")
    missing = [c for c in maximize + minimize if c not in table.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the table; it has {list(table.columns)}")
    # Turn every objective into "higher is better".
    scores = np.column_stack(
        [table[c].to_numpy(float) for c in maximize] + [-table[c].to_numpy(float) for c in minimize]
    )  # [rows, k]
    valid = ~np.isnan(scores).any(axis=1)
    s = np.where(valid[:, None], scores, -np.inf)
    at_least = (s[:, None, :] >= s[None, :, :]).all(axis=2)  # [q, p]: q ≥ p everywhere
    better = (s[:, None, :] > s[None, :, :]).any(axis=2)  # [q, p]: q > p somewhere
    dominated = ((at_least & better) & valid[:, None]).any(axis=0)  # [p]
    return pd.Series(valid & ~dominated, index=table.index, name="pareto")


def _ratio_label(task_a: str, task_b: str, ratio: float) -> str:
    return f"{task_a}:{task_b}={ratio:g}:1"


def seesaw(
    models: Mapping[str, ModelSpec | str] | Iterable[str] | str,
    data: MultiTaskData | Callable[[int], MultiTaskData] | str,
    *,
    ratios: Iterable[float] | None = None,
    tasks: Sequence[str] | None = None,
    metrics: Mapping[str, str] | Sequence[str] | None = None,
    baseline: str | None = "single",
    seeds: int | Iterable[int] = 5,
    split: str = "test",
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    n_samples: int | None = None,
    progress: bool = False,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Both tasks' metrics for several architectures and/or task-loss weight ratios.

    Every model in ``models`` is trained under equal weights or, with ``ratios``, once per
    ratio ``r`` with :class:`~mtlbook.weighting.FixedWeights` ``{task_a: r, task_b: 1}``
    (further tasks keep weight 1). The ``baseline`` (default: a separate single-task model
    per task) is trained once per seed on the same data and splits, so every comparison is
    paired by seed.

    Which split: every fit picks its epoch on the validation split, so the validation scores
    of that epoch are biased upwards — by a different amount for each configuration — while
    the test split has not been used for any choice. The default ``split="test"`` therefore
    reports the test split, as the seesaw figure of the PLE paper does. Use ``split="valid"``
    when the sweep itself is a choice (picking the weight ratio or the architecture to ship):
    choose on the validation scores, then report the chosen configuration's test scores once.

    Args:
        models: model names or a mapping, as in :func:`compare`.
        data: data, a data function or a name, as in :func:`compare`.
        ratios: weight ratios ``w_a / w_b`` to sweep (e.g. ``[0.25, 0.5, 1, 2, 4]``).
        tasks: the two tasks ``(task_a, task_b)``; default the data's first two.
        metrics: the metric of each task, ``{task: metric}`` or ``(metric_a, metric_b)``;
            default AUC for a binary task, MSE for a regression task.
        baseline: name of the reference model (see
            :data:`~mtlbook.analysis.compare.MODEL_NAMES`), or ``None``.
        seeds: the number of seeds or the seeds.
        split: ``"test"`` or ``"valid"`` (see above).
        fractions, n_samples, progress: as in :func:`compare`.
        **fit_kwargs: passed to :func:`~mtlbook.analysis.runs.repeat_fits` and :func:`mtlbook.fit`;
            as in :func:`compare`, the seeds train as vectorised populations by default.

    Returns:
        Tidy DataFrame with one row per configuration × seed × task and columns
        ``configuration, model, weighting, ratio, seed, task, metric, value, split``
        (``ratio`` is NaN for equal weights and for the baseline).

    Example:
        >>> from mtlbook.analysis.seesaw import plot_seesaw, seesaw
        >>> frame = seesaw(["shared_bottom", "mmoe"], "correlated:0.2", seeds=2,
        ...                n_samples=600, epochs=3)
        >>> sorted(frame["configuration"].unique())
        ['mmoe', 'shared_bottom', 'single']
        >>> swept = seesaw(["shared_bottom"], "correlated:0.2", ratios=[0.5, 2], seeds=2,
        ...                n_samples=600, epochs=3)
        >>> sorted(swept["configuration"].unique())
        ['shared_bottom task1:task2=0.5:1', 'shared_bottom task1:task2=2:1', 'single']
        >>> fig = plot_seesaw(frame)  # task1's MSE on x, task2's on y, single-task crosshairs
    """
    if "weightings" in fit_kwargs:
        raise ValueError("seesaw sweeps FixedWeights ratios; pass ratios=[...], not weightings")
    plan = _plan(models, data, None, seeds, n_samples)
    first = plan.make_data.first
    assert first is not None  # the first seed's data, not handed out yet
    tasks = list(first.task_names[:2]) if tasks is None else list(tasks)
    if len(tasks) != 2 or len(set(tasks)) != 2:
        raise ValueError(f"tasks must name two different tasks, got {tasks}")
    unknown = [t for t in tasks if t not in first.task_names]
    if unknown:
        raise ValueError(
            f"unknown task(s) {unknown}; the data's tasks are {list(first.task_names)}"
        )
    task_a, task_b = tasks
    computed = pd.DataFrame(
        [(t, m) for t, ms in _metric_names(first).items() for m in ms], columns=["task", "metric"]
    )
    chosen = _seesaw_metrics(computed, tasks, metrics)  # checked now, used after training
    swept = {k: v for k, v in plan.models.items() if k != baseline}
    if not swept:
        raise ValueError(f"models holds only the baseline {baseline!r}; add the models to sweep")
    weightings = None
    if ratios is not None:
        ratios = [float(r) for r in ratios]
        if not ratios or any(not (r > 0 and math.isfinite(r)) for r in ratios):
            raise ValueError(f"ratios must be positive finite numbers, got {ratios}")
        weightings = {}
        for r in ratios:
            weights = {t: 1.0 for t in first.task_names} | {task_a: r}
            weightings[_ratio_label(task_a, task_b, r)] = lambda weights=weights: FixedWeights(
                weights
            )
    frames = []
    cache: dict[int, MultiTaskData] = {}
    fit_kwargs = _vectorised(fit_kwargs)

    def make_data(seed: int) -> MultiTaskData:  # both runs below see the same data per seed
        if seed not in cache:
            cache[seed] = plan.make_data(seed)
        return cache[seed]

    if baseline is not None:
        base = plan.models.get(baseline) or resolve_models([baseline])[baseline]
        _check_models_fit({baseline: base}, first)
        frames.append(
            repeat_fits(
                make_data,
                {baseline: base},
                plan.seeds,
                fractions=fractions,
                split=split,
                progress=progress,
                **fit_kwargs,
            ).assign(configuration=baseline, ratio=np.nan)
        )
    raw = repeat_fits(
        make_data,
        swept,
        plan.seeds,
        fractions=fractions,
        weightings=weightings,
        split=split,
        progress=progress,
        **fit_kwargs,
    )
    label_ratio = {_ratio_label(task_a, task_b, r): r for r in (ratios or [])}
    raw["ratio"] = raw["weighting"].map(label_ratio).astype(float)
    raw["configuration"] = raw["model"] if ratios is None else raw["model"] + " " + raw["weighting"]
    frames.append(raw)
    out = pd.concat(frames, ignore_index=True)
    out = out.merge(pd.DataFrame(list(chosen.items()), columns=["task", "metric"]))
    out["split"] = split
    return out[
        ["configuration", "model", "weighting", "ratio", "seed", "task", "metric", "value", "split"]
    ].reset_index(drop=True)


def _seesaw_metrics(
    frame: pd.DataFrame,
    tasks: Sequence[str],
    metrics: Mapping[str, str | None] | Sequence[str] | None,
) -> dict[str, str]:
    """Task → metric for the two tasks of a seesaw plot, checked against the frame."""
    primary = _primary_metrics(frame[frame["task"].isin(tasks)])
    if metrics is None:
        chosen = {t: primary.get(t) for t in tasks}
    elif isinstance(metrics, Mapping):
        chosen = {t: metrics.get(t) or primary.get(t) for t in tasks}
    else:
        metrics = list(metrics)
        if len(metrics) != 2:
            raise ValueError(f"give one metric per task, e.g. ('auc', 'mse'), got {metrics}")
        chosen = dict(zip(tasks, metrics, strict=True))
    checked: dict[str, str] = {}
    for task, metric in chosen.items():
        have = sorted(set(frame.loc[frame["task"] == task, "metric"]))
        if metric is None or metric not in have:
            raise ValueError(f"task {task!r} has no metric {metric!r}; it has {have}")
        checked[task] = metric
    return checked


def _configurations(frame: pd.DataFrame) -> pd.Series:
    """The configuration label of each row: the column if present, else model (+ weighting
    when there are several)."""
    if "configuration" in frame.columns:
        return frame["configuration"].astype(str)
    if "weighting" in frame.columns and frame["weighting"].nunique() > 1:
        return frame["model"].astype(str) + " " + frame["weighting"].astype(str)
    return frame["model"].astype(str)


def seesaw_table(
    frame: pd.DataFrame,
    task_a: str | None = None,
    task_b: str | None = None,
    metric_a: str | None = None,
    metric_b: str | None = None,
    baseline: str | None = "single",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per configuration: both tasks' means and intervals over seeds, and flags.

    ``frame`` is the output of :func:`seesaw` (or any frame with columns ``model, seed, task,
    metric, value``, e.g. ``compare(...).raw``). The columns are ``configuration, n``, then
    ``{task}_{metric}``, ``..._lo``, ``..._hi`` for task A and task B, ``pareto`` (not
    dominated on the two metrics, each in its own direction: AUC higher is better, MSE lower)
    and ``beats_baseline`` (better than the baseline's mean on both tasks; NaN without one).
    """
    tasks = list(dict.fromkeys(frame["task"]))
    task_a = tasks[0] if task_a is None else task_a
    task_b = next(t for t in tasks if t != task_a) if task_b is None else task_b
    if task_a == task_b:
        raise ValueError(f"task_a and task_b must differ, got {task_a!r} twice")
    chosen = _seesaw_metrics(
        frame,
        [task_a, task_b],
        None if metric_a is None and metric_b is None else {task_a: metric_a, task_b: metric_b},
    )
    rows = frame.assign(configuration=_configurations(frame)).merge(
        pd.DataFrame(list(chosen.items()), columns=["task", "metric"])
    )
    summary = mean_interval(rows, ["configuration", "task"], confidence=confidence)
    configs = list(dict.fromkeys(rows["configuration"]))
    out = pd.DataFrame({"configuration": configs})
    out["n"] = summary.groupby("configuration")["n"].min().reindex(configs).to_numpy()
    columns: dict[str, str] = {}
    objectives: dict[str, list[str]] = {"maximize": [], "minimize": []}
    for task, metric in chosen.items():
        s = summary[summary["task"] == task].set_index("configuration").reindex(configs)
        col = columns[task] = f"{task}_{metric}"
        out[col], out[f"{col}_lo"], out[f"{col}_hi"] = (
            s["mean"].to_numpy(),
            s["lo"].to_numpy(),
            s["hi"].to_numpy(),
        )
        objectives["minimize" if metric in LOWER_IS_BETTER else "maximize"].append(col)
    out["pareto"] = pareto_front(out, **objectives)
    beats = pd.array([pd.NA] * len(out), dtype="boolean")
    if baseline is not None and baseline in configs:
        ref = out.set_index("configuration").loc[baseline]
        better = np.ones(len(out), dtype=bool)
        for task, metric in chosen.items():
            col = columns[task]
            better &= (
                out[col] < ref[col] if metric in LOWER_IS_BETTER else out[col] > ref[col]
            ).to_numpy()
        beats = pd.array(better, dtype="boolean")
        beats[(out["configuration"] == baseline).to_numpy()] = pd.NA
    out["beats_baseline"] = beats
    out.attrs["tasks"] = {"a": (task_a, chosen[task_a]), "b": (task_b, chosen[task_b])}
    return out


def plot_seesaw(
    frame: pd.DataFrame,
    task_a: str | None = None,
    task_b: str | None = None,
    metric_a: str | None = None,
    metric_b: str | None = None,
    baseline: str | None = "single",
    confidence: float = 0.95,
    ax: plt.Axes | None = None,
) -> Figure | SubFigure:
    """Task A's metric against task B's, one point per configuration, after the PLE paper.

    Error bars in both directions are the Student-t intervals over seeds; dashed crosshairs
    mark the baseline's means (single-task by default), so the quadrant of configurations
    that beat it on both tasks is shaded; the Pareto front (configurations no other one beats
    on both metrics) is joined by a line and drawn with filled markers. An axis whose metric
    is lower-better (MSE) is reversed, so up and right always mean better.

    Args:
        frame: output of :func:`seesaw`, or any frame accepted by :func:`seesaw_table`.
        task_a, task_b: the tasks on the x and y axes (default: the first two).
        metric_a, metric_b: their metrics (default: each task's only metric in a
            :func:`seesaw` frame; AUC or MSE otherwise).
        baseline: the configuration drawn as crosshairs (``None``: none).
        confidence: interval level.
        ax: draw into these axes instead of a new figure.

    Example:
        >>> from mtlbook.analysis.seesaw import plot_seesaw, seesaw
        >>> frame = seesaw(["shared_bottom", "mmoe"], "correlated:0.2", seeds=2,
        ...                n_samples=600, epochs=3)
        >>> fig = plot_seesaw(frame)
        >>> fig.axes[0].get_xlabel()
        'task1 MSE (test; ↓ better, axis reversed)'
    """
    import matplotlib.pyplot as plt

    table = seesaw_table(frame, task_a, task_b, metric_a, metric_b, baseline, confidence)
    (task_a, metric_a), (task_b, metric_b) = table.attrs["tasks"]["a"], table.attrs["tasks"]["b"]
    x, y = f"{task_a}_{metric_a}", f"{task_b}_{metric_b}"
    fig: Figure | SubFigure
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.0))
    else:
        fig = ax.figure
    base = baseline if baseline is not None and baseline in set(table["configuration"]) else None
    _draw_seesaw_points(ax, table, x, y, base)
    _draw_pareto_front(ax, table, x, y)
    lower_x, lower_y = metric_a in LOWER_IS_BETTER, metric_b in LOWER_IS_BETTER
    if lower_x:
        ax.invert_xaxis()
    if lower_y:
        ax.invert_yaxis()
    if base is not None:
        _draw_baseline_quadrant(ax, table, x, y, base)
    split = str(frame["split"].iloc[0]) if "split" in frame.columns else "test"
    for setter, task, metric, lower in (
        (ax.set_xlabel, task_a, metric_a, lower_x),
        (ax.set_ylabel, task_b, metric_b, lower_y),
    ):
        direction = "↓ better, axis reversed" if lower else "↑ better"
        setter(f"{task} {metric.upper()} ({split}; {direction})")
    ax.set_title(
        f"Seesaw: {task_a} vs {task_b} (mean and {confidence:.0%} interval over seeds)", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.85)
    tidy_layout(fig)
    return fig


def _draw_seesaw_points(
    ax: plt.Axes, table: pd.DataFrame, x: str, y: str, baseline: str | None
) -> None:
    """One labelled point per configuration with its interval bars in both directions; the
    baseline (when drawn) as a grey square."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    colors = plt.get_cmap("tab10")
    for i, row in table.reset_index(drop=True).iterrows():
        is_base = baseline is not None and row["configuration"] == baseline
        color = "#444444" if is_base else colors(i % 10)
        xerr = np.nan_to_num([[row[x] - row[f"{x}_lo"]], [row[f"{x}_hi"] - row[x]]])
        yerr = np.nan_to_num([[row[y] - row[f"{y}_lo"]], [row[f"{y}_hi"] - row[y]]])
        ax.errorbar(
            row[x],
            row[y],
            xerr=xerr,
            yerr=yerr,
            fmt="s" if is_base else "o",
            color=color,
            ecolor=to_rgba(color, 0.45),
            elinewidth=1,
            capsize=2,
            markersize=7,
            markeredgecolor="white",
            markeredgewidth=0.8,
            zorder=3,
        )
        ax.annotate(
            row["configuration"],
            (row[x], row[y]),
            textcoords="offset points",
            xytext=(6, 5),
            fontsize=8,
            color=color,
            zorder=5,
        )


def _draw_pareto_front(ax: plt.Axes, table: pd.DataFrame, x: str, y: str) -> None:
    """Ring the configurations on the Pareto front and join them by a line."""
    front = table[table["pareto"]].sort_values(x)
    ax.scatter(
        front[x],
        front[y],
        s=190,
        facecolors="none",
        edgecolors="#cc3311",
        linewidths=1.6,
        zorder=4,
        label="Pareto front (not dominated)",
    )
    if len(front) > 1:
        ax.plot(front[x], front[y], color="#cc3311", linewidth=1.6, alpha=0.8, zorder=4)


def _draw_baseline_quadrant(
    ax: plt.Axes, table: pd.DataFrame, x: str, y: str, baseline: str
) -> None:
    """Dashed crosshairs at the baseline's means and the shaded quadrant that beats it on both
    metrics; call it after any axis is reversed, and the axes' limits are kept."""
    ref = table.set_index("configuration").loc[baseline]
    ax.axvline(
        ref[x],
        color="#444444",
        linestyle="--",
        linewidth=1,
        zorder=1,
        label=f"{baseline} (mean)",
    )
    ax.axhline(ref[y], color="#444444", linestyle="--", linewidth=1, zorder=1)
    x_lim, y_lim = ax.get_xlim(), ax.get_ylim()
    # Reversed axes keep "better" up and right, so the better quadrant is always there.
    ax.fill_between(
        [ref[x], x_lim[1]],
        ref[y],
        y_lim[1],
        color="#2ca02c",
        alpha=0.07,
        zorder=0,
        label=f"better than {baseline} on both",
    )
    ax.set_xlim(x_lim)
    ax.set_ylim(y_lim)
