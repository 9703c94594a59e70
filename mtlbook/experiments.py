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
from .weighting import Weighting

__all__ = ["PerTask", "correlation_sweep", "mean_interval", "mtl_gain", "repeat_fits",
           "time_overhead"]


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
    weightings: Mapping[str, Callable[[], Weighting]] | None = None,
    progress: bool = False,
    **fit_kwargs,
) -> pd.DataFrame:
    """Train every model (under every weighting) on every seed and report test metrics at the
    validation-best epoch.

    Args:
        make_data: ``seed → MultiTaskData``; called once per seed.
        models: name → ``(schema, seed) → model``, or → :class:`PerTask` for a separate
            model per task.
        seeds: the seeds; each gives its own data, split, initial weights and batch order.
        fractions: train/valid/test fractions of :meth:`MultiTaskData.split`.
        transform_train: optional ``(train, seed) → train`` applied to the training split only,
            e.g. ``lambda d, s: d.subsample_labels("task2", 0.1, seed=s)`` to make a task sparse
            while validation and test keep all labels.
        weightings: optional name → ``() → Weighting``: each model is trained once per
            strategy, with a fresh strategy object per fit (strategies keep state). Without
            it, every fit uses equal weights and the ``weighting`` column reads ``"equal"``.
            :class:`PerTask` models have one task each, so they are trained once and their
            rows repeated under every strategy name.
        progress: show a progress bar over seeds.
        **fit_kwargs: passed to :func:`mtlbook.fit` (``epochs``, ``lr``, ...).

    Returns:
        Tidy DataFrame with columns ``model, weighting, seed, task, metric, value, best_epoch,
        epochs_run, train_seconds`` (``train_seconds`` includes the per-epoch validation).
    """
    from tqdm.auto import tqdm

    if not models:
        raise ValueError("models must name at least one model factory")
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, valid, test), got {fractions!r}")
    if "weighting" in fit_kwargs:
        raise ValueError("pass strategies as weightings={name: factory}, not weighting=...")
    strategies = dict(weightings) if weightings else {"equal": lambda: None}
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
            if isinstance(factory, PerTask):
                # One task per model: a weighting has nothing to balance. Train each once
                # and report the same rows under every strategy name, so gains stay paired.
                runs = [(part, None, list(strategies)) for part in parts]
            else:
                runs = [(parts[0], make, [strategy]) for strategy, make in strategies.items()]
            for (make_model, tasks), make_weighting, labels in runs:
                tr, va, te = (d.select_tasks(tasks) if len(parts) > 1 else d
                              for d in (train, valid, test))
                model = make_model(tr.schema, seed)
                weighting = None if make_weighting is None else make_weighting()
                result = fit(model, tr, va, seed=seed, weighting=weighting, **fit_kwargs)
                metrics = evaluate(model, te)
                frames += [metrics.assign(model=name, weighting=label, seed=seed,
                                          best_epoch=result.best_epoch,
                                          epochs_run=result.epochs_run,
                                          train_seconds=result.train_seconds)
                           for label in labels]
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "weighting", "seed", "task", "metric", "value", "best_epoch",
                "epochs_run", "train_seconds"]]


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
    if "weighting" in df.columns and "weighting" not in keys:
        if df["weighting"].nunique() > 1:
            raise ValueError("the results mix several weightings; compare models under one "
                             "weighting (filter df) or pass by=['weighting', ...]")
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


def time_overhead(results: pd.DataFrame, baseline: str = "equal",
                  column: str = "weighting") -> pd.DataFrame:
    """Training time per epoch of each ``column`` value (e.g. weighting strategy) relative to
    ``baseline``, paired by seed (and model): median and range of the per-seed ratios.

    Per epoch, because early stopping lets runs last different numbers of epochs.
    ``results`` is the output of :func:`repeat_fits`; ``train_seconds`` is repeated on every
    metric row of a fit, so each fit is counted once.
    """
    if baseline not in set(results[column]):
        raise ValueError(f"baseline {baseline!r} not among {sorted(set(results[column]))}")
    fits = results.drop_duplicates(["model", column, "seed"])[
        ["model", column, "seed", "train_seconds", "epochs_run"]].copy()
    fits["epoch_seconds"] = fits["train_seconds"] / fits["epochs_run"]
    base = fits[fits[column] == baseline].set_index(["model", "seed"])["epoch_seconds"]
    fits = fits.join(base.rename("baseline_seconds"), on=["model", "seed"])
    fits["ratio"] = fits["epoch_seconds"] / fits["baseline_seconds"]
    return (fits.groupby(["model", column], sort=False)
            .agg(epoch_seconds=("epoch_seconds", "median"), ratio=("ratio", "median"),
                 ratio_min=("ratio", "min"), ratio_max=("ratio", "max"))
            .reset_index())
