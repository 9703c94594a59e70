"""The comparison harness: run configurations over seeds and tabulate.

:func:`compare` is the one place where "run these models (× these loss weightings) over these
seeds and tabulate" lives; models, weightings and data may be given by name (``"mmoe"``,
``"uncertainty"``, ``"funnel"``) or as factories (:func:`model_factory`). It returns a
:class:`CompareResult`: the tidy per-seed frame of :func:`~mtlbook.analysis.runs.repeat_fits`
plus a summary table with Student-t intervals and paired MTL gains
(:mod:`mtlbook.analysis.intervals`). ``python -m mtlbook compare ...`` is its command line.
The seesaw (:mod:`mtlbook.analysis.seesaw`) and the negative-transfer check
(:mod:`mtlbook.analysis.transfer`) are built on the same plan and runner.

Every fit selects its epoch on the validation split; the tables report the test split unless
asked otherwise (see :func:`~mtlbook.analysis.seesaw.seesaw` for when the validation split is
the right one).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd
import torch

from .. import models as _models
from ..data import MultiTaskData, Schema, make_correlated_tasks, simulate_funnel
from ..models.base import MultiTaskModel
from ..weighting import Weighting, standard_strategies
from .intervals import format_interval, mean_interval, mtl_gain
from .runs import Factory, ModelSpec, PerTask, population_trainer, repeat_fits

__all__ = [
    "DATA_NAMES",
    "MODEL_NAMES",
    "CompareResult",
    "MetricSelection",
    "compare",
    "model_factory",
    "resolve_data",
    "resolve_models",
    "resolve_weightings",
]

#: ``None`` (every metric), one metric name, several, or task → metric name(s).
MetricSelection = None | str | Sequence[str] | Mapping[str, str | Sequence[str]]

# ---------------------------------------------------------------------------- name registries


class _ModelFactory:
    """``(schema, seed) → cls(schema, seed=seed, **options)``; see :func:`model_factory`."""

    def __init__(self, cls: type[MultiTaskModel], options: Mapping[str, Any]) -> None:
        self.cls, self.options = cls, dict(options)

    def __call__(self, schema: Schema, seed: int) -> MultiTaskModel:
        # Every concrete model takes ``seed=`` (the abstract base class does not).
        build: Callable[..., MultiTaskModel] = self.cls
        return build(schema, seed=seed, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"model_factory({self.cls.__name__}{options})"


def model_factory(cls: type[MultiTaskModel], **options: Any) -> Factory:
    """A ``(schema, seed) → model`` factory that builds ``cls(schema, seed=seed, **options)``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.runs import PerTask
        >>> from mtlbook.models import MMoE, SingleTask
        >>> models = {"single": PerTask(model_factory(SingleTask)),
        ...           "MMoE-8": model_factory(MMoE, n_experts=8)}
        >>> schema = mb.make_correlated_tasks(100, 0.5, n_features=4).schema
        >>> models["MMoE-8"](schema, 0).experts.n_experts
        8
    """
    if not (isinstance(cls, type) and issubclass(cls, MultiTaskModel)):
        raise TypeError(f"model_factory needs a model class, got {cls!r}")
    return _ModelFactory(cls, options)


#: Model name → what it builds (every model with its defaults). ``"single"`` is the fair
#: single-task baseline (a separate :class:`~mtlbook.models.SingleTask` per task, each with its
#: own best epoch); ``"single_joint"`` is one SingleTask with a network per task, trained and
#: selected jointly. Class names (``"MMoE"``, ``"SharedBottom"``) are accepted as well.
MODEL_NAMES: dict[str, str] = {
    "single": "PerTask(SingleTask): one model per task, each selected on its own validation loss",
    "single_joint": "SingleTask: a network per task, no sharing, one best epoch for all",
    "shared_bottom": "SharedBottom",
    "omoe": "OMoE",
    "mmoe": "MMoE",
    "dselect_k": "DSelectK",
    "cgc": "CGC",
    "ple": "PLE",
    "cross_stitch": "CrossStitch",
    "sluice": "Sluice",
    "soft_sharing": "SoftSharing",
    "esmm": "ESMM (binary CTR and CTCVR tasks, e.g. funnel click and purchase)",
    "aitm": "AITM (a sequence of binary tasks)",
}


def _model_spec(alias: str) -> ModelSpec:
    if alias == "single":
        return PerTask(model_factory(_models.SingleTask))
    if alias == "single_joint":
        return model_factory(_models.SingleTask)
    return model_factory(getattr(_models, MODEL_NAMES[alias].split()[0]))


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _lookup_model(name: str) -> ModelSpec:
    key = _normalise(name)
    by_class = {cls.lower(): cls for cls in _models.__all__}
    if key in MODEL_NAMES:
        return _model_spec(key)
    if key in by_class:
        return model_factory(getattr(_models, by_class[key]))
    raise ValueError(
        f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)} "
        f"(or a class name: {', '.join(_models.__all__)})"
    )


def resolve_models(models: Mapping[str, ModelSpec] | Iterable[str] | str) -> dict[str, ModelSpec]:
    """Name → factory (or :class:`~mtlbook.analysis.runs.PerTask`) from names or a mapping.

    A mapping passes through, except that string values are looked up too, so
    ``{"MMoE-8": model_factory(MMoE, n_experts=8), "baseline": "single"}`` works. Names are
    case-insensitive; ``-`` and ``_`` are the same. See :data:`MODEL_NAMES`.
    """
    if isinstance(models, str):
        models = [m for m in models.split(",") if m.strip()]
    if isinstance(models, Mapping):
        out = {str(k): _lookup_model(v) if isinstance(v, str) else v for k, v in models.items()}
    else:
        out = {}
        for name in models:
            if not isinstance(name, str):
                raise TypeError(
                    f"models must be names or a mapping name → factory, got "
                    f"{type(name).__name__} {name!r}"
                )
            out[name.strip()] = _lookup_model(name)
    if not out:
        raise ValueError(f"name at least one model; choose from {', '.join(MODEL_NAMES)}")
    for name, spec in out.items():
        if isinstance(spec, torch.nn.Module):
            raise TypeError(
                f"model {name!r} is a model object; pass a factory "
                "(schema, seed) → model instead, since every seed trains a fresh one, "
                "e.g. model_factory(MMoE, n_experts=8)"
            )
        if not (isinstance(spec, PerTask) or callable(spec)):
            raise TypeError(
                f"model {name!r} must be a (schema, seed) → model factory or a "
                f"PerTask, got {type(spec).__name__}"
            )
    return out


#: Data name → what it generates per seed, with the default size (``n_samples`` changes it).
DATA_NAMES: dict[str, str] = {
    "funnel": "simulate_funnel: click and purchase, 50,000 impressions, 1,000 users, 500 items",
    "funnel_dwell": "the funnel plus dwell_time (regression, defined on clicks only)",
    "correlated:P": "make_correlated_tasks: two regression tasks of correlation P in [-1, 1], "
    "5,000 samples, 100 features",
    "correlated-binary:P": "the same with both labels thresholded at their median (binary)",
}
_DEFAULT_SIZE = {"funnel": 50_000, "correlated": 5_000}


def resolve_data(
    data: MultiTaskData | Callable[[int], MultiTaskData] | str, n_samples: int | None = None
) -> Callable[[int], MultiTaskData]:
    """A ``seed → MultiTaskData`` function from a data set, a function or a name.

    Names (see :data:`DATA_NAMES`) draw fresh data for every seed. A fixed data set is used
    for every seed, each seed with its own random split. ``n_samples`` sets the size of named
    data (default: 50,000 impressions for the funnel, 5,000 samples for correlated tasks).
    """
    if n_samples is not None and (not isinstance(n_samples, int | np.integer) or n_samples < 10):
        raise ValueError(f"n_samples must be an integer ≥ 10, got {n_samples!r}")
    if isinstance(data, MultiTaskData):
        if n_samples is not None:
            raise ValueError("n_samples only sizes named data; subset the data set instead")
        return lambda seed: data
    if callable(data):
        if n_samples is not None:
            raise ValueError("n_samples only sizes named data, not a data function")
        return data
    if not isinstance(data, str):
        raise TypeError(
            f"data must be a MultiTaskData, a seed → MultiTaskData function or a "
            f"name, got {type(data).__name__}"
        )
    name, _, arg = data.partition(":")
    name, arg = _normalise(name), arg.strip()  # keep the sign of "correlated:-0.5"
    valid = ", ".join(DATA_NAMES)
    if name in ("funnel", "funnel_dwell"):
        if arg:
            raise ValueError(f"data {data!r} takes no ':' argument; choose from {valid}")
        n = _DEFAULT_SIZE["funnel"] if n_samples is None else int(n_samples)
        dwell = name == "funnel_dwell"
        return lambda seed: simulate_funnel(
            n, seed=seed, n_users=1_000, n_items=500, with_dwell_time=dwell
        )
    if name in ("correlated", "correlated_binary"):
        try:
            p = float(arg)
        except ValueError:
            p = math.nan
        if not -1.0 <= p <= 1.0:
            raise ValueError(
                f"data {data!r} needs a correlation in [-1, 1] after the colon, "
                f"e.g. '{name.replace('_', '-')}:0.5'; choose from {valid}"
            )
        n = _DEFAULT_SIZE["correlated"] if n_samples is None else int(n_samples)
        kind = "binary" if name == "correlated_binary" else "regression"
        return lambda seed: make_correlated_tasks(n, p, task_type=kind, seed=seed)
    raise ValueError(
        f"unknown data {data!r}; choose from {valid} "
        "(or pass a MultiTaskData or a seed → MultiTaskData function)"
    )


@overload
def resolve_weightings(weightings: None) -> None: ...
@overload
def resolve_weightings(
    weightings: Mapping[str, Callable[[], Weighting]] | Iterable[str] | str,
) -> dict[str, Callable[[], Weighting]]: ...
def resolve_weightings(
    weightings: Mapping[str, Callable[[], Weighting]] | Iterable[str] | str | None,
) -> dict[str, Callable[[], Weighting]] | None:
    """Name → strategy factory from names of :func:`~mtlbook.weighting.standard_strategies`
    or a mapping (which passes through); ``None`` means equal weights only."""
    if weightings is None:
        return None
    if isinstance(weightings, str):
        weightings = [w for w in weightings.split(",") if w.strip()]
    if isinstance(weightings, Mapping):
        out = dict(weightings)
        bad = [k for k, v in out.items() if isinstance(v, Weighting) or not callable(v)]
        if bad:
            raise TypeError(
                f"weighting(s) {bad} must be factories () → Weighting "
                "(a class or a lambda), not objects: strategies keep state"
            )
    else:
        known = standard_strategies()
        out = {}
        for name in weightings:
            key = _normalise(name)
            if key in ("fixed", "scheduled"):
                raise ValueError(
                    f"weighting {name!r} needs its settings; pass a mapping, e.g. "
                    "weightings={'fixed': lambda: FixedWeights({'click': 1.0, "
                    "'purchase': 5.0})}"
                )
            if key not in known:
                raise ValueError(f"unknown weighting {name!r}; choose from {', '.join(known)}")
            out[key] = known[key]
    if not out:
        raise ValueError("name at least one weighting, or pass None for equal weights")
    return out


# ---------------------------------------------------------------------------- metric helpers


def _select_metrics(frame: pd.DataFrame, metrics: MetricSelection) -> pd.DataFrame:
    """Keep the rows of the chosen metrics (see :data:`MetricSelection`)."""
    if metrics is None:
        return frame
    available = sorted(set(frame["metric"]))
    if isinstance(metrics, Mapping):
        tasks = set(frame["task"])
        unknown = sorted(set(metrics) - tasks)
        if unknown:
            raise ValueError(f"metrics name unknown task(s) {unknown}; tasks are {sorted(tasks)}")
        pairs = [(t, m) for t, ms in metrics.items() for m in ([ms] if isinstance(ms, str) else ms)]
        wanted = pd.DataFrame(pairs, columns=["task", "metric"])
        missing = wanted.merge(
            frame[["task", "metric"]].drop_duplicates(), how="left", indicator=True
        )
        missing = missing[missing["_merge"] == "left_only"]
        if len(missing):
            pairs = list(zip(missing["task"], missing["metric"], strict=True))
            raise ValueError(f"metric(s) {pairs} were not computed; available: {available}")
        return frame.merge(wanted, on=["task", "metric"])
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; available: {available}")
    return frame[frame["metric"].isin(names)]


def _primary_metrics(frame: pd.DataFrame) -> dict[str, str]:
    """Task → its headline metric: AUC for binary tasks, MSE for regression tasks."""
    out = {}
    for task, metrics in frame.groupby("task", sort=False)["metric"]:
        have = set(metrics)
        out[task] = next((m for m in ("auc", "mse") if m in have), sorted(have)[0])
    return out


def _write_csv_atomically(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write to a temporary file in the target folder, then rename it over ``path``: a reader
    never sees a half-written file, and a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            frame.to_csv(handle, index=False)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------- compare


@dataclass
class CompareResult:
    """What :func:`compare` returns.

    Attributes:
        raw: the tidy per-seed frame of :func:`~mtlbook.analysis.runs.repeat_fits` (columns
            ``model, weighting, seed, task, metric, value, best_epoch, epochs_run,
            train_seconds``), every metric included.
        confidence: the level of the intervals.
        metrics: the metrics :meth:`table` and :meth:`gains` keep (``None``: all).
        split: the split the metrics were measured on (``"test"`` unless asked otherwise).
    """

    raw: pd.DataFrame
    confidence: float = 0.95
    metrics: MetricSelection = None
    split: str = "test"

    def table(self, *, wide: bool = False, digits: int = 4) -> pd.DataFrame:
        """Mean over seeds with a Student-t interval per configuration × task × metric.

        Args:
            wide: one row per configuration ``(model, weighting)`` and one column per
                ``(task, metric)`` holding ``"mean [lo, hi]"`` strings, for printing.
            digits: significant digits of the formatted column.

        Returns:
            pandas.DataFrame:
            Long form: columns ``model, weighting, task, metric, mean, lo, hi, n, formatted``
            (``formatted`` is ``"mean [lo, hi]"``; just the mean for a single seed).
        """
        rows = _select_metrics(self.raw, self.metrics)
        out = mean_interval(
            rows, ["model", "weighting", "task", "metric"], confidence=self.confidence
        )
        out["formatted"] = [
            format_interval(m, lo, hi, digits, notation="g")
            for m, lo, hi in zip(out["mean"], out["lo"], out["hi"], strict=True)
        ]
        out = out[["model", "weighting", "task", "metric", "mean", "lo", "hi", "n", "formatted"]]
        if not wide:
            return out
        wide_table = out.pivot(
            index=["model", "weighting"], columns=["task", "metric"], values="formatted"
        )
        configs = pd.MultiIndex.from_frame(out[["model", "weighting"]].drop_duplicates())
        columns = pd.MultiIndex.from_frame(out[["task", "metric"]].drop_duplicates())
        return wide_table.reindex(index=configs, columns=columns)

    def gains(self, baseline: str = "single", *, digits: int = 3) -> pd.DataFrame:
        """Paired relative gain (%) of every configuration over ``baseline`` (a model name),
        within each weighting, with the PLE sign convention: positive = better, for AUC and
        MSE alike (see :func:`~mtlbook.analysis.intervals.mtl_gain`).

        Returns:
            Columns ``weighting, model, task, metric, mean, std, n, lo, hi, formatted``.
        """
        rows = _select_metrics(self.raw, self.metrics)
        out = mtl_gain(rows, baseline, by=["weighting"], confidence=self.confidence)
        out["formatted"] = [
            format_interval(m, lo, hi, digits, sign=True, notation="g")
            for m, lo, hi in zip(out["mean"], out["lo"], out["hi"], strict=True)
        ]
        return out

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write :attr:`raw` (every seed and metric, so nothing is lost) to ``path`` atomically:
        into a temporary file next to it, then renamed over it. Returns the path.
        :meth:`read_csv` reads it back."""
        return _write_csv_atomically(self.raw, path)

    @classmethod
    def read_csv(cls, path: str | os.PathLike, **options: Any) -> CompareResult:
        """A result from a file written by :meth:`to_csv` (``options``: the other fields)."""
        raw = pd.read_csv(path)
        missing = [
            c
            for c in ("model", "weighting", "seed", "task", "metric", "value")
            if c not in raw.columns
        ]
        if missing:
            raise ValueError(f"{path} lacks column(s) {missing}; was it written by to_csv?")
        return cls(raw=raw, **options)


