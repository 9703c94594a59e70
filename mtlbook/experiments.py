"""Repeated experiments with intervals: the honest way to say "better".

:func:`repeat_fits` trains several models over several seeds (each seed draws its own data set
and split, and the models of one seed share them, so differences are paired);
:func:`mean_interval` summarises a metric with a Student-t confidence interval; :func:`mtl_gain`
gives the paired relative gain of each model over a baseline with the PLE paper's sign
convention (positive = better, for higher-better metrics such as AUC and lower-better ones
such as MSE alike). Model selection happens on the validation split; only the test split is
reported (unless :func:`repeat_fits` is asked for the validation split, to choose among
configurations). All training goes through one trainer (:func:`train_jobs` by default), which
receives every planned :class:`FitJob` at once; :mod:`mtlbook.compare` builds on this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .data import MultiTaskData, Schema
from .metrics import LOWER_IS_BETTER, evaluate
from .models.base import MultiTaskModel
from .training import fit
from .weighting import Weighting

__all__ = ["FitJob", "FitOutcome", "PerTask", "Trainer", "correlation_sweep", "mean_interval",
           "mtl_gain", "repeat_fits", "time_overhead", "train_jobs"]


@dataclass(frozen=True)
class PerTask:
    """Wrap a model factory so that :func:`repeat_fits` trains one separate model per task.

    Each copy sees only its own task and gets its own model selection (best epoch) on that
    task's validation loss: the fair single-task baseline. The usual choice is
    ``PerTask(model_factory(SingleTask))`` (:func:`mtlbook.compare.model_factory`), i.e.
    ``PerTask(lambda schema, seed: SingleTask(schema, seed=seed))``; in
    :func:`mtlbook.compare.compare` it is the model name ``"single"``.
    """

    factory: Callable[[Schema, int], MultiTaskModel]


@dataclass(frozen=True)
class FitJob:
    """One training run planned by :func:`repeat_fits`: a model on one seed's data.

    A trainer (see :func:`train_jobs`) trains ``make_model(train.schema, seed)`` on ``train``
    with the weighting ``make_weighting()`` (``None``: equal weights), selects the epoch on
    ``valid`` and scores the selected model on ``report`` (the test split, or the validation
    split when :func:`repeat_fits` is asked for ``split="valid"``).

    Attributes:
        model: the configuration's name (the ``model`` column of the results).
        labels: the ``weighting`` names its rows are reported under (several for a
            :class:`PerTask` part, whose single task leaves nothing to weight).
        seed: the seed of the data, split, initial weights and batch order.
    """

    model: str
    labels: tuple[str, ...]
    seed: int
    make_model: Callable[[Schema, int], MultiTaskModel]
    make_weighting: Callable[[], Weighting] | None
    train: MultiTaskData
    valid: MultiTaskData
    report: MultiTaskData


@dataclass(frozen=True)
class FitOutcome:
    """What a trainer returns for one :class:`FitJob`.

    Attributes:
        metrics: tidy ``task, metric, value`` scores of the selected model on ``job.report``.
        best_epoch, epochs_run, train_seconds: as in :class:`~mtlbook.FitResult`.
    """

    metrics: pd.DataFrame
    best_epoch: int
    epochs_run: int
    train_seconds: float


def _train_one(job: FitJob, **fit_kwargs) -> FitOutcome:
    """Train and score one job with :func:`mtlbook.fit`."""
    model = job.make_model(job.train.schema, job.seed)
    weighting = None if job.make_weighting is None else job.make_weighting()
    result = fit(model, job.train, job.valid, seed=job.seed, weighting=weighting, **fit_kwargs)
    return FitOutcome(metrics=evaluate(model, job.report), best_epoch=result.best_epoch,
                      epochs_run=result.epochs_run, train_seconds=result.train_seconds)


def train_jobs(jobs: Sequence[FitJob], fit_kwargs: Mapping[str, Any],
               progress: bool = False) -> list[FitOutcome]:
    """The default trainer of :func:`repeat_fits`: every job in turn with :func:`mtlbook.fit`.

    This is the one place where the harness trains. A trainer receives *all* jobs at once
    (every configuration × seed), so a vectorised one may group the jobs that share a model
    factory, a weighting and the same ``train``/``valid``/``report`` objects (as all seeds of
    one configuration do with ``repeat_fits(..., data_per_seed=False)``) and train each
    group's seeds together; it must return one :class:`FitOutcome` per job, in the jobs'
    order.
    """
    from tqdm.auto import tqdm

    return [_train_one(job, **fit_kwargs)
            for job in tqdm(jobs, desc="fits", disable=not progress, leave=False)]


#: ``(jobs, fit_kwargs, progress) → outcomes``: the type of :func:`repeat_fits`'s ``trainer``.
Trainer = Callable[[Sequence[FitJob], Mapping[str, Any], bool], list[FitOutcome]]

_COLUMNS = ["model", "weighting", "seed", "task", "metric", "value", "best_epoch", "epochs_run",
            "train_seconds"]


def repeat_fits(
    make_data: Callable[[int], MultiTaskData],
    models: Mapping[str, Callable[[Schema, int], MultiTaskModel] | PerTask],
    seeds: Iterable[int],
    *,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    transform_train: Callable[[MultiTaskData, int], MultiTaskData] | None = None,
    weightings: Mapping[str, Callable[[], Weighting]] | None = None,
    split: str = "test",
    data_per_seed: bool = True,
    trainer: Trainer | None = None,
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
        split: the split whose metrics are reported: ``"test"`` (the default; untouched by
            any choice made during training) or ``"valid"`` (the validation metrics of the
            selected model, for choosing among configurations before a final test run; they
            are optimistic, since the epoch was selected on that split).
        data_per_seed: ``True`` (default): every seed draws its own data and split, so the
            intervals include the variation of the data. ``False``: one data set and split
            (and ``transform_train``), made with the first seed, for every seed; the seeds
            then vary only the initial weights and the batch order (a trainability study),
            and a vectorised trainer can train them together.
        trainer: how the planned :class:`FitJob` objects are trained; default
            :func:`train_jobs` (one :func:`mtlbook.fit` after the other).
        progress: show a progress bar over the fits.
        **fit_kwargs: passed to :func:`mtlbook.fit` (``epochs``, ``lr``, ...).

    Returns:
        Tidy DataFrame with columns ``model, weighting, seed, task, metric, value, best_epoch,
        epochs_run, train_seconds`` (``train_seconds`` includes the per-epoch validation).

    Every fit is planned (data drawn and split) before the trainer starts, so all seeds'
    data sets are in memory at once.
    """
    if not models:
        raise ValueError("models must name at least one model factory")
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, valid, test), got {fractions!r}")
    if "weighting" in fit_kwargs:
        raise ValueError("pass strategies as weightings={name: factory}, not weighting=...")
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    strategies = dict(weightings) if weightings else {"equal": None}
    fit_kwargs.setdefault("progress", False)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    jobs = []
    current = None  # (train, valid, test, {task: its single-task copies})
    for seed in seeds:
        if current is None or data_per_seed:
            train, valid, test = make_data(seed).split(fractions, seed=seed)
            if transform_train is not None:
                train = transform_train(train, seed)
            current = (train, valid, test, {})
        train, valid, test, per_task = current
        for name, factory in models.items():
            if isinstance(factory, PerTask):
                # One task per model: a weighting has nothing to balance. Train each once
                # and report the same rows under every strategy name, so gains stay paired.
                for task in train.task_names:
                    if task not in per_task:  # one copy per data set, shared by its jobs
                        per_task[task] = tuple(d.select_tasks([task]) for d in (train, valid, test))
                    tr, va, te = per_task[task]
                    jobs.append(FitJob(name, tuple(strategies), seed, factory.factory, None,
                                       tr, va, va if split == "valid" else te))
            else:
                jobs += [FitJob(name, (label,), seed, factory, make, train, valid,
                                valid if split == "valid" else test)
                         for label, make in strategies.items()]
    outcomes = (train_jobs if trainer is None else trainer)(jobs, fit_kwargs, progress)
    if len(outcomes) != len(jobs):
        raise RuntimeError(f"the trainer returned {len(outcomes)} outcomes for {len(jobs)} jobs")
    frames = [out.metrics.assign(model=job.model, weighting=label, seed=job.seed,
                                 best_epoch=out.best_epoch, epochs_run=out.epochs_run,
                                 train_seconds=out.train_seconds)
              for job, out in zip(jobs, outcomes, strict=True) for label in job.labels]
    return pd.concat(frames, ignore_index=True)[_COLUMNS]


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
