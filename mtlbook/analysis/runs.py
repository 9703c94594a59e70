"""The one runner of seeds × configurations: train models over seeds, paired by seed.

:func:`repeat_fits` trains several models (× loss weightings) over several seeds: each seed
draws its own data set and split, and the models of one seed share them, so differences are
paired. Every planned run is a :class:`FitJob`; all of them go to one trainer at once:
:func:`train_jobs` (one :func:`~mtlbook.training.fit` each) or :func:`population_trainer`
(the seeds of a configuration as one vectorised :func:`~mtlbook.training.fit_population`,
where the configuration allows it). Model selection happens on the validation split; only the
test split is reported (unless :func:`repeat_fits` is asked for the validation split, to
choose among configurations). :func:`time_overhead` compares training times by seed. The
comparison harness (:mod:`mtlbook.analysis.compare`) and the book's studies build on this
module; :mod:`mtlbook.analysis.intervals` summarises its results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from ..data import MultiTaskData, Schema
from ..metrics import evaluate
from ..models.base import MultiTaskModel
from ..training.loop import fit
from ..training.population import PopulationResult, fit_population
from ..utils import dropout_rates
from ..weighting import EqualWeight, FixedWeights, Weighting

__all__ = [
    "RESULT_COLUMNS",
    "Factory",
    "FitJob",
    "FitOutcome",
    "ModelSpec",
    "PerTask",
    "RecordingTrainer",
    "Trainer",
    "population_scores",
    "population_trainer",
    "repeat_fits",
    "time_overhead",
    "train_jobs",
]


#: ``(schema, seed) → model``: how every runner and study builds a model.
Factory = Callable[[Schema, int], MultiTaskModel]


@dataclass(frozen=True)
class PerTask:
    """Wrap a model factory so that :func:`repeat_fits` trains one separate model per task.

    Each copy sees only its own task and gets its own model selection (best epoch) on that
    task's validation loss: the fair single-task baseline. The usual choice is
    ``PerTask(model_factory(SingleTask))`` (:func:`mtlbook.analysis.compare.model_factory`), i.e.
    ``PerTask(lambda schema, seed: SingleTask(schema, seed=seed))``; in
    :func:`mtlbook.analysis.compare.compare` it is the model name ``"single"``.
    """

    factory: Callable[[Schema, int], MultiTaskModel]


# A model for the runners: a factory, or one single-task model per task (PerTask).
ModelSpec = Factory | PerTask


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
        best_epoch, epochs_run, train_seconds: as in :class:`~mtlbook.training.FitResult`.
        history: the run's history (:attr:`~mtlbook.training.FitResult.history`) when it was
            trained alone, ``None`` when it trained in a vectorised population.
    """

    metrics: pd.DataFrame
    best_epoch: int
    epochs_run: int
    train_seconds: float
    history: pd.DataFrame | None = None


def _train_one(job: FitJob, **fit_kwargs) -> FitOutcome:
    """Train and score one job with :func:`mtlbook.fit`."""
    model = job.make_model(job.train.schema, job.seed)
    weighting = None if job.make_weighting is None else job.make_weighting()
    result = fit(model, job.train, job.valid, seed=job.seed, weighting=weighting, **fit_kwargs)
    return FitOutcome(
        metrics=evaluate(model, job.report),
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        train_seconds=result.train_seconds,
        history=result.history,
    )


def train_jobs(
    jobs: Sequence[FitJob], fit_kwargs: Mapping[str, Any], progress: bool = False
) -> list[FitOutcome]:
    """The default trainer of :func:`repeat_fits`: every job in turn with :func:`mtlbook.fit`.

    This is the one place where the harness trains. A trainer receives *all* jobs at once
    (every configuration × seed), so a vectorised one may group the jobs that share a model
    factory, a weighting and the same ``train``/``valid``/``report`` objects (as all seeds of
    one configuration do with ``repeat_fits(..., data_per_seed=False)``) and train each
    group's seeds together; it must return one :class:`FitOutcome` per job, in the jobs'
    order.
    """
    return [
        _train_one(job, **fit_kwargs)
        for job in tqdm(jobs, desc="fits", disable=not progress, leave=False)
    ]


#: ``(jobs, fit_kwargs, progress) → outcomes``: the type of :func:`repeat_fits`'s ``trainer``.
Trainer = Callable[[Sequence[FitJob], Mapping[str, Any], bool], list[FitOutcome]]