class _FirstSeedCache:
    """``make_data`` that hands out an already generated data set for the first seed once."""

    def __init__(self, make_data: Callable[[int], MultiTaskData], seed: int) -> None:
        self.make_data, self.seed = make_data, seed
        self.first: MultiTaskData | None = make_data(seed)
        if not isinstance(self.first, MultiTaskData):
            raise TypeError(
                f"the data function returned {type(self.first).__name__}, not a MultiTaskData"
            )

    def __call__(self, seed: int) -> MultiTaskData:
        if seed == self.seed and self.first is not None:
            data, self.first = self.first, None
            return data
        return self.make_data(seed)


def _check_models_fit(models: Mapping[str, ModelSpec], data: MultiTaskData) -> None:
    """Build every model once on the data's schema, so that a model that cannot be trained on
    these tasks (ESMM on regression tasks, say) fails now and not after an hour of training."""
    for name, spec in models.items():
        schemas = (
            [data.select_tasks([t]).schema for t in data.task_names]
            if isinstance(spec, PerTask)
            else [data.schema]
        )
        make = spec.factory if isinstance(spec, PerTask) else spec
        for schema in schemas:
            try:
                make(schema, 0)
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"model {name!r} cannot be built for tasks "
                    f"{[(t.name, t.kind) for t in schema.tasks]}: {err}"
                ) from err


