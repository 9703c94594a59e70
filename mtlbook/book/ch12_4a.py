"""Chapter 12.4.1 (first part of the syllabus's 12.4): does task relatedness predict the gain
of sharing, and how to balance losses of different scales.

**Relatedness.** Two measures of how related two tasks are, both cheap enough to compute before
committing to a multi-task model, are set against the gain a Shared-Bottom model actually
brings over separate single-task models:

* **label correlation**: Pearson's correlation of the two tasks' labels on the samples where
  both are defined (:func:`~mtlbook.analysis.relatedness.task_relatedness`), per seed's data set;
* **gradient cosine**: the cosine between the two tasks' gradients on the shared parameters,
  recorded every few steps on a fixed monitoring sample (probe batch) of the validation split
  while one multi-task model trains
  (:class:`~mtlbook.analysis.gradients.GradientConflict`), averaged over training;
* **measured gain**: the paired relative gain of the multi-task model over the single-task
  baseline on the test split over several seeds, with a Student-t interval and a verdict
  (:func:`~mtlbook.analysis.transfer.summarise_transfer`).

:func:`relatedness_study` does all three for several task pairs ("cases"); the seeds of every
configuration train as one vectorised population, and cases whose data have the same schema
and size (e.g. :func:`~mtlbook.make_correlated_tasks` at several correlations) train together.
:func:`plot_relatedness_gain` draws the gain against either measure.

**Loss balancing.** When a click log-loss (≈ 0.2) and a dwell-time squared error in seconds²
(hundreds to thousands) are added with equal weights, the shared layers follow the larger loss.
The chapter shows that and compares the remedies of :mod:`mtlbook.weighting` with:

* :func:`initial_losses` and :func:`inverse_loss_weights`: the manual remedy, a fixed weight
  per task inversely proportional to its loss at initialisation;
* the histories of the runs (kept by :class:`~mtlbook.analysis.runs.RecordingTrainer`), whose
  per-epoch ``weight`` rows show how a strategy moved the task weights;
* :func:`weight_frame`, :func:`plot_weight_history`, :func:`plot_metric_history`,
  :func:`plot_scale_mismatch` and :func:`plot_strategy_run` draw them, labelled in Chinese
  (strategy names through :data:`WEIGHTING_NAMES`, task names through
  :func:`mtlbook.book.page.zh`).

The three strategies the chapter writes from scratch are in
:mod:`mtlbook.book.teaching.balancing`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure, SubFigure

from ..analysis._common import tidy_layout
from ..analysis.compare import resolve_models
from ..analysis.gradients import GradientConflict
from ..analysis.intervals import mean_interval
from ..analysis.relatedness import task_relatedness
from ..analysis.runs import Factory, ModelSpec, population_trainer, repeat_fits
from ..analysis.transfer import summarise_transfer
from ..data import MultiTaskData
from ..models.base import MultiTaskModel
from ..training.loop import fit
from .page import zh

__all__ = [
    "WEIGHTING_NAMES",
    "RelatednessStudy",
    "initial_losses",
    "inverse_loss_weights",
    "plot_metric_history",
    "plot_relatedness_gain",
    "plot_scale_mismatch",
    "plot_strategy_run",
    "plot_weight_history",
    "relatedness_study",
    "transfer_by_weighting",
    "weight_frame",
]

#: The Chinese names the chapter's figures and tables give the strategies of
#: :func:`mtlbook.weighting.standard_strategies` (the chapter calls fixed weights "manual").
WEIGHTING_NAMES: dict[str, str] = {
    "equal": "等权",
    "manual": "手动权重",
    "fixed": "手动权重",
    "uncertainty": "不确定性加权",
    "gradnorm": "GradNorm",
    "dwa": "DWA",
    "rlw": "RLW",
    "famo": "FAMO",
    "pcgrad": "PCGrad",
    "mgda": "MGDA",
    "cagrad": "CAGrad",
    "imtl": "IMTL (L+G)",
    "single": "单任务",
    "-": "单任务",
}

#: Seeds of case ``i`` are shifted by ``i · _OFFSET`` inside the joint run, so that the cases
#: can share one call of the trainer (and one population where their data sizes agree).
_OFFSET = 1_000_000


@torch.no_grad()
def initial_losses(
    model: MultiTaskModel, data: MultiTaskData, max_rows: int = 20_000, seed: int = 0
) -> dict[str, float]:
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
        raise ValueError(
            f"the data's tasks {list(data.task_names)} are not the model's {list(model.task_names)}"
        )
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


def transfer_by_weighting(
    baseline_raw: pd.DataFrame,
    mtl_raw: pd.DataFrame,
    metrics: Mapping[str, str] | None = None,
    model: str | None = None,
    baseline: str | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Negative-transfer verdicts of a multi-task model under each of its weightings.

    The baseline (single-task models: nothing to weight) is trained once; the multi-task
    model once per weighting. Each weighting's rows are paired with the baseline's by seed and
    passed to :func:`~mtlbook.analysis.transfer.summarise_transfer`.

    Args:
        baseline_raw: per-seed results of the baseline (one model name).
        mtl_raw: per-seed results of the multi-task model under one or more weightings.
        metrics: task → metric (default: AUC for binary tasks, MSE for regression ones).
        model, baseline: the model names (default: the only one in each frame).
        confidence: interval level.

    Returns:
        :func:`~mtlbook.analysis.transfer.summarise_transfer`'s columns plus ``weighting``.
    """
    from ..analysis.transfer import summarise_transfer

    def only(frame: pd.DataFrame, name: str | None, what: str) -> str:
        names = sorted(set(frame["model"]))
        if name is None:
            if len(names) != 1:
                raise ValueError(f"{what} has models {names}; name the one to use")
            return names[0]
        if name not in names:
            raise ValueError(f"{what} has no model {name!r}; it has {names}")
        return name

    model, baseline = only(mtl_raw, model, "mtl_raw"), only(baseline_raw, baseline, "baseline_raw")
    base = baseline_raw[baseline_raw["model"] == baseline]
    frames = []
    for weighting, rows in mtl_raw[mtl_raw["model"] == model].groupby("weighting", sort=False):
        pair = pd.concat([base.assign(weighting=weighting), rows], ignore_index=True)
        frames.append(
            summarise_transfer(
                pair,
                model,
                baseline,
                metrics=None if metrics is None else dict(metrics),
                confidence=confidence,
            ).assign(weighting=weighting)
        )
    return pd.concat(frames, ignore_index=True)


