"""Repeated experiments with intervals: the honest way to say "better".

:func:`repeat_fits` trains several models over several seeds (each seed draws its own data set
and split, and the models of one seed share them, so differences are paired);
:func:`mean_interval` summarises a metric with a Student-t confidence interval; :func:`mtl_gain`
gives the paired relative gain of each model over a baseline with the PLE paper's sign
convention (positive = better, for higher-better metrics such as AUC and lower-better ones
such as MSE alike). Model selection happens on the validation split; only the test split is
reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .data import MultiTaskData, Schema
from .metrics import LOWER_IS_BETTER, evaluate
from .models.base import MultiTaskModel
from .training import fit

__all__ = ["PerTask", "correlation_sweep", "mean_interval", "mtl_gain", "repeat_fits"]


@dataclass(frozen=True)
class PerTask:
    """Wrap a model factory so that :func:`repeat_fits` trains one separate model per task.

    Each copy sees only its own task and gets its own model selection (best epoch) on that
    task's validation loss: the fair single-task baseline. ``PerTask(SingleTask)`` is the
    usual choice.
    """

    factory: Callable[[Schema, int], MultiTaskModel]


def repeat_fits(
    make_data: Callable[[int], MultiTaskData],
    models: Mapping[str, Callable[[Schema, int], MultiTaskModel] | PerTask],
    seeds: Iterable[int],
    *,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    transform_train: Callable[[MultiTaskData, int], MultiTaskData] | None = None,
    progress: bool = False,
    **fit_kwargs,
) -> pd.DataFrame:
    """Train every model on every seed and report test metrics at the validation-best epoch.

    Args:
        make_data: ``seed → MultiTaskData``; called once per seed.
        models: name → ``(schema, seed) → model``, or → :class:`PerTask` for a separate
            model per task.
        seeds: the seeds; each gives its own data, split, initial weights and batch order.
        fractions: train/valid/test fractions of :meth:`MultiTaskData.split`.
        transform_train: optional ``(train, seed) → train`` applied to the training split only,
            e.g. ``lambda d, s: d.subsample_labels("task2", 0.1, seed=s)`` to make a task sparse
            while validation and test keep all labels.
        progress: show a progress bar over seeds.
        **fit_kwargs: passed to :func:`mtlbook.fit` (``epochs``, ``lr``, ...).

    Returns:
        Tidy DataFrame with columns ``model, seed, task, metric, value, best_epoch,
        train_seconds``.
    """
    from tqdm.auto import tqdm

    if not models:
        raise ValueError("models must name at least one model factory")
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, valid, test), got {fractions!r}")
    fit_kwargs.setdefault("progress", False)
    frames = []
    for seed in tqdm(list(seeds), desc="seeds", disable=not progress, leave=False):
        train, valid, test = make_data(seed).split(fractions, seed=seed)
        if transform_train is not None:
            train = transform_train(train, seed)
        for name, factory in models.items():
            if isinstance(factory, PerTask):
                parts = [(factory.factory, [t]) for t in train.task_names]
            else:
                parts = [(factory, list(train.task_names))]
            for make_model, tasks in parts:
                tr, va, te = (d.select_tasks(tasks) if len(parts) > 1 else d
                              for d in (train, valid, test))
                model = make_model(tr.schema, seed)
                result = fit(model, tr, va, seed=seed, **fit_kwargs)
                frames.append(evaluate(model, te).assign(
                    model=name, seed=seed, best_epoch=result.best_epoch,
                    train_seconds=result.train_seconds))
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "seed", "task", "metric", "value", "best_epoch", "train_seconds"]]


def mean_interval(df: pd.DataFrame, by: Sequence[str], value: str = "value",
                  confidence: float = 0.95) -> pd.DataFrame:
    """Mean, standard deviation, count and Student-t interval of ``value`` per group ``by``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    missing = [c for c in [*by, value] if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the DataFrame; it has {list(df.columns)}")
    g = df.groupby(list(by), sort=False)[value]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    half = stats.t.ppf(0.5 + confidence / 2, np.maximum(out["n"] - 1, 1)) * out["std"] / np.sqrt(
        out["n"])
    out["lo"] = out["mean"] - half.where(out["n"] > 1)
    out["hi"] = out["mean"] + half.where(out["n"] > 1)
    return out


def mtl_gain(df: pd.DataFrame, baseline: str, *, by: Sequence[str] = (),
             confidence: float = 0.95) -> pd.DataFrame:
    """Paired relative gain (in %) of every model over ``baseline``, with an interval.

    For a higher-better metric the gain is ``(m − b) / b``; for a lower-better one (log-loss,
    MSE, MAE) it is ``(b − m) / b``; either way positive means better than the baseline. The
    gain is computed per seed (paired) and then averaged.

    Args:
        df: output of :func:`repeat_fits` (columns ``model, seed, task, metric, value``, plus
            any columns in ``by``).
        baseline: the model name to compare against.
        by: extra grouping columns (e.g. ``["correlation"]``).
    """
    if baseline not in set(df["model"]):
        raise ValueError(f"baseline {baseline!r} not among the models {sorted(set(df['model']))}")
    keys = [*by, "seed", "task", "metric"]
    base = df[df["model"] == baseline].set_index(keys)["value"]
    others = df[df["model"] != baseline]
    joined = others.join(base.rename("baseline"), on=keys)
    lower = joined["metric"].isin(LOWER_IS_BETTER)
    diff = joined["value"] - joined["baseline"]
    diff = diff.where(~lower, -diff)
    joined = joined.assign(gain=100.0 * diff / joined["baseline"].abs())
    return mean_interval(joined, [*by, "model", "task", "metric"], value="gain",
                         confidence=confidence)


def correlation_sweep(
    correlations: Iterable[float],
    models: Mapping[str, Callable[[Schema, int], MultiTaskModel] | PerTask],
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
    from .data import make_correlated_tasks

    seeds = list(seeds)
    transform = None
    if sparse_task is not None and label_fraction < 1.0:
        def transform(train: MultiTaskData, seed: int) -> MultiTaskData:
            return train.subsample_labels(sparse_task, label_fraction, seed=seed)

    frames = []
    for p in correlations:
        frame = repeat_fits(
            lambda seed, p=p: make_correlated_tasks(n_samples, p, task_type=task_type, seed=seed),
            models, seeds, transform_train=transform, **fit_kwargs)
        frames.append(frame.assign(correlation=float(p)))
    return pd.concat(frames, ignore_index=True)
