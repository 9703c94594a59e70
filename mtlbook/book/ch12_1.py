"""Chapter 12.1 (why multi-task learning): sparse labels, generalisation and serving cost.

Two of the reasons usually given for multi-task learning are claims about curves:

* *it helps sparse tasks*: as a task keeps fewer training labels, a model that shares a
  representation with a data-rich task should lose less than a model trained on that task
  alone. :func:`label_fraction_curve` runs :func:`~mtlbook.analysis.runs.repeat_fits` at
  several fractions of one task's training labels (validation and test keep all labels) and
  :func:`plot_label_fraction_curve` draws the metric and the paired gain against the fraction;
* *it generalises better*: the validation loss should stay closer to the training loss.
  :func:`loss_curves` trains models with :func:`mtlbook.fit` and records, after every epoch,
  the loss on the **whole training split in eval mode** (the history of :func:`mtlbook.fit`
  keeps the running mean of the mini-batch losses instead, which mixes the weights of a whole
  epoch) and on the validation split; :func:`generalisation_gap` reads the gap at each run's
  selected epoch (or at one epoch for all), and :func:`plot_loss_curves` draws the curves.

:func:`paired_difference` is the absolute counterpart of
:func:`~mtlbook.analysis.intervals.mtl_gain`, for baselines whose metric is near a degenerate value
(an AUC near 0.5) where a relative gain would divide by noise.

A third reason is a claim about cost: one model with a head per task against one model per
task. :func:`serving_cost` puts the parameters (:func:`mtlbook.utils.count_parameters`) and
the inference latency (:func:`mtlbook.analysis.serving.inference_latency`) in one table for
several serving setups and task counts; a setup is a function ``data → list of models`` that
together predict every task of ``data``, built with :func:`separate_models` (one model per
task) or :func:`one_model`.

Latency is measured on whatever machine runs the code, with the thread settings of the
caller (the book uses ``torch.set_num_threads(1)``); the *ratio* between setups on the same
machine is the number to read, not the absolute milliseconds.

Example:
    >>> from functools import cache
    >>> import mtlbook as mb
    >>> from mtlbook.analysis.compare import model_factory
    >>> from mtlbook.analysis.runs import PerTask
    >>> from mtlbook.book.ch12_1 import label_fraction_curve, plot_label_fraction_curve
    >>> from mtlbook.models import SharedBottom, SingleTask
    >>> make = cache(lambda seed: mb.simulate_funnel(1_500, seed=seed, n_users=200, n_items=100,
    ...                                              click_rate=0.1, purchase_rate=0.03))
    >>> models = {"single": PerTask(model_factory(SingleTask)),
    ...           "shared": model_factory(SharedBottom)}
    >>> curve = label_fraction_curve(make, models, range(2), task="purchase",
    ...                              label_fractions=[1.0, 0.3], epochs=2)
    >>> sorted(curve["label_fraction"].unique().tolist())
    [0.3, 1.0]
    >>> sorted(set(curve.loc[curve["model"] == "single", "task"]))  # trained on purchase alone
    ['purchase']
    >>> fig = plot_label_fraction_curve(curve, baseline="single")  # test AUC and paired gain
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..analysis.intervals import mean_interval, mtl_gain
from ..analysis.runs import Factory, PerTask, repeat_fits
from ..analysis.serving import _interleaved_latency
from ..data import MultiTaskData, Schema
from ..metrics import LOWER_IS_BETTER
from ..models.base import MultiTaskModel
from ..training.loop import Callback, fit
from ..utils import count_parameters
from .page import zh

__all__ = [
    "EpochLosses",
    "Setup",
    "generalisation_gap",
    "label_fraction_curve",
    "loss_curves",
    "one_model",
    "paired_difference",
    "plot_label_fraction_curve",
    "plot_loss_curves",
    "separate_models",
    "serving_cost",
]


def _sparse(task: str, fraction: float) -> Callable[[MultiTaskData, int], MultiTaskData] | None:
    """The ``transform_train`` that keeps ``fraction`` of ``task``'s training labels."""
    if fraction >= 1.0:
        return None

    def transform(train: MultiTaskData, seed: int) -> MultiTaskData:
        return train.subsample_labels(task, fraction, seed=seed)

    return transform