def weight_frame(
    histories: Mapping[tuple[str, str, int], pd.DataFrame] | pd.DataFrame,
) -> pd.DataFrame:
    """The per-epoch task weights of fit histories as one tidy frame.

    Args:
        histories: :attr:`~mtlbook.analysis.runs.RecordingTrainer.histories`, or one
            :attr:`~mtlbook.training.FitResult.history`.

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
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "weighting": weighting,
                    "seed": seed,
                    "epoch": rows["epoch"].to_numpy(),
                    "task": rows["task"].to_numpy(),
                    "weight": rows["value"].to_numpy(),
                }
            )
        )
    if not frames:
        raise ValueError("no history given")
    return pd.concat(frames, ignore_index=True)


def plot_weight_history(
    weights: pd.DataFrame, weightings: Sequence[str] | None = None, col_wrap: int = 4
) -> plt.Figure:
    """Task weights against the epoch, one panel per strategy (log scale), one line per task
    (mean over seeds, with their range shaded when there are several); labels in Chinese.

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
        raise ValueError(
            f"no weights recorded for {unknown}; have {sorted(set(weights['weighting']))}"
        )
    tasks = list(dict.fromkeys(weights["task"]))
    palette = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    n_cols = min(col_wrap, len(names))
    n_rows = -(-len(names) // n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.3 * n_cols, 2.7 * n_rows), squeeze=False, sharex=True
    )
    for ax, name in zip(axes.flat, names, strict=False):
        rows = weights[weights["weighting"] == name]
        for task in tasks:
            g = rows[rows["task"] == task].groupby("epoch")["weight"]
            mean, lo, hi = g.mean(), g.min(), g.max()
            ax.plot(
                mean.index,
                mean.to_numpy(),
                marker="o",
                markersize=3,
                color=palette[task],
                label=zh(task),
            )
            if rows["seed"].nunique() > 1:
                ax.fill_between(
                    mean.index,
                    lo.to_numpy(),
                    hi.to_numpy(),
                    color=palette[task],
                    alpha=0.2,
                    linewidth=0,
                )
        ax.set(yscale="log", title=WEIGHTING_NAMES.get(name, name), xlabel="轮次")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("任务权重")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_metric_history(
    histories: Mapping[tuple[str, str, int], pd.DataFrame],
    task: str,
    metric: str,
    weightings: Sequence[str] | None = None,
    reference: float | None = None,
    ax: plt.Axes | None = None,
) -> Figure | SubFigure:
    """A validation metric against the epoch for several strategies (mean over the recorded
    seeds, their range shaded), with an optional horizontal reference line (e.g. the
    single-task model's test value). Labels in Chinese.

    Args:
        histories: :attr:`~mtlbook.analysis.runs.RecordingTrainer.histories`.
        task, metric: what to draw, e.g. ``"click"``, ``"auc"``.
        weightings: the strategies to draw (default: all recorded).
        reference: the value of the reference line (``None``: none).
        ax: axes to draw on (default: a new figure).
    """
    frames = [
        h[(h["split"] == "valid") & (h["task"] == task) & (h["metric"] == metric)].assign(
            weighting=w, seed=s
        )
        for (_, w, s), h in histories.items()
    ]
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
        ax.plot(
            mean.index,
            mean.to_numpy(),
            marker="o",
            markersize=3,
            color=palette[name],
            label=WEIGHTING_NAMES.get(name, name),
        )
        ax.fill_between(
            mean.index,
            g.min().to_numpy(),
            g.max().to_numpy(),
            color=palette[name],
            alpha=0.15,
            linewidth=0,
        )
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1, label="单任务")
    ax.set(xlabel="轮次", ylabel=f"验证集{zh(task)} {metric.upper()}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig = ax.figure
    tidy_layout(fig)
    return fig


def plot_scale_mismatch(history: pd.DataFrame, norms: pd.DataFrame) -> plt.Figure:
    """Why equal weights fail: each task's training loss per epoch and its gradient norm on
    the shared parameters per step, both on a log scale; labels in Chinese.

    Args:
        history: a :attr:`~mtlbook.training.FitResult.history`.
        norms: :meth:`~mtlbook.analysis.gradients.GradientConflict.norms` of the same run.
    """
    losses = history[
        (history["split"] == "train") & (history["metric"] == "loss") & (history["task"] != "all")
    ]
    if losses.empty or norms.empty:
        raise ValueError("need a fit history with training losses and a non-empty norm frame")
    losses = losses.assign(任务=losses["task"].map(zh))
    norms = norms.assign(任务=norms["task"].map(zh))
    tasks = list(dict.fromkeys(losses["任务"]))
    palette = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    sns.lineplot(losses, x="epoch", y="value", hue="任务", palette=palette, marker="o", ax=axes[0])
    axes[0].set(
        yscale="log",
        xlabel="轮次",
        ylabel="训练损失（对数损失或 MSE）",
        title="各任务的训练损失（等权）",
    )
    sns.lineplot(
        norms, x="step", y="norm", hue="任务", palette=palette, marker="o", markersize=3, ax=axes[1]
    )
    axes[1].set(
        yscale="log",
        xlabel="训练步",
        ylabel=r"共享参数上的梯度范数 $\|\nabla L_k\|$",
        title="各任务的梯度范数（监测样本上）",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_strategy_run(
    history: pd.DataFrame,
    test: pd.DataFrame,
    reference: Mapping[str, float] | None = None,
    title: str = "",
) -> plt.Figure:
    """One run of one strategy: task weights over training, and its test metrics (labels in
    Chinese).

    Args:
        history: the run's :attr:`~mtlbook.training.FitResult.history`.
        test: ``task, metric, value`` rows of the run's test metrics (e.g. from
            :func:`~mtlbook.evaluate`), one headline metric per task.
        reference: optional task → value drawn as a marker (e.g. the single-task models').
        title: the figure's title.
    """
    weights = weight_frame(history)
    tasks = list(dict.fromkeys(weights["task"]))
    palette = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    fig, axes = plt.subplots(
        1,
        1 + len(test),
        figsize=(3.6 + 2.2 * len(test), 3.2),
        gridspec_kw={"width_ratios": [2.2] + [1] * len(test)},
    )
    for task in tasks:
        rows = weights[weights["task"] == task]
        axes[0].plot(rows["epoch"], rows["weight"], marker="o", color=palette[task], label=zh(task))
    axes[0].set(yscale="log", xlabel="轮次", ylabel="任务权重", title="任务权重")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    for ax, (_, row) in zip(axes[1:], test.iterrows(), strict=True):
        ax.bar([0], [row["value"]], color=palette.get(row["task"], "#777777"), width=0.6)
        if reference is not None and row["task"] in reference:
            ax.scatter([0], [reference[row["task"]]], marker="_", s=900, color="black", zorder=3)
        ax.set(xticks=[], title=f"测试集{zh(row['task'])} {row['metric'].upper()}")
        if row["metric"] == "auc":
            ax.set_ylim(0.4, max(0.8, row["value"] + 0.05))
        ax.grid(axis="y", alpha=0.3)
    if reference is not None:
        title = f"{title}\n（黑色短线：单任务参照）" if title else "黑色短线：单任务参照"

    fig.suptitle(title)
    fig.tight_layout()
    return fig


@dataclass
class RelatednessStudy:
    """What :func:`relatedness_study` returns.

    Attributes:
        summary: one row per case and task: ``case, task, metric, label_corr,
            label_corr_lo, label_corr_hi`` (mean and interval over the seeds' data sets),
            ``grad_cosine, grad_cosine_sd`` (mean and standard deviation over the records of
            one training run), ``gain_mean, gain_lo, gain_hi`` (paired gain in %,
            positive = better), ``n`` (paired seeds) and ``verdict``.
        raw: per-seed test metrics (the columns of
            :func:`~mtlbook.analysis.runs.repeat_fits` plus ``case``).
        conflict: the gradient-cosine records (:meth:`GradientConflict.frame` plus ``case``).
        model, baseline: the names of the multi-task model and of the baseline in ``raw``.
    """

    summary: pd.DataFrame
    raw: pd.DataFrame
    conflict: pd.DataFrame
    model: str
    baseline: str


def _check_cases(cases: Mapping[str, Callable[[int], MultiTaskData]]) -> None:
    if not isinstance(cases, Mapping) or not cases:
        raise ValueError("cases must be a non-empty mapping name → (seed → MultiTaskData)")
    bad = [name for name, make in cases.items() if not callable(make)]
    if bad:
        raise TypeError(f"case(s) {bad} must map to a seed → MultiTaskData function")


def relatedness_study(
    cases: Mapping[str, Callable[[int], MultiTaskData]],
    model: Factory | Mapping[str, Factory],
    seeds: Sequence[int],
    *,
    baseline: str | ModelSpec | Mapping[str, ModelSpec | str] = "single",
    transform_train: Callable[[MultiTaskData, int], MultiTaskData] | None = None,
    conflict_every: int = 10,
    probe_size: int = 512,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    confidence: float = 0.95,
    **fit_kwargs: Any,
) -> RelatednessStudy:
    """Label correlation, gradient cosine and measured MTL gain for several task pairs.

    Args:
        cases: name → ``seed → MultiTaskData`` with exactly two tasks each.
        model: the multi-task model: a ``(schema, seed) → model`` factory with shared
            parameters (e.g. ``model_factory(SharedBottom)``), or a one-entry mapping name →
            factory (the name used in ``raw``; default ``"mtl"``).
        seeds: the seeds; every seed draws its own data, split and initial weights, and the
            multi-task model and the baseline see the same ones (paired).
        baseline: the reference, ``"single"`` (a separate SingleTask per task) by default, a
            factory / :class:`~mtlbook.analysis.runs.PerTask` (named ``"baseline"`` in ``raw``),
            or a one-entry mapping name → either.
        transform_train: optional ``(train, seed) → train`` for the training split (e.g. make
            one task sparse); also applied to the gradient-cosine run.
        conflict_every: record the gradient cosine every this many steps.
        probe_size: size of the monitoring sample (drawn from the validation split) on which
            the gradients are recorded.
        fractions: train / valid / test fractions.
        confidence: level of the intervals.
        **fit_kwargs: passed to :func:`mtlbook.fit` (``epochs``, ``lr``, ``early_stopping``, ...).

    The gradient cosine comes from one training run of ``model`` on the first seed's data
    (monitoring sample from the validation split); its spread is over the training steps, not
    over seeds.

    All cases train in one call of the trainer, so that cases with data of the same schema and
    size share a vectorised population: inside that call, seed ``s`` of the ``i``-th case is
    ``i·10⁶ + s``. Its data are drawn with ``s``; the split, the initial weights and the batch
    order use the shifted seed (for the first case they are ``s`` itself). ``raw`` reports
    ``s``.

    Returns:
        A :class:`RelatednessStudy`.

    Raises:
        ValueError: for an empty ``seeds`` or ``cases``, or a case whose data do not have
            exactly two tasks.
        TypeError: for a ``model`` that is not a factory (e.g. a per-task baseline).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.compare import model_factory
        >>> from mtlbook.models import SharedBottom
        >>> cases = {f"p={p}": (lambda s, p=p: mb.make_correlated_tasks(300, p, n_features=8,
        ...                                                              seed=s))
        ...          for p in (0.0, 0.9)}
        >>> study = relatedness_study(cases, model_factory(SharedBottom, bottom_units=(8,)),
        ...                           seeds=[0, 1, 2], epochs=2)
        >>> study.summary[["case", "task"]].values.tolist()
        [['p=0.0', 'task1'], ['p=0.0', 'task2'], ['p=0.9', 'task1'], ['p=0.9', 'task2']]
    """
    _check_cases(cases)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct seeds, got {seeds}")
    if any(s < 0 or s >= _OFFSET for s in seeds):
        raise ValueError(f"seeds must lie in [0, {_OFFSET}), got {seeds}")
    models, name, base_name = _model_and_baseline(model, baseline)

    names = list(cases)
    first = {}
    for case in names:
        data = cases[case](seeds[0])
        if not isinstance(data, MultiTaskData):
            raise TypeError(f"case {case!r} returned {type(data).__name__}, not a MultiTaskData")
        if len(data.task_names) != 2:
            raise ValueError(
                f"case {case!r} has tasks {list(data.task_names)}; a relatedness "
                "study compares pairs of tasks (use data.select_tasks)"
            )
        first[case] = data

    def make_data(seed: int) -> MultiTaskData:
        case, s = names[seed // _OFFSET], seed % _OFFSET
        return first[case] if s == seeds[0] else cases[case](s)

    transform = None
    if transform_train is not None:

        def transform(train: MultiTaskData, seed: int) -> MultiTaskData:
            return transform_train(train, seed % _OFFSET)

    fit_kwargs.setdefault("progress", False)
    all_seeds = [i * _OFFSET + s for i in range(len(names)) for s in seeds]
    raw = repeat_fits(
        make_data,
        models,
        all_seeds,
        fractions=fractions,
        transform_train=transform,
        trainer=fit_kwargs.pop("trainer", population_trainer),
        **fit_kwargs,
    )
    raw.insert(0, "case", [names[s // _OFFSET] for s in raw["seed"]])
    raw["seed"] = raw["seed"] % _OFFSET

    rows, conflicts = [], []
    for case in names:
        verdicts = summarise_transfer(
            raw[raw["case"] == case], name, base_name, confidence=confidence
        )
        corr = pd.DataFrame(
            {
                "value": [
                    _label_corr(first[case] if s == seeds[0] else cases[case](s)) for s in seeds
                ]
            }
        )
        corr = mean_interval(corr.assign(k=0), ["k"], confidence=confidence).iloc[0]
        train, valid, _ = first[case].split(fractions, seed=seeds[0])
        if transform_train is not None:
            train = transform_train(train, seeds[0])
        recorder = GradientConflict(
            valid, every=conflict_every, probe_size=probe_size, seed=seeds[0]
        )
        make_model = cast(Factory, models[name])  # callable: _model_and_baseline checks it
        fit(
            make_model(train.schema, seeds[0]),
            train,
            valid,
            seed=seeds[0],
            callbacks=[recorder],
            **fit_kwargs,
        )
        frame = recorder.frame().assign(case=case)
        conflicts.append(frame)
        cosine = frame["cosine"].dropna()
        for _, v in verdicts.iterrows():
            rows.append(
                {
                    "case": case,
                    "task": v["task"],
                    "metric": v["metric"],
                    "label_corr": corr["mean"],
                    "label_corr_lo": corr["lo"],
                    "label_corr_hi": corr["hi"],
                    "grad_cosine": cosine.mean(),
                    "grad_cosine_sd": cosine.std(),
                    "gain_mean": v["gain_mean"],
                    "gain_lo": v["gain_lo"],
                    "gain_hi": v["gain_hi"],
                    "n": v["n"],
                    "verdict": v["verdict"],
                }
            )
    return RelatednessStudy(
        summary=pd.DataFrame(rows),
        raw=raw,
        conflict=pd.concat(conflicts, ignore_index=True),
        model=name,
        baseline=base_name,
    )


def _model_and_baseline(model: Any, baseline: Any) -> tuple[dict[str, ModelSpec], str, str]:
    """The two resolved models of a relatedness study, and their names."""
    models = resolve_models(dict(model) if isinstance(model, Mapping) else {"mtl": model})
    if len(models) != 1:
        raise ValueError(f"give one multi-task model, got {list(models)}")
    name = next(iter(models))
    if not callable(models[name]):
        raise TypeError(
            f"model must be a multi-task (schema, seed) → model factory with shared "
            f"parameters, got {type(models[name]).__name__} (a per-task baseline "
            "belongs in baseline=)"
        )
    if isinstance(baseline, Mapping):
        if len(baseline) != 1:
            raise ValueError(f"give one baseline, got {list(baseline)}")
        base_name, baseline = next(iter(baseline.items()))
    else:
        base_name = baseline if isinstance(baseline, str) else "baseline"
    if base_name == name:
        raise ValueError(f"the model and the baseline are both called {name!r}")
    models.update(resolve_models({base_name: baseline}))
    return models, name, base_name


def _label_corr(data: MultiTaskData) -> float:
    """Pearson correlation of the two tasks' labels where both are defined."""
    return float(task_relatedness(data)["pearson"].iloc[0])


def plot_relatedness_gain(
    summary: pd.DataFrame,
    axes: Sequence[plt.Axes] | None = None,
    names: Mapping[str, str] | None = None,
) -> Figure | SubFigure:
    """Measured gain (with its interval over seeds) against label correlation and against
    gradient cosine: one point per case and task.

    Horizontal bars: the label correlation's interval over the seeds' data sets (left) and
    the gradient cosine's standard deviation over training (right). Labels in Chinese; case
    names are translated by :func:`mtlbook.book.page.zh` with ``names`` (e.g.
    ``{"funnel": "漏斗"}``).

    Args:
        summary: :attr:`RelatednessStudy.summary`.
        axes: two axes to draw on (default: a new figure).
        names: Chinese names of cases (and tasks) for the legend.

    Example:
        >>> import pandas as pd
        >>> summary = pd.DataFrame({"case": ["a", "a"], "task": ["t1", "t2"],
        ...     "label_corr": [0.5, 0.5], "label_corr_lo": [0.4, 0.4],
        ...     "label_corr_hi": [0.6, 0.6], "grad_cosine": [0.2, 0.2],
        ...     "grad_cosine_sd": [0.1, 0.1],
        ...     "gain_mean": [5.0, -3.0], "gain_lo": [1.0, -6.0], "gain_hi": [9.0, 0.0]})
        >>> fig = plot_relatedness_gain(summary)
    """
    needed = [
        "case",
        "task",
        "label_corr",
        "label_corr_lo",
        "label_corr_hi",
        "grad_cosine",
        "grad_cosine_sd",
        "gain_mean",
        "gain_lo",
        "gain_hi",
    ]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise ValueError(f"column(s) {missing} missing; pass RelatednessStudy.summary")
    fig: Figure | SubFigure
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    fig = axes[0].figure
    cases = list(dict.fromkeys(summary["case"]))
    colors = dict(zip(cases, sns.color_palette("colorblind", len(cases)), strict=True))
    markers = ["o", "s", "^", "D"]
    spread = summary["grad_cosine_sd"]
    summary = summary.assign(
        cos_lo=summary["grad_cosine"] - spread, cos_hi=summary["grad_cosine"] + spread
    )
    for ax, (x, lo, hi, label) in zip(
        axes,
        [
            (
                "label_corr",
                "label_corr_lo",
                "label_corr_hi",
                "标签相关（皮尔逊系数；种子间的 95% 区间）",
            ),
            (
                "grad_cosine",
                "cos_lo",
                "cos_hi",
                "共享参数上的梯度余弦（训练过程中的均值 ± 标准差）",
            ),
        ],
        strict=True,
    ):
        for _, r in summary.iterrows():
            order = list(summary.loc[summary["case"] == r["case"], "task"]).index(r["task"])
            xerr = np.nan_to_num([[r[x] - r[lo]], [r[hi] - r[x]]])
            yerr = np.nan_to_num([[r["gain_mean"] - r["gain_lo"]], [r["gain_hi"] - r["gain_mean"]]])
            ax.errorbar(
                r[x],
                r["gain_mean"],
                xerr=xerr,
                yerr=yerr,
                fmt=markers[order % 4],
                color=colors[r["case"]],
                capsize=3,
                markersize=7,
                label=f"{zh(r['case'], names)}：{zh(r['task'], names)}",
            )
        ax.axhline(0, color="#333333", linewidth=1)
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("多任务相对单任务的增益 %（95% 区间）")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    tidy_layout(fig)
    return fig
