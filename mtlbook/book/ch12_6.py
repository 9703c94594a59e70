"""A leaderboard over several data sets: architectures × data × loss weightings, with intervals.

Chapter 12.6 of the book closes with one table: every architecture on every data set under
the main loss weightings, each cell the mean over seeds with a Student-t interval, the paired
gain over the single-task baseline, and which configurations are best per data set. This module
builds that table from :func:`mtlbook.analysis.compare.compare` runs:

* a :class:`Study` says what to run on one data set: the models, the weightings (optionally
  only for some models: adaptive strategies train seed by seed and cost more), the metrics and
  the training settings;
* :func:`run_leaderboard` runs every study with :func:`~mtlbook.analysis.compare.compare` (the seeds
  of each equal- or fixed-weight configuration train as one vectorised population) and returns a
  :class:`Leaderboard`;
* :meth:`Leaderboard.table`, :meth:`Leaderboard.gains` and :meth:`Leaderboard.best` tabulate it;
  :func:`plot_gain_heatmap` draws the gains.

"Best" is decided with paired intervals: a configuration ties with the one of highest mean when
the interval of their per-seed difference contains 0. The single-task baseline trains one
model per task, so no loss weighting applies to it: it is trained once per seed and its rows
are reported under every weighting of the study.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..analysis._common import tidy_layout
from ..analysis.compare import (
    CompareResult,
    MetricSelection,
    _primary_metrics,
    _select_metrics,
    compare,
)
from ..analysis.intervals import mean_interval
from ..analysis.runs import ModelSpec, PerTask
from ..data import MultiTaskData, Schema
from ..metrics import LOWER_IS_BETTER
from ..models import CGC, ESMM, PLE, CrossStitch, MMoE, SharedBottom, SingleTask
from ..utils import count_parameters, match_width
from ..weighting import Weighting
from .page import zh

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure, SubFigure

__all__ = [
    "WEIGHTING_NAMES",
    "Leaderboard",
    "Study",
    "matched_models",
    "plot_gain_heatmap",
    "run_leaderboard",
]

WeightingSpec = str | Callable[[], Weighting]


@dataclass
class Study:
    """What to run on one data set.

    Attributes:
        data: a data name (``"correlated:0.9"``), a ``seed → MultiTaskData`` function or a
            data set, as in :func:`~mtlbook.analysis.compare.compare`.
        models: name → model factory, :class:`~mtlbook.analysis.runs.PerTask` or model name.
            Must contain the leaderboard's baseline (default ``"single"``).
        weightings: weighting name → a strategy name of
            :func:`~mtlbook.weighting.standard_strategies` or a ``() → Weighting`` factory;
            ``None`` means equal weights only (named ``"equal"``).
        only: weighting name → the models trained under it (default: every model). Use it to
            keep the seed-by-seed adaptive strategies to a few models.
        metrics: the metrics kept (see :func:`~mtlbook.analysis.compare.compare`); default each
        task's
            headline metric (AUC for binary tasks, MSE for regression tasks).
        settings: keyword arguments for :func:`~mtlbook.analysis.compare.compare` and on to
            :func:`mtlbook.fit` (``epochs``, ``lr``, ``fractions``, ``transform_train``,
            ``n_samples``, ...).
    """

    data: str | Callable[[int], MultiTaskData] | MultiTaskData
    models: Mapping[str, ModelSpec | str]
    weightings: Mapping[str, WeightingSpec] | None = None
    only: Mapping[str, Sequence[str]] = field(default_factory=dict)
    metrics: MetricSelection = None
    settings: Mapping[str, Any] = field(default_factory=dict)


def matched_models(
    schema: Schema, *, units: int = 16, tower: int = 8, esmm: bool = False
) -> tuple[dict[str, ModelSpec], pd.DataFrame]:
    """The leaderboard's line-up at (about) one size: the dense parameters of CGC.

    The reference is CGC with one expert per task and one shared expert of ``units`` units and
    task towers of ``tower`` units. MMoE gets as many experts of the same width (the same size
    up to its gates); the widths of the Shared-Bottom bottom, of PLE's experts (two levels of
    CGC's layout), of Cross-Stitch's two layers, of ESMM's towers ``(w, tower)`` and of the
    first layer of the single-task networks ``(w, tower)`` are chosen by
    :func:`~mtlbook.utils.match_width` so that each model's **dense** parameters (outside the
    embedding tables, which the single-task models hold once per task) are closest to CGC's.

    Args:
        schema: the data schema (at least two tasks; ``esmm`` needs a funnel).
        units: CGC's expert width.
        tower: the width of every task tower (and of the single-task networks' second layer).
        esmm: add ESMM (funnel data only).

    Returns:
        ``(models, sizes)``: name → factory (``"SingleTask"`` is a
        :class:`~mtlbook.analysis.runs.PerTask`), and a table ``model, setting,
        dense_parameters, parameters``; ``setting`` describes the layout in Chinese, as the
        book's tables show it (e.g. ``"底层 47 个单元"``: a bottom of 47 units).

    Example:
        >>> import mtlbook as mb
        >>> data = mb.make_correlated_tasks(200, 0.5, n_features=20)
        >>> models, sizes = matched_models(data.schema)
        >>> list(models)
        ['SingleTask', 'SharedBottom', 'MMoE', 'CGC', 'PLE', 'CrossStitch']
    """
    if len(schema.tasks) < 2:
        raise ValueError(f"a line-up needs at least two tasks, the schema has {len(schema.tasks)}")
    towers = (int(tower),)
    n_experts = len(schema.tasks) + 1
    # name -> (schema, width, seed) -> model; CGC and MMoE have the fixed width ``units``
    builders: dict[str, Callable[[Schema, int, int], Any]] = {
        "SingleTask": lambda sc, w, seed: SingleTask(sc, hidden_units=(w, tower), seed=seed),
        "SharedBottom": lambda sc, w, seed: SharedBottom(
            sc, bottom_units=(w,), tower_units=towers, seed=seed
        ),
        "MMoE": lambda sc, w, seed: MMoE(
            sc, n_experts=n_experts, expert_units=(w,), tower_units=towers, seed=seed
        ),
        "CGC": lambda sc, w, seed: CGC(
            sc,
            n_task_experts=1,
            n_shared_experts=1,
            expert_units=(w,),
            tower_units=towers,
            seed=seed,
        ),
        "PLE": lambda sc, w, seed: PLE(
            sc,
            n_levels=2,
            n_task_experts=1,
            n_shared_experts=1,
            expert_units=(w,),
            tower_units=towers,
            seed=seed,
        ),
        "CrossStitch": lambda sc, w, seed: CrossStitch(
            sc, hidden_units=(w, w), alpha_lr_scale=10, seed=seed
        ),
    }
    if esmm:
        builders["ESMM"] = lambda sc, w, seed: ESMM(sc, tower_units=(w, tower), seed=seed)
    target = count_parameters(builders["CGC"](schema, units, 0), by_part=True)["dense"]
    width = {
        name: units
        if name in ("CGC", "MMoE")
        else match_width(lambda w, b=build: b(schema, w, 0), target, part="dense")
        for name, build in builders.items()
    }
    # The layouts as the book's tables show them (in Chinese); the numbers are in the order
    # the docstring gives them: widths first, the tower width last.
    layout = {
        "SingleTask": f"每个任务一个 ({width['SingleTask']}, {tower}) 网络",
        "SharedBottom": f"底层 {width['SharedBottom']} 个单元",
        "MMoE": f"{n_experts} 个专家 × {units} 个单元",
        "CGC": f"每任务 1 个 + 共享 1 个专家 × {units} 个单元",
        "PLE": f"2 层 ×（每任务 1 个 + 共享 1 个专家）× {width['PLE']} 个单元",
        "CrossStitch": f"2 层 × 每任务 {width['CrossStitch']} 个单元",
        "ESMM": f"两个塔，各 ({width.get('ESMM')}, {tower})",
    }
    models: dict[str, ModelSpec] = {}
    for name, build in builders.items():

        def make(sc: Schema, seed: int, b=build, w=width[name]) -> Any:
            return b(sc, w, seed)

        models[name] = PerTask(make) if name == "SingleTask" else make
    rows = []
    for name, spec in models.items():
        model = (spec.factory if isinstance(spec, PerTask) else spec)(schema, 0)
        parts = count_parameters(model, by_part=True)
        rows.append(
            {
                "model": name,
                "setting": layout[name],
                "dense_parameters": parts["dense"],
                "parameters": parts["total"],
            }
        )
    return models, pd.DataFrame(rows)


def _weighting_groups(
    study: Study, name: str, baseline: str
) -> list[tuple[str, WeightingSpec | None, list[str]]]:
    """``(weighting name, strategy, models)`` per weighting, checked against the study."""
    models = list(study.models)
    if baseline not in models:
        raise ValueError(
            f"study {name!r} has no baseline model {baseline!r}; its models are {models}"
        )
    weightings = dict(study.weightings) if study.weightings else {"equal": None}
    unknown = sorted(set(study.only) - set(weightings))
    if unknown:
        raise ValueError(
            f"study {name!r}: 'only' names weighting(s) {unknown} that are not in "
            f"its weightings {list(weightings)}"
        )
    groups = []
    for label, strategy in weightings.items():
        chosen = list(study.only.get(label, models))
        missing = sorted(set(chosen) - set(models))
        if missing:
            raise ValueError(
                f"study {name!r}: 'only[{label!r}]' names model(s) {missing} that "
                f"are not in its models {models}"
            )
        groups.append((label, strategy, [m for m in chosen if m != baseline]))
    return groups


def run_leaderboard(
    studies: Mapping[str, Study],
    *,
    seeds: int | Sequence[int] = 5,
    baseline: str = "single",
    confidence: float = 0.95,
    progress: bool = False,
) -> Leaderboard:
    """Run every study with :func:`~mtlbook.analysis.compare.compare` and collect a
    :class:`Leaderboard`.

    Per study, the baseline and the models of the first weighting train in one ``compare``
    call; every further weighting trains its models in another call on the same seeds (the data
    and splits are drawn from the seed, so all runs stay paired), and the baseline's rows are
    reused for it.

    Args:
        studies: data-set label → :class:`Study`.
        seeds: the number of seeds or the seeds, the same for every study.
        baseline: the model every gain is measured against (a model name in every study).
        confidence: level of the Student-t intervals.
        progress: show a progress bar over the fits.

    Example:
        >>> from mtlbook.book.ch12_6 import Study, run_leaderboard
        >>> study = Study("correlated:0.5", {"single": "single", "mmoe": "mmoe"},
        ...               settings=dict(n_samples=400, epochs=2))
        >>> board = run_leaderboard({"p=0.5": study}, seeds=3)
        >>> board.gains()[["dataset", "model", "task"]].values.tolist()
        [['p=0.5', 'mmoe', 'task1'], ['p=0.5', 'mmoe', 'task2']]
    """
    if not studies:
        raise ValueError("give at least one study: {'label': Study(data, models)}")
    results: dict[str, CompareResult] = {}
    for name, study in studies.items():
        if not isinstance(study, Study):
            raise TypeError(f"study {name!r} must be a Study, got {type(study).__name__}")
        groups = _weighting_groups(study, name, baseline)
        frames, base_rows = [], None
        for label, strategy, models in groups:
            chosen = {m: study.models[m] for m in models}
            if base_rows is None:
                chosen = {baseline: study.models[baseline], **chosen}
            weightings = None if strategy is None else {label: _factory(strategy)}
            result = compare(
                chosen,
                study.data,
                weightings=weightings,
                seeds=seeds,
                metrics=study.metrics,
                confidence=confidence,
                progress=progress,
                **dict(study.settings),
            )
            raw = result.raw.assign(weighting=label)
            if base_rows is None:
                base_rows = raw[raw["model"] == baseline]
            else:
                raw = pd.concat([base_rows.assign(weighting=label), raw], ignore_index=True)
            frames.append(raw)
        results[name] = CompareResult(
            raw=pd.concat(frames, ignore_index=True), confidence=confidence, metrics=study.metrics
        )
    return Leaderboard(results=results, baseline=baseline, confidence=confidence)


def _factory(strategy: WeightingSpec) -> Callable[[], Weighting]:
    if isinstance(strategy, str):
        from ..analysis.compare import resolve_weightings

        return next(iter(resolve_weightings([strategy]).values()))
    if isinstance(strategy, Weighting) or not callable(strategy):
        raise TypeError(
            "a weighting must be a strategy name or a () → Weighting factory "
            f"(strategies keep state), got {strategy!r}"
        )
    return strategy


@dataclass
class Leaderboard:
    """What :func:`run_leaderboard` returns: one :class:`~mtlbook.analysis.compare.CompareResult`
    per data set, and tables across them.

    Attributes:
        results: data-set label → its CompareResult (every seed and metric in ``raw``).
        baseline: the model gains are measured against.
        confidence: the level of every interval.
    """

    results: dict[str, CompareResult]
    baseline: str = "single"
    confidence: float = 0.95

    @property
    def raw(self) -> pd.DataFrame:
        """Every run of every data set, with a ``dataset`` column first."""
        return pd.concat(
            [r.raw.assign(dataset=name) for name, r in self.results.items()], ignore_index=True
        )[["dataset", *self._raw_columns()]]

    def _raw_columns(self) -> list[str]:
        return list(next(iter(self.results.values())).raw.columns)

    def _metrics(self, result: CompareResult) -> MetricSelection:
        """The study's metric choice, or each task's headline metric (AUC / MSE)."""
        return result.metrics if result.metrics is not None else _primary_metrics(result.raw)

    def _kept(self) -> pd.DataFrame:
        """The rows of each data set's chosen metrics, with a ``configuration`` label
        ``"model (weighting)"``; the baseline's repeated rows are kept once, labelled by its
        name alone."""
        frames = [
            _select_metrics(r.raw, self._metrics(r)).assign(dataset=name)
            for name, r in self.results.items()
        ]
        rows = pd.concat(frames, ignore_index=True)
        is_base = rows["model"] == self.baseline
        base = rows[is_base].drop_duplicates(["dataset", "seed", "task", "metric"])
        rows = pd.concat(
            [
                base.assign(configuration=self.baseline),
                rows[~is_base].assign(configuration=rows["model"] + " (" + rows["weighting"] + ")"),
            ],
            ignore_index=True,
        )
        return rows

    def table(self, *, wide: bool = False, digits: int = 3) -> pd.DataFrame:
        """Mean and interval per data set × configuration × task (headline metrics unless the
        study chose others). ``wide``: rows ``(model, weighting)``, columns
        ``(dataset, task, metric)``, cells ``"mean [lo, hi]"``."""
        frames = []
        for name, result in self.results.items():
            table = CompareResult(
                raw=result.raw, confidence=self.confidence, metrics=self._metrics(result)
            ).table(digits=digits)
            frames.append(table.assign(dataset=name))
        out = pd.concat(frames, ignore_index=True)
        out = out[["dataset", *[c for c in out.columns if c != "dataset"]]]
        return _widen(out, "formatted") if wide else out

    def gains(self, *, wide: bool = False, digits: int = 3) -> pd.DataFrame:
        """Paired relative gain (%) over the baseline, positive = better (for AUC and MSE
        alike), per data set × configuration × task, from
        :meth:`~mtlbook.analysis.compare.CompareResult.gains`. ``wide`` as in :meth:`table`."""
        frames = []
        for name, result in self.results.items():
            gains = CompareResult(
                raw=result.raw, confidence=self.confidence, metrics=self._metrics(result)
            ).gains(self.baseline, digits=digits)
            frames.append(gains.assign(dataset=name))
        out = pd.concat(frames, ignore_index=True)
        out = out[
            [
                "dataset",
                "model",
                "weighting",
                "task",
                "metric",
                "mean",
                "lo",
                "hi",
                "n",
                "formatted",
            ]
        ]
        return _widen(out, "formatted") if wide else out

    def best(self, *, overall: bool = False) -> pd.DataFrame:
        """The best configuration per data set and task, and those tied with it.

        The best is the configuration ``(model, weighting)`` with the best mean (highest AUC,
        lowest MSE); another one ties with it when the Student-t interval of their paired
        per-seed difference contains 0. With ``overall=True`` the score per seed is the mean
        relative gain over the baseline across the data set's tasks (the baseline scores 0),
        and the table has one row per data set.

        Returns:
            Columns ``dataset, task, metric, best, best_mean, tied, n_tied, summary``; ``tied``
            is a list of labels ``"model (weighting)"``, ``summary`` a printable line.
        """
        rows = self._kept()
        if overall:
            rows = self._overall_scores(rows)
        out = []
        for (dataset, task, metric), group in rows.groupby(
            ["dataset", "task", "metric"], sort=False
        ):
            wide = group.pivot_table(index="seed", columns="configuration", values="value")
            wide = wide.dropna(axis=1, how="all")
            means = wide.mean()
            lower = metric in LOWER_IS_BETTER
            best = means.idxmin() if lower else means.idxmax()
            diffs = wide.sub(wide[best], axis=0).drop(columns=best)  # [seed, other configs]
            tidy = diffs.melt(var_name="configuration", value_name="diff", ignore_index=False)
            tidy = tidy.dropna()
            tied: list[str] = []
            if len(tidy):
                ci = mean_interval(
                    tidy.reset_index(), ["configuration"], value="diff", confidence=self.confidence
                )
                contains_zero = (ci["lo"] <= 0) & (ci["hi"] >= 0)
                ci = ci[contains_zero.to_numpy()]
                ci = ci.assign(order=ci["configuration"].map(means))
                ci = ci.sort_values("order", ascending=lower)
                tied = ci["configuration"].tolist()
            summary = best + ("" if not tied else f"; tied: {', '.join(tied)}")
            out.append(
                {
                    "dataset": dataset,
                    "task": task,
                    "metric": metric,
                    "best": best,
                    "best_mean": float(means[best]),
                    "tied": tied,
                    "n_tied": len(tied),
                    "summary": summary,
                }
            )
        return pd.DataFrame(out)

    def _overall_scores(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Per data set, configuration and seed: the mean relative gain over the tasks."""
        keys = ["dataset", "seed", "task", "metric"]
        base = rows[rows["model"] == self.baseline].set_index(keys)["value"]
        joined = rows.join(base.rename("base"), on=keys)
        diff = joined["value"] - joined["base"]
        better = diff.where(~joined["metric"].isin(LOWER_IS_BETTER), -diff)
        joined = joined.assign(value=100.0 * better / joined["base"].abs())
        score = joined.groupby(["dataset", "configuration", "seed"], sort=False)["value"].mean()
        return score.reset_index().assign(task="all tasks", metric="mean gain %")

    def to_csv(self, path: str | Path) -> Path:
        """Write :attr:`raw` (every seed and metric of every data set) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.raw.to_csv(path, index=False)
        return path


def _widen(out: pd.DataFrame, value: str) -> pd.DataFrame:
    """Rows ``(model, weighting)``, columns ``(dataset, task, metric)``, in first-seen order."""
    wide = out.pivot_table(
        index=["model", "weighting"],
        columns=["dataset", "task", "metric"],
        values=value,
        aggfunc="first",
    )
    rows = pd.MultiIndex.from_frame(out[["model", "weighting"]].drop_duplicates())
    cols = pd.MultiIndex.from_frame(out[["dataset", "task", "metric"]].drop_duplicates())
    return wide.reindex(index=rows, columns=cols)


#: The Chinese names of the leaderboard's loss weightings in its figures and tables.
WEIGHTING_NAMES: dict[str, str] = {
    "equal": "等权",
    "fixed": "手动加权",
    "uncertainty": "不确定性加权",
}


def plot_gain_heatmap(
    gains: pd.DataFrame,
    *,
    limit: float | None = None,
    ax: plt.Axes | None = None,
    names: Mapping[str, str] | None = None,
) -> Figure | SubFigure:
    """The paired gains over the baseline as a heatmap: one row per configuration, one column
    per data set and task; each cell shows the mean gain in %, with ``*`` when its interval
    excludes 0. Colours are clipped to ``±limit`` (default: the 90th percentile of ``|gain|``)
    so that one extreme cell does not wash out the rest; empty cells (a model not run on that
    data set) are left blank. Labels are in Chinese: weightings by :data:`WEIGHTING_NAMES`,
    tasks and the other words the book translates by :func:`mtlbook.book.page.zh`.

    Args:
        gains: the long output of :meth:`Leaderboard.gains`.
        limit: colour-scale limit in %.
        ax: draw into these axes instead of a new figure.
        names: further labels for the axes, e.g. data-set label → its Chinese name
            (``{"funnel": "漏斗"}``); they override the defaults.

    Example:
        >>> import pandas as pd
        >>> gains = pd.DataFrame({"dataset": ["a", "a"], "model": ["mmoe", "ple"],
        ...                       "weighting": ["equal", "equal"], "task": ["t1", "t1"],
        ...                       "metric": ["mse", "mse"], "mean": [5.0, -2.0],
        ...                       "lo": [1.0, -6.0], "hi": [9.0, 2.0]})
        >>> fig = plot_gain_heatmap(gains)
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    needed = ["dataset", "model", "weighting", "task", "mean", "lo", "hi"]
    missing = [c for c in needed if c not in gains.columns]
    if missing:
        raise ValueError(f"column(s) {missing} missing; pass Leaderboard.gains()")
    extra = {**WEIGHTING_NAMES, **(names or {})}
    g = gains.assign(
        row=[
            f"{zh(m, extra)} / {zh(w, extra)}"
            for m, w in zip(gains["model"], gains["weighting"], strict=True)
        ],
        col=[
            f"{zh(d, extra)}\n{zh(t, extra)}"
            for d, t in zip(gains["dataset"], gains["task"], strict=True)
        ],
    )
    rows = list(dict.fromkeys(g["row"]))
    cols = list(dict.fromkeys(g["col"]))
    means = g.pivot_table(index="row", columns="col", values="mean").reindex(
        index=rows, columns=cols
    )
    sig = (g["lo"] > 0) | (g["hi"] < 0)
    text = g.assign(
        text=[f"{m:+.0f}{'*' if s else ''}" for m, s in zip(g["mean"], sig, strict=True)]
    )
    labels = text.pivot_table(index="row", columns="col", values="text", aggfunc="first")
    labels = labels.reindex(index=rows, columns=cols).fillna("")
    if limit is None:
        finite = np.abs(means.to_numpy()[np.isfinite(means.to_numpy())])
        limit = float(np.percentile(finite, 90)) if finite.size else 1.0
        limit = max(limit, 1.0)
    fig: Figure | SubFigure
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.5 + 1.0 * len(cols), 1.0 + 0.42 * len(rows)))
    else:
        fig = ax.figure
    sns.heatmap(
        means,
        annot=labels.to_numpy(),
        fmt="",
        cmap="RdBu",
        center=0.0,
        vmin=-limit,
        vmax=limit,
        linewidths=0.5,
        linecolor="white",
        ax=ax,
        annot_kws={"fontsize": 8},
        cbar_kws={"label": "相对基线的增益（%，正数更好）"},
    )
    ax.set_facecolor("#f2f2f2")  # cells of configurations not run on that data set
    ax.grid(False)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", labelsize=8, labelrotation=0)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title("相对单任务基线的配对增益（%，各种子的均值；* 表示区间不含 0）", fontsize=9)
    tidy_layout(fig)
    return fig