def label_fraction_curve(
    make_data: Callable[[int], MultiTaskData],
    models: Mapping[str, Factory | PerTask],
    seeds: Iterable[int],
    *,
    task: str,
    label_fractions: Sequence[float],
    **repeat_kwargs,
) -> pd.DataFrame:
    """Test metrics of every model as ``task`` keeps a shrinking fraction of training labels.

    For each fraction ``f``, :func:`~mtlbook.analysis.runs.repeat_fits` trains every model on
    every seed with ``transform_train = train.subsample_labels(task, f, seed)``: the training
    split keeps ``task``'s label on a random ``f`` of its samples; the other tasks keep all
    their labels; validation and test keep everything. Multi-task models are trained on all
    tasks; a :class:`~mtlbook.analysis.runs.PerTask` baseline is trained on ``task`` alone (its
    models for the other tasks would not change with ``f``). Both see the same split and the
    same kept labels for a given seed, so their results are paired.

    Args:
        make_data: ``seed → MultiTaskData``. It is called once per seed per fraction and
            model group; wrap it in :func:`functools.cache` when drawing data is slow.
        models: name → ``(schema, seed) → model`` or → :class:`PerTask`.
        seeds: the seeds (data, split, kept labels, initial weights, batch order).
        task: the task made sparse.
        label_fractions: fractions in ``(0, 1]``; ``1.0`` means all labels.
        **repeat_kwargs: passed to :func:`~mtlbook.analysis.runs.repeat_fits` (``fractions``
            of the split, ``epochs``, ``early_stopping``, ``lr``, ...).

    Returns:
        The tidy frame of :func:`~mtlbook.analysis.runs.repeat_fits` with an extra
        ``label_fraction`` column.
    """
    if "transform_train" in repeat_kwargs:
        raise ValueError(
            "label_fraction_curve sets transform_train itself; make the data "
            "sparse through label_fractions"
        )
    if not models:
        raise ValueError("models must name at least one model factory")
    fractions = [float(f) for f in label_fractions]
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"label_fractions must be numbers in (0, 1], got {label_fractions!r}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    first = make_data(seeds[0])
    if task not in first.task_names:
        raise ValueError(
            f"task {task!r} is not in the data; its tasks are {list(first.task_names)}"
        )
    per_task = {k: v for k, v in models.items() if isinstance(v, PerTask)}
    shared = {k: v for k, v in models.items() if not isinstance(v, PerTask)}

    def only_task(seed: int) -> MultiTaskData:
        return make_data(seed).select_tasks([task])

    frames = []
    for f in fractions:
        transform = _sparse(task, f)
        if per_task:
            frames.append(
                repeat_fits(
                    only_task, per_task, seeds, transform_train=transform, **repeat_kwargs
                ).assign(label_fraction=f)
            )
        if shared:
            frames.append(
                repeat_fits(
                    make_data, shared, seeds, transform_train=transform, **repeat_kwargs
                ).assign(label_fraction=f)
            )
    return pd.concat(frames, ignore_index=True)