#: The columns of the long results frame of :func:`repeat_fits` (and of the comparisons built
#: on it): one row per configuration, seed, task and metric.
RESULT_COLUMNS = [
    "model",
    "weighting",
    "seed",
    "task",
    "metric",
    "value",
    "best_epoch",
    "epochs_run",
    "train_seconds",
]


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
    # (train, valid, test, {task: its single-task copies})
    current: (
        tuple[MultiTaskData, MultiTaskData, MultiTaskData, dict[str, tuple[MultiTaskData, ...]]]
        | None
    ) = None
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
                    jobs.append(
                        FitJob(
                            name,
                            tuple(strategies),
                            seed,
                            factory.factory,
                            None,
                            tr,
                            va,
                            va if split == "valid" else te,
                        )
                    )
            else:
                jobs += [
                    FitJob(
                        name,
                        (label,),
                        seed,
                        factory,
                        make,
                        train,
                        valid,
                        valid if split == "valid" else test,
                    )
                    for label, make in strategies.items()
                ]
    outcomes = (train_jobs if trainer is None else trainer)(jobs, fit_kwargs, progress)
    if len(outcomes) != len(jobs):
        raise RuntimeError(f"the trainer returned {len(outcomes)} outcomes for {len(jobs)} jobs")
    frames = [
        out.metrics.assign(
            model=job.model,
            weighting=label,
            seed=job.seed,
            best_epoch=out.best_epoch,
            epochs_run=out.epochs_run,
            train_seconds=out.train_seconds,
        )
        for job, out in zip(jobs, outcomes, strict=True)
        for label in job.labels
    ]
    return pd.concat(frames, ignore_index=True)[RESULT_COLUMNS]


def time_overhead(
    results: pd.DataFrame, baseline: str = "equal", column: str = "weighting"
) -> pd.DataFrame:
    """Training time per epoch of each ``column`` value (e.g. weighting strategy) relative to
    ``baseline``, paired by seed (and model): median and range of the per-seed ratios.

    Per epoch, because early stopping lets runs last different numbers of epochs.
    ``results`` is the output of :func:`repeat_fits`; ``train_seconds`` is repeated on every
    metric row of a fit, so each fit is counted once.
    """
    if baseline not in set(results[column]):
        raise ValueError(f"baseline {baseline!r} not among {sorted(set(results[column]))}")
    fits = results.drop_duplicates(["model", column, "seed"])[
        ["model", column, "seed", "train_seconds", "epochs_run"]
    ].copy()
    fits["epoch_seconds"] = fits["train_seconds"] / fits["epochs_run"]
    base = fits[fits[column] == baseline].set_index(["model", "seed"])["epoch_seconds"]
    fits = fits.join(base.rename("baseline_seconds"), on=["model", "seed"])
    fits["ratio"] = fits["epoch_seconds"] / fits["baseline_seconds"]
    return (
        fits.groupby(["model", column], sort=False)
        .agg(
            epoch_seconds=("epoch_seconds", "median"),
            ratio=("ratio", "median"),
            ratio_min=("ratio", "min"),
            ratio_max=("ratio", "max"),
        )
        .reset_index()
    )


#: The :func:`mtlbook.fit` arguments :func:`population_trainer` can honour (``restore_best``
#: only as ``True``, ``callbacks`` only empty); any other sends every job to ``fit``.
_POPULATION_KWARGS = {
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "early_stopping",
    "monitor",
    "progress",
    "device",
    "eval_batch_size",
}


def _fixed_weights(job: FitJob) -> tuple[bool, tuple[tuple[str, float], ...] | None]:
    """Whether ``job``'s weighting is a constant one, and its weights (``None``: equal)."""
    if job.make_weighting is None:
        return True, None
    weighting = job.make_weighting()
    if type(weighting) is EqualWeight:
        return True, None
    if type(weighting) is FixedWeights:
        return True, tuple(sorted(weighting.weights.items()))
    return False, None