def _seed_list(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, int | np.integer):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive number of seeds or a list, got {seeds}")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds must be a non-empty list of distinct seeds, got {out}")
    return out


@dataclass
class _Plan:
    models: dict[str, ModelSpec]
    make_data: _FirstSeedCache
    weightings: dict[str, Callable[[], Weighting]] | None
    seeds: list[int]


def _metric_names(data: MultiTaskData) -> dict[str, list[str]]:
    """Task → the metrics :func:`~mtlbook.evaluate` computes for it on ``data``."""
    binary = ["auc", "logloss"] + (["gauc"] if data.groups is not None else [])
    return {t.name: binary if t.kind == "binary" else ["mse", "mae"] for t in data.schema.tasks}


def _check_metric_selection(metrics: MetricSelection, data: MultiTaskData) -> None:
    """Check metric names against what will be computed (the same check as after training)."""
    if metrics is None:
        return
    rows = [(t, m) for t, ms in _metric_names(data).items() for m in ms]
    _select_metrics(pd.DataFrame(rows, columns=["task", "metric"]), metrics)


def _plan(models, data, weightings, seeds, n_samples, metrics=None) -> _Plan:
    """Resolve every name and check that the models and metrics suit the data, before any
    training (the first seed's data are generated here and reused)."""
    resolved = resolve_models(models)
    strategies = resolve_weightings(weightings)
    seed_list = _seed_list(seeds)
    make_data = _FirstSeedCache(resolve_data(data, n_samples), seed_list[0])
    first = make_data.first
    assert first is not None  # generated and checked by _FirstSeedCache, not handed out yet
    _check_models_fit(resolved, first)
    _check_metric_selection(metrics, first)
    return _Plan(resolved, make_data, strategies, seed_list)