def paired_difference(
    df: pd.DataFrame, baseline: str, *, by: Sequence[str] = (), confidence: float = 0.95
) -> pd.DataFrame:
    """Paired difference of every model's metric from ``baseline``'s, in the metric's units.

    Like :func:`~mtlbook.analysis.intervals.mtl_gain` (same pairing by seed, same sign convention:
    positive means better than the baseline), but ``m − b`` (or ``b − m`` for lower-better
    metrics) instead of the relative ``(m − b) / b``. Use it when the baseline's value is
    itself mostly noise, e.g. an AUC near 0.5, where dividing by it inflates the spread.

    Returns:
        :func:`~mtlbook.analysis.intervals.mean_interval` of the differences per
        ``[*by, model, task, metric]``.
    """
    if baseline not in set(df["model"]):
        raise ValueError(f"baseline {baseline!r} not among the models {sorted(set(df['model']))}")
    keys = [*by, "seed", "task", "metric"]
    base = df[df["model"] == baseline].set_index(keys)["value"]
    joined = df[df["model"] != baseline].join(base.rename("baseline"), on=keys)
    diff = joined["value"] - joined["baseline"]
    diff = diff.where(~joined["metric"].isin(LOWER_IS_BETTER), -diff)
    return mean_interval(
        joined.assign(difference=diff),
        [*by, "model", "task", "metric"],
        value="difference",
        confidence=confidence,
    )


