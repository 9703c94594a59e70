"""Does task relatedness predict the gain of sharing? (chapter 12.4 of the book).

Two measures of how related two tasks are, both cheap enough to compute before committing to
a multi-task model, are set against the gain a Shared-Bottom model actually brings over
separate single-task models:

* **label correlation**: Pearson's correlation of the two tasks' labels on the samples where
  both are defined (:func:`~mtlbook.diagnostics.task_relatedness`), per seed's data set;
* **gradient cosine**: the cosine between the two tasks' gradients on the shared parameters,
  recorded on a validation probe every few steps while one multi-task model trains
  (:class:`~mtlbook.diagnostics.GradientConflict`), averaged over training;
* **measured gain**: the paired relative gain of the multi-task model over the single-task
  baseline on the test split over several seeds, with a Student-t interval and a verdict
  (:func:`~mtlbook.compare.summarise_transfer`).

:func:`relatedness_study` does all three for several task pairs ("cases"); the seeds of every
configuration train as one vectorised population, and cases whose data have the same schema
and size (e.g. :func:`~mtlbook.make_correlated_tasks` at several correlations) train together.
:func:`plot_relatedness_gain` draws the gain against either measure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .compare import Factory, ModelSpec, resolve_models, summarise_transfer
from .data import MultiTaskData
from .diagnostics import GradientConflict, task_relatedness
from .experiments import mean_interval, repeat_fits
from .population import population_trainer
from .training import fit

__all__ = ["RelatednessStudy", "plot_relatedness_gain", "relatedness_study"]

#: Seeds of case ``i`` are shifted by ``i · _OFFSET`` inside the joint run, so that the cases
#: can share one call of the trainer (and one population where their data sizes agree).
_OFFSET = 1_000_000


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
            :func:`~mtlbook.experiments.repeat_fits` plus ``case``).
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
            factory / :class:`~mtlbook.experiments.PerTask` (named ``"baseline"`` in ``raw``),
            or a one-entry mapping name → either.
        transform_train: optional ``(train, seed) → train`` for the training split (e.g. make
            one task sparse); also applied to the gradient-cosine run.
        conflict_every: record the gradient cosine every this many steps.
        probe_size: samples of the validation split in the gradient probe.
        fractions: train / valid / test fractions.
        confidence: level of the intervals.
        **fit_kwargs: passed to :func:`mtlbook.fit` (``epochs``, ``lr``, ``early_stopping``, ...).

    The gradient cosine comes from one training run of ``model`` on the first seed's data
    (validation split as probe); its spread is over the training steps, not over seeds.

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

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.compare import model_factory
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
    models = resolve_models(dict(model) if isinstance(model, Mapping) else {"mtl": model})
    if len(models) != 1:
        raise ValueError(f"give one multi-task model, got {list(models)}")
    name = next(iter(models))
    if isinstance(baseline, Mapping):
        if len(baseline) != 1:
            raise ValueError(f"give one baseline, got {list(baseline)}")
        base_name, baseline = next(iter(baseline.items()))
    else:
        base_name = baseline if isinstance(baseline, str) else "baseline"
    if base_name == name:
        raise ValueError(f"the model and the baseline are both called {name!r}")
    models.update(resolve_models({base_name: baseline}))

    names = list(cases)
    first = {}
    for case in names:
        data = cases[case](seeds[0])
        if not isinstance(data, MultiTaskData):
            raise TypeError(f"case {case!r} returned {type(data).__name__}, not a MultiTaskData")
        if len(data.task_names) != 2:
            raise ValueError(f"case {case!r} has tasks {list(data.task_names)}; a relatedness "
                             "study compares pairs of tasks (use data.select_tasks)")
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
    raw = repeat_fits(make_data, models, all_seeds, fractions=fractions, transform_train=transform,
                      trainer=fit_kwargs.pop("trainer", population_trainer), **fit_kwargs)
    raw.insert(0, "case", [names[s // _OFFSET] for s in raw["seed"]])
    raw["seed"] = raw["seed"] % _OFFSET

    rows, conflicts = [], []
    for case in names:
        verdicts = summarise_transfer(raw[raw["case"] == case], name, base_name,
                                      confidence=confidence)
        corr = pd.DataFrame({"value": [_label_corr(first[case] if s == seeds[0]
                                                   else cases[case](s)) for s in seeds]})
        corr = mean_interval(corr.assign(k=0), ["k"], confidence=confidence).iloc[0]
        train, valid, _ = first[case].split(fractions, seed=seeds[0])
        if transform_train is not None:
            train = transform_train(train, seeds[0])
        recorder = GradientConflict(valid, every=conflict_every, probe_size=probe_size,
                                    seed=seeds[0])
        fit(models[name](train.schema, seeds[0]), train, valid, seed=seeds[0],
            callbacks=[recorder], **fit_kwargs)
        frame = recorder.frame().assign(case=case)
        conflicts.append(frame)
        cosine = frame["cosine"].dropna()
        for _, v in verdicts.iterrows():
            rows.append({"case": case, "task": v["task"], "metric": v["metric"],
                         "label_corr": corr["mean"], "label_corr_lo": corr["lo"],
                         "label_corr_hi": corr["hi"], "grad_cosine": cosine.mean(),
                         "grad_cosine_sd": cosine.std(),
                         "gain_mean": v["gain_mean"], "gain_lo": v["gain_lo"],
                         "gain_hi": v["gain_hi"], "n": v["n"], "verdict": v["verdict"]})
    return RelatednessStudy(summary=pd.DataFrame(rows), raw=raw,
                            conflict=pd.concat(conflicts, ignore_index=True),
                            model=name, baseline=base_name)


def _label_corr(data: MultiTaskData) -> float:
    """Pearson correlation of the two tasks' labels where both are defined."""
    return float(task_relatedness(data)["pearson"].iloc[0])