def compare(
    models: Mapping[str, ModelSpec | str] | Iterable[str] | str,
    data: MultiTaskData | Callable[[int], MultiTaskData] | str,
    *,
    weightings: Mapping[str, Callable[[], Weighting]] | Iterable[str] | str | None = None,
    seeds: int | Iterable[int] = 5,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    metrics: MetricSelection = None,
    confidence: float = 0.95,
    csv: str | os.PathLike | None = None,
    progress: bool = False,
    n_samples: int | None = None,
    **fit_kwargs: Any,
) -> CompareResult:
    """Train every model under every weighting on every seed, and tabulate.

    Each seed draws its own data (for named data or a data function; a fixed data set gets a
    new random split per seed), its own split, initial weights and batch order; all
    configurations of one seed share them, so differences between configurations are paired.
    Each fit selects its best epoch on the validation split; the table reports the test split.

    Args:
        models: names (``["single", "shared_bottom", "mmoe"]`` or ``"single,mmoe"``; see
            :data:`MODEL_NAMES`) or a mapping name → ``(schema, seed) → model`` factory,
            :class:`~mtlbook.analysis.runs.PerTask` or model name.
        data: a :class:`~mtlbook.data.MultiTaskData`, a ``seed → MultiTaskData`` function or a
            name such as ``"funnel"`` or ``"correlated:0.5"`` (see :data:`DATA_NAMES`).
        weightings: ``None`` (equal weights), names of
            :func:`~mtlbook.weighting.standard_strategies` (``["equal", "uncertainty"]``) or a
            mapping name → ``() → Weighting``.
        seeds: the number of seeds (``5`` means seeds 0–4) or the seeds themselves.
        fractions: train / valid / test fractions.
        metrics: the metrics the table and the gains keep: ``None`` (all), ``"auc"``,
            ``["auc", "mse"]`` or ``{"click": "auc", "dwell_time": "mse"}``.
        confidence: level of the Student-t intervals over seeds.
        csv: if given, the per-seed results are written there (atomically; see
            :meth:`CompareResult.to_csv`).
        progress: show a progress bar over the fits.
        n_samples: size of named data (default in :data:`DATA_NAMES`).
        **fit_kwargs: passed to :func:`~mtlbook.analysis.runs.repeat_fits` and on to
            :func:`mtlbook.fit` (``epochs``, ``lr``, ``batch_size``, ``early_stopping``,
            ``monitor``, ``transform_train``, ...). The seeds of each configuration train
            together as one vectorised population where the model and weighting allow it
            (:func:`~mtlbook.analysis.runs.population_trainer`, the default ``trainer``);
            ``trainer=mtlbook.analysis.runs.train_jobs`` trains every fit separately.

    Returns:
        A :class:`CompareResult`; ``result.table()`` is the summary, ``result.gains("single")``
        the paired gains over the single-task baseline.

    Raises:
        ValueError: for an unknown model, weighting, data or metric name (the message lists
            the valid ones), or a model that cannot be built for the data's tasks.

    Example:
        >>> from mtlbook.analysis.compare import compare
        >>> result = compare(["single", "shared_bottom", "mmoe"], "correlated:0.5", seeds=3,
        ...                  n_samples=600, epochs=3)
        >>> sorted(result.raw["model"].unique())
        ['mmoe', 'shared_bottom', 'single']
        >>> table = result.table(wide=True)  # model × (task, metric): mean [interval]
        >>> gains = result.gains("single")  # paired gains over the single-task models
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    plan = _plan(models, data, weightings, seeds, n_samples, metrics)
    return _run(
        plan,
        fractions=fractions,
        metrics=metrics,
        confidence=confidence,
        csv=csv,
        progress=progress,
        **fit_kwargs,
    )


def _vectorised(fit_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``fit_kwargs`` with the vectorised multi-seed trainer unless another one is given."""
    return {"trainer": population_trainer, **fit_kwargs}


def _run(
    plan: _Plan, *, fractions, metrics, confidence, csv, progress, **fit_kwargs
) -> CompareResult:
    fit_kwargs = _vectorised(fit_kwargs)
    raw = repeat_fits(
        plan.make_data,
        plan.models,
        plan.seeds,
        fractions=fractions,
        weightings=plan.weightings,
        progress=progress,
        **fit_kwargs,
    )
    result = CompareResult(
        raw=raw, confidence=confidence, metrics=metrics, split=fit_kwargs.get("split", "test")
    )
    result.table()  # check the metric selection now, not when the reader first asks
    if csv is not None:
        result.to_csv(csv)
    return result