def plot_label_fraction_curve(
    curve: pd.DataFrame,
    *,
    baseline: str,
    task: str | None = None,
    metric: str = "auc",
    gain: str = "relative",
    confidence: float = 0.95,
    names: Mapping[str, str] | None = None,
) -> plt.Figure:
    """Left: test ``metric`` of ``task`` against the fraction of its labels kept (log scale),
    one line per model with the Student-t interval over seeds. Right: the paired gain of
    every other model over ``baseline`` with its interval; above 0 means better. With
    ``gain="relative"`` it is :func:`~mtlbook.analysis.intervals.mtl_gain` (%), with
    ``gain="difference"`` :func:`paired_difference` (in the metric's units).

    ``curve`` is the output of :func:`label_fraction_curve`; ``task`` defaults to the task
    that the baseline was trained on when there is only one. The labels are in Chinese, as
    the book shows them; model and task names go through :func:`mtlbook.book.page.zh`, with
    ``names`` (e.g. ``{"SharedBottom": "Shared-Bottom"}``) taking precedence.
    """
    for column in ("label_fraction", "model", "task", "metric", "seed", "value"):
        if column not in curve.columns:
            raise ValueError(
                f"curve has no column {column!r}; pass the output of label_fraction_curve"
            )
    if baseline not in set(curve["model"]):
        raise ValueError(
            f"baseline {baseline!r} not among the models {sorted(set(curve['model']))}"
        )
    if task is None:
        tasks = sorted(set(curve.loc[curve["model"] == baseline, "task"]))
        if len(tasks) != 1:
            raise ValueError(f"the baseline has tasks {tasks}; say which one with task=...")
        task = tasks[0]
    rows = curve[(curve["task"] == task) & (curve["metric"] == metric)]
    if rows.empty:
        raise ValueError(f"no rows for task {task!r} and metric {metric!r}")
    if gain not in ("relative", "difference"):
        raise ValueError(f"gain must be 'relative' or 'difference', got {gain!r}")
    summary = mean_interval(rows, ["model", "label_fraction"], confidence=confidence)
    compute = mtl_gain if gain == "relative" else paired_difference
    gains = compute(rows, baseline, by=["label_fraction"], confidence=confidence)
    models = list(dict.fromkeys(rows["model"]))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models)), strict=True))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, model in enumerate(models):
        s = summary[summary["model"] == model].sort_values("label_fraction")
        shift = 1.0 + 0.04 * (k - (len(models) - 1) / 2)  # keep error bars apart (log axis)
        left.errorbar(
            s["label_fraction"] * shift,
            s["mean"],
            yerr=[s["mean"] - s["lo"], s["hi"] - s["mean"]],
            marker="o",
            capsize=3,
            label=zh(model, names),
            color=palette[model],
        )
        g = gains[gains["model"] == model].sort_values("label_fraction")
        if not g.empty:
            right.errorbar(
                g["label_fraction"],
                g["mean"],
                yerr=[g["mean"] - g["lo"], g["hi"] - g["mean"]],
                marker="o",
                capsize=3,
                label=f"{zh(model, names)} 相对 {zh(baseline, names)}",
                color=palette[model],
            )
    direction = "越低越好" if metric in LOWER_IS_BETTER else "越高越好"
    task_zh, metric_zh = zh(task, names), zh(metric)  # e.g. 购买, AUC
    left.set(
        xscale="log",
        xlabel=f"训练集中保留的{task_zh}标签比例",
        ylabel=f"{task_zh}的测试 {metric_zh}（{direction}）",
        title=f"{task_zh}：测试 {metric_zh}",
    )
    right.axhline(0.0, color="grey", linewidth=1)
    unit = "配对相对增益 (%)" if gain == "relative" else f"配对 {metric_zh} 差"
    right.set(
        xscale="log",
        xlabel=f"训练集中保留的{task_zh}标签比例",
        ylabel=f"{unit}（0 以上 = 更好）",
        title="相对基线的增益",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


class EpochLosses(Callback):
    """A :class:`~mtlbook.Callback` that records each task's loss on given data sets after
    every epoch, in eval mode (log-loss for binary tasks, MSE for regression).

    Args:
        data: split name → data, e.g. ``{"train": train}``; the model's schema must fit.

    After :func:`mtlbook.fit`, :attr:`frame` holds ``epoch, split, task, loss``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.book.ch12_1 import EpochLosses
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.make_correlated_tasks(400, 0.5, n_features=8, seed=0)
        >>> train, valid = data.split((0.75, 0.25), seed=0)
        >>> losses = EpochLosses({"train": train})
        >>> result = mb.fit(SharedBottom(train.schema), train, valid, epochs=2, progress=False,
        ...                 callbacks=[losses])
        >>> losses.frame[["epoch", "split", "task"]].values.tolist()  # plus a loss column
        [[1, 'train', 'task1'], [1, 'train', 'task2'], [2, 'train', 'task1'],
         [2, 'train', 'task2']]
    """

    def __init__(self, data: Mapping[str, MultiTaskData]) -> None:
        if not data:
            raise ValueError("data must name at least one data set")
        self.data = dict(data)
        self._rows: list[tuple] = []

    def on_epoch_end(self, model: MultiTaskModel, epoch: int, history: pd.DataFrame) -> None:
        for split, part in self.data.items():
            predictions = model.predict(part)
            for spec in part.schema.tasks:
                mask = part.mask(spec.name)
                if not mask.any():
                    continue
                y = part.labels[spec.name][mask].astype(np.float64)
                p = predictions[spec.name].to_numpy(np.float64)[mask]
                if spec.kind == "binary":  # as mtlbook.metrics: clip, then mean log-loss
                    p = np.clip(p, 1e-7, 1 - 1e-7)
                    loss = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
                else:
                    loss = np.mean((p - y) ** 2)
                self._rows.append((epoch, split, spec.name, float(loss)))

    @property
    def frame(self) -> pd.DataFrame:
        """The recorded losses, with columns ``epoch, split, task, loss``."""
        return pd.DataFrame(self._rows, columns=["epoch", "split", "task", "loss"])


def loss_curves(
    train: MultiTaskData,
    valid: MultiTaskData,
    models: Mapping[str, Factory | PerTask],
    seeds: Iterable[int],
    **fit_kwargs,
) -> pd.DataFrame:
    """Per-epoch training-split and validation loss of every model and seed.

    Every model is trained with :func:`mtlbook.fit` on ``train`` for every seed (the seed
    sets the initial weights and the batch order; the data stay the same), with the model
    selection of :func:`mtlbook.fit` on ``valid``. After each epoch the loss of every task is
    computed on the whole of ``train`` and of ``valid`` in eval mode. A
    :class:`~mtlbook.analysis.runs.PerTask` model is trained once per task on that task alone
    and selects its own epoch.

    Args:
        train, valid: the splits.
        models: name → ``(schema, seed) → model`` or → :class:`PerTask`.
        seeds: the seeds.
        **fit_kwargs: passed to :func:`mtlbook.fit` (``epochs``, ``lr``, ``early_stopping``,
            ...). To see overfitting, run a fixed number of epochs (no early stopping): the
            selected epoch is still the validation-best one.

    Returns:
        Tidy DataFrame ``model, seed, task, epoch, split, loss, best_epoch``: ``split`` is
        ``"train"`` or ``"valid"``; ``best_epoch`` is the epoch that run selected.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.compare import model_factory
        >>> from mtlbook.book.ch12_1 import generalisation_gap, loss_curves
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.make_correlated_tasks(400, 0.5, n_features=8, seed=0)
        >>> train, valid = data.split((0.75, 0.25), seed=0)
        >>> curves = loss_curves(train, valid, {"shared": model_factory(SharedBottom)},
        ...                      seeds=[0, 1], epochs=2)
        >>> len(curves)  # 2 seeds × 2 tasks × 2 epochs × 2 splits
        16
        >>> list(generalisation_gap(curves, epoch=2).columns)
        ['model', 'seed', 'task', 'best_epoch', 'epoch', 'train_loss', 'valid_loss', 'gap']
    """
    if not models:
        raise ValueError("models must name at least one model factory")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    fit_kwargs.setdefault("progress", False)
    frames = []
    for name, factory in models.items():
        if isinstance(factory, PerTask):
            runs = [(factory.factory, [t]) for t in train.task_names]
        else:
            runs = [(factory, list(train.task_names))]
        for make, tasks in runs:
            tr, va = (
                (train, valid)
                if len(runs) == 1
                else (train.select_tasks(tasks), valid.select_tasks(tasks))
            )
            for seed in seeds:
                record = EpochLosses({"train": tr, "valid": va})
                result = fit(
                    make(tr.schema, seed), tr, va, seed=seed, callbacks=[record], **fit_kwargs
                )
                frames.append(
                    record.frame.assign(model=name, seed=seed, best_epoch=result.best_epoch)
                )
    columns = ["model", "seed", "task", "epoch", "split", "loss", "best_epoch"]
    return pd.concat(frames, ignore_index=True)[columns]


def generalisation_gap(curves: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """Training loss, validation loss and their gap at each run's selected epoch (or at a
    given epoch for every run).

    Runs that select different epochs are compared at different points of training; pass
    ``epoch`` to compare every run at the same epoch as well.

    Args:
        curves: the output of :func:`loss_curves`.
        epoch: ``None`` (default): each run's selected epoch; an integer: that epoch.

    Returns:
        One row per ``model, seed, task``: ``best_epoch, epoch, train_loss, valid_loss, gap``
        (``valid_loss − train_loss``; larger means more overfitting).
    """
    missing = {"model", "seed", "task", "epoch", "split", "loss", "best_epoch"} - set(curves)
    if missing:
        raise ValueError(f"curves lacks columns {sorted(missing)}; pass the output of loss_curves")
    if epoch is None:
        chosen = curves[curves["epoch"] == curves["best_epoch"]]
    else:
        if epoch not in set(curves["epoch"]):
            raise ValueError(
                f"epoch {epoch!r} is not in the curves; they have epochs "
                f"{sorted(set(curves['epoch']))}"
            )
        chosen = curves[curves["epoch"] == epoch]
    table = chosen.pivot_table(
        index=["model", "seed", "task", "best_epoch", "epoch"], columns="split", values="loss"
    ).reset_index()
    table.columns.name = None
    table = table.rename(columns={"train": "train_loss", "valid": "valid_loss"})
    table["gap"] = table["valid_loss"] - table["train_loss"]
    return table


def plot_loss_curves(curves: pd.DataFrame, names: Mapping[str, str] | None = None) -> plt.Figure:
    """Top row: training-split (dashed) and validation (solid) loss per epoch, one panel per
    task, one colour per model (mean over seeds, band from the lowest to the highest seed),
    with a marker at the median selected epoch. Bottom row: the gap, validation minus
    training loss, per epoch (mean over seeds and its band).

    The first epoch's losses, still near those of the untrained model, are left out of the
    top row's y-range so that the later epochs can be told apart. ``curves`` is the output of
    :func:`loss_curves`. The labels are in Chinese, as the book shows them; model and task
    names go through :func:`mtlbook.book.page.zh`, with ``names`` taking precedence.
    """
    missing = {"model", "seed", "task", "epoch", "split", "loss", "best_epoch"} - set(curves)
    if missing:
        raise ValueError(f"curves lacks columns {sorted(missing)}; pass the output of loss_curves")
    tasks = list(dict.fromkeys(curves["task"]))
    models = list(dict.fromkeys(curves["model"]))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models)), strict=True))
    wide = curves.pivot_table(
        index=["model", "seed", "task", "epoch", "best_epoch"], columns="split", values="loss"
    ).reset_index()
    wide["gap"] = wide["valid"] - wide["train"]
    fig, axes = plt.subplots(
        2, len(tasks), figsize=(4.8 * len(tasks), 6.2), squeeze=False, sharex=True
    )
    for col, task in enumerate(tasks):
        top, bottom = axes[0][col], axes[1][col]
        shown = []
        for model in models:
            rows = wide[(wide["task"] == task) & (wide["model"] == model)]
            if rows.empty:
                continue
            best = int(np.median(rows.drop_duplicates("seed")["best_epoch"]))
            for column, style, ax in (
                ("train", "--", top),
                ("valid", "-", top),
                ("gap", "-", bottom),
            ):
                s = rows.groupby("epoch")[column].agg(["mean", "min", "max"])
                label = zh(model, names)
                if column != "gap":
                    label += f"（{zh(column)}）"  # （训练集） / （验证集）
                ax.plot(s.index, s["mean"], style, color=palette[model], label=label)
                ax.fill_between(s.index, s["min"], s["max"], color=palette[model], alpha=0.15)
                if column != "train" and best in s.index:
                    ax.plot(
                        [best],
                        [s.loc[best, "mean"]],
                        "o",
                        color=palette[model],
                        markersize=8,
                        markerfacecolor="white",
                        markeredgewidth=2,
                    )
                if column != "gap":
                    later = s[s.index > s.index.min()] if len(s) > 2 else s
                    shown += [later["min"].min(), later["max"].max()]
        if shown:
            low, high = min(shown), max(shown)
            top.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        top.set(title=zh(task, names), ylabel="损失")
        bottom.axhline(0.0, color="grey", linewidth=1)
        bottom.set(xlabel="轮次", ylabel="差距（验证 − 训练）")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8, title="空心圆 = 选中的轮次", title_fontsize=8)
    fig.tight_layout()
    return fig