def plot_relatedness_gain(summary: pd.DataFrame, axes: Sequence[plt.Axes] | None = None
                          ) -> plt.Figure:
    """Measured gain (with its interval over seeds) against label correlation and against
    gradient cosine: one point per case and task.

    Horizontal bars: the label correlation's interval over the seeds' data sets (left) and
    the gradient cosine's standard deviation over training (right).

    Args:
        summary: :attr:`RelatednessStudy.summary`.
        axes: two axes to draw on (default: a new figure).

    Example:
        >>> import pandas as pd
        >>> summary = pd.DataFrame({"case": ["a", "a"], "task": ["t1", "t2"],
        ...     "label_corr": [0.5, 0.5], "label_corr_lo": [0.4, 0.4],
        ...     "label_corr_hi": [0.6, 0.6], "grad_cosine": [0.2, 0.2],
        ...     "grad_cosine_sd": [0.1, 0.1],
        ...     "gain_mean": [5.0, -3.0], "gain_lo": [1.0, -6.0], "gain_hi": [9.0, 0.0]})
        >>> fig = plot_relatedness_gain(summary)
    """
    needed = ["case", "task", "label_corr", "label_corr_lo", "label_corr_hi", "grad_cosine",
              "grad_cosine_sd", "gain_mean", "gain_lo", "gain_hi"]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise ValueError(f"column(s) {missing} missing; pass RelatednessStudy.summary")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    fig = axes[0].figure
    cases = list(dict.fromkeys(summary["case"]))
    colors = dict(zip(cases, sns.color_palette("colorblind", len(cases)), strict=True))
    markers = ["o", "s", "^", "D"]
    spread = summary["grad_cosine_sd"]
    summary = summary.assign(cos_lo=summary["grad_cosine"] - spread,
                             cos_hi=summary["grad_cosine"] + spread)
    for ax, (x, lo, hi, label) in zip(axes, [
            ("label_corr", "label_corr_lo", "label_corr_hi",
             "label correlation\n(Pearson; 95% interval over seeds)"),
            ("grad_cosine", "cos_lo", "cos_hi",
             "gradient cosine on shared parameters\n(mean ± sd over training)")], strict=True):
        for _, r in summary.iterrows():
            order = list(summary.loc[summary["case"] == r["case"], "task"]).index(r["task"])
            xerr = np.nan_to_num([[r[x] - r[lo]], [r[hi] - r[x]]])
            yerr = np.nan_to_num([[r["gain_mean"] - r["gain_lo"]],
                                  [r["gain_hi"] - r["gain_mean"]]])
            ax.errorbar(r[x], r["gain_mean"], xerr=xerr, yerr=yerr, fmt=markers[order % 4],
                        color=colors[r["case"]], capsize=3, markersize=7,
                        label=f"{r['case']}: {r['task']}")
        ax.axhline(0, color="#333333", linewidth=1)
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MTL gain over single-task, % (95% CI)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig
