"""Architecture selection as a leaderboard: choose on validation, test the winner once.

Chapter 12.4.2 of the book treats "which MTL architecture?" as a model-selection problem with a
protocol fixed in advance:

1. train every candidate (single-task baseline, Shared-Bottom, MMoE, CGC, PLE, ...) on several
   seeds with :func:`~mtlbook.analysis.compare.compare` and score it on the **validation** split
   (``split="valid"``);
2. rank the candidates by one pre-declared score (:func:`leaderboard`: the mean over tasks of
   each task's headline validation metric, AUC or −MSE, optionally weighted) and take the top
   one;
3. train the chosen model and the baseline again on the same seeds (same data, splits,
   initial weights and batch order, so the same fits) and report them on the **test** split,
   once (:func:`select_and_test`).

The leaderboard also lists each candidate's parameter count and training time, the other two
things one weighs when choosing. :func:`plot_selection` draws a selection with Chinese labels
(model names through :data:`MODEL_NAMES`, task names through :func:`mtlbook.book.page.zh`).

Example:
    >>> sel = select_and_test(["single", "shared_bottom", "mmoe"], "correlated:0.5", seeds=3,
    ...                       n_samples=600, epochs=3)
    >>> sel.chosen in ("single", "shared_bottom", "mmoe")
    True
    >>> board = sel.board  # ranked on validation; sel.test holds the test run of the winner
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.compare import (
    CompareResult,
    _primary_metrics,
    _seed_list,
    compare,
    resolve_data,
    resolve_models,
)
from ..analysis.intervals import mean_interval
from ..analysis.runs import ModelSpec, PerTask
from ..data import MultiTaskData, Schema
from ..metrics import LOWER_IS_BETTER
from .page import zh

__all__ = [
    "MODEL_NAMES",
    "Selection",
    "leaderboard",
    "parameter_counts",
    "plot_selection",
    "select_and_test",
    "train_seconds_per_seed",
]

#: The names the chapter's figures and tables give the candidates (keys as passed to
#: :func:`select_and_test`); a name not listed is shown as it is.
MODEL_NAMES: dict[str, str] = {
    "single": "单任务基线",
    "shared_bottom": "Shared-Bottom",
    "mmoe": "MMoE",
    "omoe": "OMoE",
    "cgc": "CGC",
    "ple": "PLE",
    "cross_stitch": "Cross-Stitch",
}


def _name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def parameter_counts(
    models: Mapping[str, ModelSpec | str] | Iterable[str] | str, schema: Schema
) -> pd.Series:
    """Trainable parameters of every model built for ``schema`` (name → count).

    A :class:`~mtlbook.analysis.runs.PerTask` baseline counts all its per-task models together.
    """
    if not isinstance(schema, Schema):
        raise TypeError(f"schema must be a Schema (data.schema), got {type(schema).__name__}")
    counts = {}
    for name, spec in resolve_models(models).items():
        if isinstance(spec, PerTask):
            parts = [spec.factory(_task_schema(schema, t), 0) for t in schema.task_names]
        else:
            parts = [spec(schema, 0)]
        counts[name] = sum(m.n_parameters() for m in parts)
    return pd.Series(counts, name="parameters")


def _task_schema(schema: Schema, task: str) -> Schema:
    """The schema with one task kept (the features unchanged)."""
    return replace(schema, tasks=(schema.task(task),))


def train_seconds_per_seed(
    result: CompareResult, models: Mapping[str, ModelSpec | str] | Iterable[str] | str | None = None
) -> pd.Series:
    """Mean training time per seed of every model (name → seconds), validation included.

    A :class:`~mtlbook.analysis.runs.PerTask` baseline trains one model per task, so its time is
    the sum over its tasks. When the seeds trained together as one vectorised population (the
    default of :func:`~mtlbook.analysis.compare.compare`), each seed's time is the population's time
    divided by the number of seeds.

    Args:
        result: a :class:`~mtlbook.analysis.compare.CompareResult`.
        models: the models it was run with (names or a mapping), to tell which ones are
            per-task baselines; ``None`` treats the model named ``"single"`` as one.
    """
    per_task = (
        {"single"}
        if models is None
        else {n for n, s in resolve_models(models).items() if isinstance(s, PerTask)}
    )
    fits = result.raw.drop_duplicates(["model", "weighting", "seed", "task"])
    out = {}
    for model, rows in fits.groupby("model", sort=False):
        per_seed = rows.groupby(["weighting", "seed"])["train_seconds"]
        out[model] = float((per_seed.sum() if model in per_task else per_seed.first()).mean())
    return pd.Series(out, name="train_seconds")


def _score(result: CompareResult, weights: Mapping[str, float] | None) -> pd.DataFrame:
    """Per model and seed: the weighted mean over tasks of the headline metric (AUC, −MSE)."""
    raw = result.raw
    primary = _primary_metrics(raw)
    rows = pd.concat([raw[(raw["task"] == t) & (raw["metric"] == m)] for t, m in primary.items()])
    sign = np.where(rows["metric"].isin(LOWER_IS_BETTER), -1.0, 1.0)
    tasks = list(primary)
    if weights is None:
        weights = dict.fromkeys(tasks, 1.0)
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        raise ValueError(f"weights name unknown task(s) {unknown}; tasks are {tasks}")
    w = rows["task"].map(lambda t: float(weights.get(t, 0.0))).to_numpy()
    if w.sum() <= 0:
        raise ValueError(f"weights must give a positive weight to some task, got {weights}")
    rows = rows.assign(signed=sign * rows["value"].to_numpy() * w, w=w)
    per_seed = rows.groupby(["model", "weighting", "seed"], sort=False)[["signed", "w"]].sum()
    return (per_seed["signed"] / per_seed["w"]).rename("score").reset_index()


def leaderboard(
    result: CompareResult,
    *,
    baseline: str | None = "single",
    weights: Mapping[str, float] | None = None,
    schema: Schema | None = None,
    models: Mapping[str, ModelSpec | str] | Iterable[str] | str | None = None,
    digits: int = 4,
) -> pd.DataFrame:
    """Rank the models of a :func:`~mtlbook.analysis.compare.compare` run by one score.

    The score of a model on one seed is the weighted mean over tasks of each task's headline
    metric (AUC for a binary task, −MSE for a regression task; ``weights`` default to equal);
    the leaderboard sorts by its mean over seeds. Run ``compare(..., split="valid")`` to choose
    on the validation split, as :func:`select_and_test` does.

    Args:
        result: the comparison (one weighting).
        baseline: a model name; adds the paired gain (%) of every model over it, per task.
        weights: task → weight of the score.
        schema, models: give both to add a ``parameters`` column (the models as passed to
            ``compare``); ``models`` also tells :func:`train_seconds_per_seed` which models
            are per-task baselines.
        digits: significant digits of the formatted columns.

    Returns:
        One row per model (index ``model``), best first: ``rank``; one ``"<task> <metric>"``
        column per task (mean [95% interval] over seeds); ``score`` (mean) with ``score_lo``
        and ``score_hi``; with ``baseline``, ``"gain <task> %"`` columns; ``parameters`` (when
        ``schema`` and ``models`` are given) and ``train_s_per_seed``.
    """
    if not isinstance(result, CompareResult):
        raise TypeError(f"result must be a CompareResult, got {type(result).__name__}")
    if result.raw["weighting"].nunique() > 1:
        raise ValueError(
            "the result mixes several weightings; rank one weighting at a time (filter result.raw)"
        )
    score = mean_interval(_score(result, weights), ["model"], value="score")
    board = score.set_index("model")[["mean", "lo", "hi"]].set_axis(
        ["score", "score_lo", "score_hi"], axis=1
    )
    table = result.table()
    primary = _primary_metrics(result.raw)
    for task, metric in primary.items():
        rows = table[(table["task"] == task) & (table["metric"] == metric)].set_index("model")
        board[f"{task} {metric}"] = rows["formatted"]
    if baseline is not None:
        if baseline not in board.index:
            raise ValueError(f"baseline {baseline!r} is not among the models {list(board.index)}")
        gains = result.gains(baseline)
        for task, metric in primary.items():
            rows = gains[(gains["task"] == task) & (gains["metric"] == metric)].set_index("model")
            board[f"gain {task} %"] = rows["formatted"].reindex(board.index).fillna("—")
    if (schema is None) != (models is None):
        raise ValueError(
            "give schema and models together (both are needed to count parameters), or neither"
        )
    if schema is not None:
        assert models is not None  # given together (checked above)
        board["parameters"] = parameter_counts(models, schema).reindex(board.index)
    board["train_s_per_seed"] = train_seconds_per_seed(result, models).reindex(board.index)
    board = board.sort_values("score", ascending=False, kind="stable")
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    return board


@dataclass
class Selection:
    """What :func:`select_and_test` returns.

    Attributes:
        valid: the comparison of every candidate on the validation split.
        board: its :func:`leaderboard` (best first).
        chosen: the name of the top model.
        test: the chosen model (and the baseline) on the test split, same seeds.
        reproduced: whether the test run's fits stopped at the same epochs as the validation
            run's (they are the same fits, so they should).
    """

    valid: CompareResult
    board: pd.DataFrame
    chosen: str
    test: CompareResult
    reproduced: bool


def select_and_test(
    models: Mapping[str, ModelSpec | str] | Iterable[str] | str,
    data: MultiTaskData | Callable[[int], MultiTaskData] | str,
    *,
    seeds: int | Iterable[int] = 5,
    baseline: str | None = "single",
    weights: Mapping[str, float] | None = None,
    n_samples: int | None = None,
    **compare_kwargs: Any,
) -> Selection:
    """Choose an architecture on the validation split, then report it once on the test split.

    Step 1 runs :func:`~mtlbook.analysis.compare.compare` on every model with ``split="valid"`` and
    ranks them with :func:`leaderboard`; step 2 runs ``compare`` again on the top model and the
    ``baseline`` only, with ``split="test"``. Every seed draws the same data, split, initial
    weights and batch order in both steps, so step 2 retrains the same fits and only the split
    they are scored on changes: the test split is used for nothing but the final report.

    Args:
        models: the candidates, as in :func:`~mtlbook.analysis.compare.compare`; must include
            ``baseline`` when one is given.
        data: data, a ``seed → data`` function or a name, as in ``compare``.
        seeds: the number of seeds or the seeds.
        baseline: the reference model (default: separate single-task models).
        weights: task weights of the selection score (default equal).
        n_samples: size of named data.
        **compare_kwargs: passed to both ``compare`` calls (``fractions``, ``metrics``,
            ``epochs``, ``lr``, ...); ``split`` is set by this function.

    Raises:
        ValueError: if ``split`` is passed, or ``baseline`` is not among the models.
    """
    if "split" in compare_kwargs:
        raise ValueError(
            "select_and_test sets the split itself (valid to choose, test to "
            "report); do not pass split="
        )
    resolved = resolve_models(models)
    if baseline is not None and baseline not in resolved:
        raise ValueError(f"baseline {baseline!r} must be one of the models {list(resolved)}")
    valid = compare(
        resolved, data, seeds=seeds, n_samples=n_samples, split="valid", **compare_kwargs
    )
    schema = data.schema if isinstance(data, MultiTaskData) else _schema_of(data, n_samples, seeds)
    board = leaderboard(valid, baseline=baseline, weights=weights, schema=schema, models=resolved)
    chosen = str(board.index[0])
    final = {chosen: resolved[chosen]}
    if baseline is not None and baseline != chosen:
        final[baseline] = resolved[baseline]
    test = compare(final, data, seeds=seeds, n_samples=n_samples, split="test", **compare_kwargs)
    keys = ["model", "seed", "task"]
    epochs_valid = valid.raw.drop_duplicates(keys).set_index(keys)["best_epoch"]
    epochs_test = test.raw.drop_duplicates(keys).set_index(keys)["best_epoch"]
    reproduced = bool((epochs_valid.reindex(epochs_test.index) == epochs_test).all())
    return Selection(valid=valid, board=board, chosen=chosen, test=test, reproduced=reproduced)


def _schema_of(data, n_samples, seeds) -> Schema:
    """The schema of the data a seed draws (the first seed's)."""
    return resolve_data(data, n_samples)(_seed_list(seeds)[0]).schema


def plot_selection(selection: Selection, baseline: str = "single"):
    """Draw a :class:`Selection`: the validation leaderboard and the winner's two reports.

    Labels in Chinese. Left: every model's validation score (mean over seeds with its 95%
    interval), best on top, the chosen one in colour. Right: the chosen model's paired gain (%)
    over ``baseline`` for each task, as measured on the validation split (where it was chosen)
    and on the test split (reported once); the gap between them is the optimism of choosing
    the best of several noisy scores.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not isinstance(selection, Selection):
        raise TypeError(f"expected a Selection, got {type(selection).__name__}")
    board = selection.board.iloc[::-1]  # best on top of a horizontal plot
    colors = sns.color_palette("colorblind", 2)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6))
    ax = axes[0]
    y = np.arange(len(board))
    chosen = board.index == selection.chosen
    err = np.vstack([board["score"] - board["score_lo"], board["score_hi"] - board["score"]])
    for mask, color, label in ((~chosen, "#777777", "候选"), (chosen, colors[0], "选中")):
        ax.errorbar(
            board["score"][mask],
            y[mask],
            xerr=err[:, mask],
            fmt="o",
            color=color,
            capsize=3,
            label=label,
        )
    ax.set_yticks(y, [_name(m) for m in board.index])
    ax.set(xlabel="验证集得分（各任务平均），95% 区间", title="排行榜（验证集）")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    ax = axes[1]
    if selection.chosen == baseline or baseline not in set(selection.test.raw["model"]):
        ax.text(
            0.5,
            0.5,
            f"选中的就是基线 {_name(baseline)}：\n没有增益可报告",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
    else:
        primary = _primary_metrics(selection.test.raw)
        rows = []
        for split, result in (("valid", selection.valid), ("test", selection.test)):
            gains = result.gains(baseline)
            gains = gains[gains["model"] == selection.chosen]
            for task, metric in primary.items():
                g = gains[(gains["task"] == task) & (gains["metric"] == metric)].iloc[0]
                rows.append(
                    {"split": split, "task": task, "mean": g["mean"], "lo": g["lo"], "hi": g["hi"]}
                )
        frame = pd.DataFrame(rows)
        tasks = list(primary)
        splits = {"valid": "验证集", "test": "测试集"}
        for k, (split, color) in enumerate(zip(splits, colors, strict=True)):
            part = frame[frame["split"] == split].set_index("task").loc[tasks]
            x = np.arange(len(tasks)) + (k - 0.5) * 0.25
            ax.errorbar(
                x,
                part["mean"],
                yerr=[part["mean"] - part["lo"], part["hi"] - part["mean"]],
                fmt="o",
                color=color,
                capsize=3,
                label=splits[split],
            )
        ax.axhline(0.0, color="#333333", linewidth=0.8)
        ax.set_xticks(np.arange(len(tasks)), [f"{zh(t)}（{zh(primary[t])}）" for t in tasks])
        ax.set(
            ylabel="配对增益 (%)，95% 区间",
            title=f"选中的 {_name(selection.chosen)} 相对{_name(baseline)}：验证集与测试集",
        )
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