#: ``data → models``: the models that together serve every task of ``data``.
Setup = Callable[[MultiTaskData], Sequence[MultiTaskModel]]


def separate_models(factory: Callable[[Schema], MultiTaskModel]) -> Setup:
    """A setup that serves each task with its own model ``factory(schema_of_that_task)``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.book.ch12_1 import separate_models
        >>> from mtlbook.models import SingleTask
        >>> data = mb.simulate_funnel(2_000, seed=0, with_dwell_time=True)
        >>> [m.task_names for m in separate_models(SingleTask)(data)]  # one model per task
        [('click',), ('purchase',), ('dwell_time',)]
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable (schema → model), got {factory!r}")

    def build(data: MultiTaskData) -> list[MultiTaskModel]:
        return [factory(data.select_tasks([task]).schema) for task in data.task_names]

    return build


def one_model(factory: Callable[[Schema], MultiTaskModel]) -> Setup:
    """A setup that serves every task with one model ``factory(data.schema)``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.book.ch12_1 import one_model
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.simulate_funnel(2_000, seed=0, with_dwell_time=True)
        >>> [m.task_names for m in one_model(SharedBottom)(data)]  # one model for all tasks
        [('click', 'purchase', 'dwell_time')]
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable (schema → model), got {factory!r}")

    def build(data: MultiTaskData) -> list[MultiTaskModel]:
        return [factory(data.schema)]

    return build