def _population_kwargs(fit_kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """``fit_kwargs`` as :func:`fit_population` arguments, or ``None`` if it cannot honour them."""
    kwargs = dict(fit_kwargs)
    if not kwargs.pop("restore_best", True) or tuple(kwargs.pop("callbacks", ()) or ()):
        return None
    if set(kwargs) - _POPULATION_KWARGS:
        return None
    kwargs["progress"] = False
    return kwargs


def population_trainer(
    jobs: Sequence[FitJob], fit_kwargs: Mapping[str, Any], progress: bool = False
) -> list[FitOutcome]:
    """A trainer for :func:`~mtlbook.analysis.runs.repeat_fits`: the seeds of each configuration
    train together as one :func:`fit_population` run where they can, the rest with
    :func:`mtlbook.fit` (:func:`~mtlbook.analysis.runs.train_jobs`).

    Jobs form one population when they share the configuration (model name and factory), use
    equal or :class:`~mtlbook.weighting.FixedWeights` loss weights, and have data of the same
    schema and sizes (every seed its own draw and split, or one shared data set); and when the
    model has no dropout and runs under ``torch.vmap`` (checked on a probe batch). Each member
    follows the trajectory of its separate ``fit`` run up to floating-point rounding, so the
    results agree with :func:`~mtlbook.analysis.runs.train_jobs` to about 1e-5 (rarely, a tie
    between two epochs' validation scores may be broken differently). ``train_seconds`` of a
    population's jobs is the population's time divided by its size. Adaptive weightings,
    callbacks and ``restore_best=False`` go to ``fit``.

    This is the default trainer of :func:`mtlbook.analysis.compare.compare`,
    :func:`~mtlbook.analysis.seesaw.seesaw` and
    :func:`~mtlbook.analysis.transfer.negative_transfer`.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.runs import repeat_fits
        >>> from mtlbook.models import MMoE
        >>> from mtlbook.analysis.runs import population_trainer
        >>> results = repeat_fits(
        ...     lambda seed: mb.make_correlated_tasks(600, 0.5, n_features=8, seed=seed),
        ...     {"mmoe": lambda schema, seed: MMoE(schema, expert_units=(8,), seed=seed)},
        ...     range(8), trainer=population_trainer, epochs=3)
        >>> sorted(results["seed"].unique().tolist())
        [0, 1, 2, 3, 4, 5, 6, 7]
    """
    kwargs = _population_kwargs(fit_kwargs)
    if kwargs is None:
        return train_jobs(jobs, fit_kwargs, progress)
    groups: dict[tuple, list[int]] = {}
    alone: list[int] = []
    for i, job in enumerate(jobs):
        fixed, weights = _fixed_weights(job)
        if not fixed:
            alone.append(i)
            continue
        key = (
            job.model,
            id(job.make_model),
            weights,
            job.train.schema,
            len(job.train),
            len(job.valid),
            len(job.report),
            job.report.schema,
        )
        groups.setdefault(key, []).append(i)
    outcomes: list[FitOutcome | None] = [None] * len(jobs)
    for key, members in tqdm(
        list(groups.items()), desc="populations", disable=not progress, leave=False
    ):
        seeds = [jobs[i].seed for i in members]
        if len(members) < 2 or len(set(seeds)) < len(seeds):
            alone += members
            continue
        first = jobs[members[0]]
        schema, weights = first.train.schema, key[2]
        if dropout_rates(first.make_model(schema, seeds[0])):
            alone += members
            continue

        def parts(name: str, members=members) -> MultiTaskData | list[MultiTaskData]:
            data = [getattr(jobs[i], name) for i in members]
            return data[0] if all(d is data[0] for d in data) else data

        def make(seed: int, f: Factory = first.make_model, s: Schema = schema) -> MultiTaskModel:
            return f(s, seed)

        try:
            result = fit_population(
                make,
                parts("train"),
                parts("valid"),
                seeds,
                task_weights=None if weights is None else dict(weights),
                **kwargs,
            )
        except NotImplementedError:  # the model does not run under vmap: fit one by one
            alone += members
            continue
        scores = result.evaluate(parts("report"))
        share = result.train_seconds / len(members)
        for member, i in enumerate(members):
            rows = scores[scores["member"] == member][["task", "metric", "value"]]
            summary = result.summary.loc[member]
            outcomes[i] = FitOutcome(
                metrics=rows.reset_index(drop=True),
                best_epoch=int(summary["best_epoch"]),
                epochs_run=int(summary["epochs_run"]),
                train_seconds=share,
            )
    alone.sort()
    for i, outcome in zip(
        alone, train_jobs([jobs[i] for i in alone], fit_kwargs, progress), strict=True
    ):
        outcomes[i] = outcome
    # Every job was either trained in a population or alone: no entry is None any more.
    return cast("list[FitOutcome]", outcomes)


def population_scores(
    models: Mapping[str, ModelSpec],
    train: MultiTaskData,
    valid: MultiTaskData,
    evaluate_on: Mapping[str, MultiTaskData],
    seeds: Sequence[int],
    *,
    tasks: Mapping[str, Sequence[str]] | None = None,
    **fit_kwargs: Any,
) -> tuple[pd.DataFrame, dict[str, PopulationResult]]:
    """Every model's seeds as one population on one fixed split, every member scored.

    Where :func:`repeat_fits` gives each seed its own draw and split, this trains on the one
    split given (a study of one data set: the seeds vary the initial weights and the order of
    the mini-batches) with :func:`~mtlbook.training.fit_population`.

    Args:
        models: name → ``(schema, seed) → model`` factory, or a :class:`PerTask` (one
            population per task, each selected on its own validation loss: the fair
            single-task baseline).
        train, valid: the split; model selection (best epoch) is on ``valid`` only.
        evaluate_on: name → data set to score on (e.g. ``{"test": test}``), each restricted to
            the tasks the model learns.
        seeds: the members' seeds.
        tasks: name → the tasks that model learns (default: every task of ``train``).
        **fit_kwargs: passed to :func:`~mtlbook.training.fit_population`.

    Returns:
        ``(scores, populations)``: a tidy DataFrame with columns ``model, split, seed, task,
        metric, value, best_epoch``, and name → :class:`~mtlbook.training.PopulationResult`
        (``"name/task"`` for the populations of a :class:`PerTask`).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.compare import model_factory
        >>> from mtlbook.models import SharedBottom, SingleTask
        >>> data = mb.make_correlated_tasks(600, 0.8, n_features=10)
        >>> train, valid, test = data.split((0.6, 0.2, 0.2), seed=0)
        >>> scores, pops = population_scores(
        ...     {"single": PerTask(model_factory(SingleTask)),
        ...      "shared": model_factory(SharedBottom)},
        ...     train, valid, {"test": test}, seeds=[0, 1], epochs=2, device="cpu")
        >>> sorted(pops), len(pops["shared"])  # populations of 2 members
        (['shared', 'single/task1', 'single/task2'], 2)
        >>> sorted(set(zip(scores["model"], scores["task"])))
        [('shared', 'task1'), ('shared', 'task2'), ('single', 'task1'), ('single', 'task2')]
    """
    if not models:
        raise ValueError("models is empty: name at least one model")
    if not evaluate_on:
        raise ValueError("evaluate_on is empty: name at least one data set to score on")
    seeds = list(seeds)
    fit_kwargs.setdefault("progress", False)
    frames, populations = [], {}
    for name, spec in models.items():
        learned = list((tasks or {}).get(name, train.task_names))
        if isinstance(spec, PerTask):
            runs = [(f"{name}/{t}", spec.factory, [t]) for t in learned]
        elif callable(spec) and not isinstance(spec, nn.Module):
            runs = [(name, spec, learned)]
        else:
            raise TypeError(
                f"model {name!r} must be a (schema, seed) → model factory or a "
                f"PerTask, got {type(spec).__name__}"
            )
        for key, factory, part in runs:
            tr, va = train.select_tasks(part), valid.select_tasks(part)

            def make(s: int, f: Factory = factory, schema: Schema = tr.schema) -> MultiTaskModel:
                return f(schema, s)

            result = fit_population(make, tr, va, seeds, **fit_kwargs)
            populations[key] = result
            epochs = result.summary.set_index("member")["best_epoch"]
            for split, data in evaluate_on.items():
                scores = result.evaluate(data.select_tasks(part))
                scores["best_epoch"] = scores["member"].map(epochs)
                frames.append(scores.drop(columns="member").assign(model=name, split=split))
    columns = ["model", "split", "seed", "task", "metric", "value", "best_epoch"]
    return pd.concat(frames, ignore_index=True)[columns], populations


class RecordingTrainer:
    """A trainer for :func:`repeat_fits` that keeps the histories.

    Jobs with a constant weighting (equal or :class:`~mtlbook.weighting.FixedWeights`) go to
    :func:`population_trainer` (vectorised, no history kept) unless
    ``vectorise=False``; every other job is trained with :func:`mtlbook.fit`, and its history
    is kept in :attr:`histories` under ``(model, weighting, seed)``. With
    ``vectorise=False`` every job runs through ``fit``, so the training times of all
    strategies are measured the same way (what
    :func:`time_overhead` compares).

    Pass it as ``trainer=`` to :func:`~mtlbook.analysis.compare.compare` or
    :func:`repeat_fits`.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.compare import compare
        >>> recorder = RecordingTrainer()
        >>> result = compare(["shared_bottom"], "correlated:0.5", n_samples=300, seeds=1,
        ...                  weightings=["uncertainty"], epochs=2, trainer=recorder)
        >>> sorted(recorder.histories)
        [('shared_bottom', 'uncertainty', 0)]
        >>> int(recorder.histories["shared_bottom", "uncertainty", 0]["epoch"].max())
        2
    """

    def __init__(self, vectorise: bool = True) -> None:
        self.vectorise = bool(vectorise)
        self.histories: dict[tuple[str, str, int], pd.DataFrame] = {}

    def __call__(
        self, jobs: Sequence[FitJob], fit_kwargs: Mapping[str, Any], progress: bool = False
    ) -> list[FitOutcome]:
        together = [i for i, job in enumerate(jobs) if self.vectorise and _fixed_weights(job)[0]]
        alone = [i for i in range(len(jobs)) if i not in set(together)]
        outcomes: dict[int, FitOutcome] = {}
        if together:
            done = population_trainer([jobs[i] for i in together], fit_kwargs, progress)
            outcomes.update(zip(together, done, strict=True))
        for i in alone:
            outcomes[i] = _train_one(jobs[i], **fit_kwargs)
            for label in jobs[i].labels:
                self.histories[(jobs[i].model, label, jobs[i].seed)] = outcomes[i].history
        return [outcomes[i] for i in range(len(jobs))]