def serving_cost(
    data: MultiTaskData,
    setups: Mapping[str, Setup],
    *,
    task_counts: Sequence[int] | None = None,
    baseline: str | None = None,
    batch_size: int = 4096,
    repeats: int = 7,
    warmup: int = 2,
) -> pd.DataFrame:
    """Parameters and inference latency of several serving setups, for 1..N tasks.

    For each ``n`` in ``task_counts`` the first ``n`` tasks of ``data`` are kept and every
    setup builds the models that serve them; their parameters are counted and their latency on
    one batch measured with :func:`inference_latency`. The models are freshly initialised
    (latency and size do not depend on training).

    Args:
        data: the data whose schema the models are built for; its first rows are the batch.
        setups: name → ``data → models``, e.g. ``{"separate": separate_models(SingleTask),
            "shared": one_model(SharedBottom)}``.
        task_counts: numbers of tasks to try (default: every count from 1 to all tasks).
        baseline: a setup name; adds ``parameter_ratio`` and ``latency_ratio`` columns
            (setup / baseline at the same task count).
        batch_size, repeats, warmup: as in :func:`inference_latency`.

    Returns:
        pandas.DataFrame:
        One row per task count and setup: ``n_tasks, setup, n_models, parameters, embedding,
        dense, latency_ms`` (median per batch), ``latency_min_ms``, ``latency_max_ms`` and,
        with ``baseline``, the two ratios.
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    if not setups:
        raise ValueError("setups must name at least one serving setup")
    if baseline is not None and baseline not in setups:
        raise ValueError(f"baseline {baseline!r} is not one of the setups {list(setups)}")
    n_all = len(data.task_names)
    counts = list(range(1, n_all + 1)) if task_counts is None else list(task_counts)
    bad = [n for n in counts if not isinstance(n, int | np.integer) or not 1 <= n <= n_all]
    if bad or not counts:
        raise ValueError(
            f"task_counts must be integers in 1..{n_all} (the data have tasks "
            f"{list(data.task_names)}), got {task_counts!r}"
        )
    rows = []
    for n in counts:
        part = data.select_tasks(list(data.task_names[:n]))
        groups = []
        for name, setup in setups.items():
            models = list(setup(part))
            served = sorted({t for m in models for t in m.task_names})
            if served != sorted(part.task_names):
                raise ValueError(
                    f"setup {name!r} serves tasks {served} for data with tasks "
                    f"{sorted(part.task_names)}"
                )
            groups.append(models)
        latencies = _interleaved_latency(groups, part, batch_size, repeats, warmup)
        for (name, models), latency in zip(
            zip(setups, groups, strict=True), latencies, strict=True
        ):
            count = count_parameters(models, by_part=True)
            rows.append(
                {
                    "n_tasks": n,
                    "setup": name,
                    "n_models": len(models),
                    "parameters": count["total"],
                    "embedding": count["embedding"],
                    "dense": count["dense"],
                    "latency_ms": 1e3 * latency["median"],
                    "latency_min_ms": 1e3 * latency["min"],
                    "latency_max_ms": 1e3 * latency["max"],
                }
            )
    table = pd.DataFrame(rows)
    if baseline is not None:
        base = table[table["setup"] == baseline].set_index("n_tasks")
        table["parameter_ratio"] = table["parameters"] / table["n_tasks"].map(base["parameters"])
        table["latency_ratio"] = table["latency_ms"] / table["n_tasks"].map(base["latency_ms"])
    return table
