"""The comparison harness: run configurations over seeds and tabulate, plus two diagnostics.

:func:`compare` is the one place where "run these models (× these loss weightings) over these
seeds and tabulate" lives; models, weightings and data may be given by name (``"mmoe"``,
``"uncertainty"``, ``"funnel"``) or as factories. It returns a :class:`CompareResult`: the
tidy per-seed frame of :func:`~mtlbook.experiments.repeat_fits` plus a summary table with
Student-t intervals and paired MTL gains. ``python -m mtlbook compare ...`` is its command
line.

Two diagnostics of chapter 12.3–12.4 are built on it:

* :func:`seesaw` sweeps architectures and/or task-loss weight ratios and collects both tasks'
  metrics; :func:`plot_seesaw` draws task A against task B with single-task crosshairs and the
  Pareto front (:func:`pareto_front`), after Figure 1 of the PLE paper (Tang et al., RecSys
  2020);
* :func:`negative_transfer` trains a multi-task model and the single-task baseline on paired
  data over several seeds and gives, per task, the paired gain with its interval and a verdict
  (:func:`summarise_transfer` does the arithmetic on any results frame).

Every fit selects its epoch on the validation split; the tables report the test split unless
asked otherwise (see :func:`seesaw` for when the validation split is the right one).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import models as _models
from .data import MultiTaskData, Schema, make_correlated_tasks, simulate_funnel
from .experiments import PerTask, mean_interval, mtl_gain, repeat_fits
from .metrics import LOWER_IS_BETTER
from .models.base import MultiTaskModel
from .weighting import FixedWeights, Weighting, standard_strategies

if TYPE_CHECKING:  # matplotlib is imported by the plot functions only: the CLI never needs it
    import matplotlib.pyplot as plt

__all__ = [
    "DATA_NAMES",
    "MODEL_NAMES",
    "CompareResult",
    "compare",
    "model_factory",
    "negative_transfer",
    "pareto_front",
    "plot_negative_transfer",
    "plot_seesaw",
    "resolve_data",
    "resolve_models",
    "resolve_weightings",
    "seesaw",
    "seesaw_table",
    "summarise_transfer",
]

Factory = Callable[[Schema, int], MultiTaskModel]
ModelSpec = Factory | PerTask
#: ``None`` (every metric), one metric name, several, or task → metric name(s).
MetricSelection = None | str | Sequence[str] | Mapping[str, str | Sequence[str]]

# ---------------------------------------------------------------------------- name registries


class _ModelFactory:
    """``(schema, seed) → cls(schema, seed=seed, **options)``; see :func:`model_factory`."""

    def __init__(self, cls: type[MultiTaskModel], options: Mapping[str, Any]) -> None:
        self.cls, self.options = cls, dict(options)

    def __call__(self, schema: Schema, seed: int) -> MultiTaskModel:
        return self.cls(schema, seed=seed, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"model_factory({self.cls.__name__}{options})"


def model_factory(cls: type[MultiTaskModel], **options: Any) -> Factory:
    """A ``(schema, seed) → model`` factory that builds ``cls(schema, seed=seed, **options)``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.experiments import PerTask
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
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)} "
                     f"(or a class name: {', '.join(_models.__all__)})")


def resolve_models(models: Mapping[str, ModelSpec] | Iterable[str] | str) -> dict[str, ModelSpec]:
    """Name → factory (or :class:`~mtlbook.experiments.PerTask`) from names or a mapping.

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
                raise TypeError(f"models must be names or a mapping name → factory, got "
                                f"{type(name).__name__} {name!r}")
            out[name.strip()] = _lookup_model(name)
    if not out:
        raise ValueError(f"name at least one model; choose from {', '.join(MODEL_NAMES)}")
    for name, spec in out.items():
        if isinstance(spec, torch.nn.Module):
            raise TypeError(f"model {name!r} is a model object; pass a factory "
                            "(schema, seed) → model instead, since every seed trains a fresh one, "
                            "e.g. model_factory(MMoE, n_experts=8)")
        if not (isinstance(spec, PerTask) or callable(spec)):
            raise TypeError(f"model {name!r} must be a (schema, seed) → model factory or a "
                            f"PerTask, got {type(spec).__name__}")
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


def resolve_data(data: MultiTaskData | Callable[[int], MultiTaskData] | str,
                 n_samples: int | None = None) -> Callable[[int], MultiTaskData]:
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
        raise TypeError(f"data must be a MultiTaskData, a seed → MultiTaskData function or a "
                        f"name, got {type(data).__name__}")
    name, _, arg = data.partition(":")
    name, arg = _normalise(name), arg.strip()  # keep the sign of "correlated:-0.5"
    valid = ", ".join(DATA_NAMES)
    if name in ("funnel", "funnel_dwell"):
        if arg:
            raise ValueError(f"data {data!r} takes no ':' argument; choose from {valid}")
        n = _DEFAULT_SIZE["funnel"] if n_samples is None else int(n_samples)
        dwell = name == "funnel_dwell"
        return lambda seed: simulate_funnel(n, seed=seed, n_users=1_000, n_items=500,
                                            with_dwell_time=dwell)
    if name in ("correlated", "correlated_binary"):
        try:
            p = float(arg)
        except ValueError:
            p = math.nan
        if not -1.0 <= p <= 1.0:
            raise ValueError(f"data {data!r} needs a correlation in [-1, 1] after the colon, "
                             f"e.g. '{name.replace('_', '-')}:0.5'; choose from {valid}")
        n = _DEFAULT_SIZE["correlated"] if n_samples is None else int(n_samples)
        kind = "binary" if name == "correlated_binary" else "regression"
        return lambda seed: make_correlated_tasks(n, p, task_type=kind, seed=seed)
    raise ValueError(f"unknown data {data!r}; choose from {valid} "
                     "(or pass a MultiTaskData or a seed → MultiTaskData function)")


def resolve_weightings(weightings: Mapping[str, Callable[[], Weighting]] | Iterable[str] | str
                       | None) -> dict[str, Callable[[], Weighting]] | None:
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
            raise TypeError(f"weighting(s) {bad} must be factories () → Weighting "
                            "(a class or a lambda), not objects: strategies keep state")
    else:
        known = standard_strategies()
        out = {}
        for name in weightings:
            key = _normalise(name)
            if key in ("fixed", "scheduled"):
                raise ValueError(f"weighting {name!r} needs its settings; pass a mapping, e.g. "
                                 "weightings={'fixed': lambda: FixedWeights({'click': 1.0, "
                                 "'purchase': 5.0})}")
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
        pairs = [(t, m) for t, ms in metrics.items()
                 for m in ([ms] if isinstance(ms, str) else ms)]
        wanted = pd.DataFrame(pairs, columns=["task", "metric"])
        missing = wanted.merge(frame[["task", "metric"]].drop_duplicates(), how="left",
                               indicator=True)
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


def _fmt(mean: float, lo: float, hi: float, digits: int = 4, sign: bool = False) -> str:
    spec = f"{'+' if sign else ''}.{digits}g"
    if np.isnan(lo):
        return format(mean, spec)
    return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"


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
        raw: the tidy per-seed frame of :func:`~mtlbook.experiments.repeat_fits` (columns
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
        out = mean_interval(rows, ["model", "weighting", "task", "metric"],
                            confidence=self.confidence)
        out["formatted"] = [_fmt(m, lo, hi, digits)
                            for m, lo, hi in zip(out["mean"], out["lo"], out["hi"], strict=True)]
        out = out[["model", "weighting", "task", "metric", "mean", "lo", "hi", "n", "formatted"]]
        if not wide:
            return out
        wide_table = out.pivot(index=["model", "weighting"], columns=["task", "metric"],
                               values="formatted")
        configs = pd.MultiIndex.from_frame(out[["model", "weighting"]].drop_duplicates())
        columns = pd.MultiIndex.from_frame(out[["task", "metric"]].drop_duplicates())
        return wide_table.reindex(index=configs, columns=columns)

    def gains(self, baseline: str = "single", *, digits: int = 3) -> pd.DataFrame:
        """Paired relative gain (%) of every configuration over ``baseline`` (a model name),
        within each weighting, with the PLE sign convention: positive = better, for AUC and
        MSE alike (see :func:`~mtlbook.experiments.mtl_gain`).

        Returns:
            Columns ``weighting, model, task, metric, mean, std, n, lo, hi, formatted``.
        """
        rows = _select_metrics(self.raw, self.metrics)
        out = mtl_gain(rows, baseline, by=["weighting"], confidence=self.confidence)
        out["formatted"] = [_fmt(m, lo, hi, digits, sign=True)
                            for m, lo, hi in zip(out["mean"], out["lo"], out["hi"], strict=True)]
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
        missing = [c for c in ("model", "weighting", "seed", "task", "metric", "value")
                   if c not in raw.columns]
        if missing:
            raise ValueError(f"{path} lacks column(s) {missing}; was it written by to_csv?")
        return cls(raw=raw, **options)


class _FirstSeedCache:
    """``make_data`` that hands out an already generated data set for the first seed once."""

    def __init__(self, make_data: Callable[[int], MultiTaskData], seed: int) -> None:
        self.make_data, self.seed = make_data, seed
        self.first: MultiTaskData | None = make_data(seed)
        if not isinstance(self.first, MultiTaskData):
            raise TypeError(f"the data function returned {type(self.first).__name__}, "
                            "not a MultiTaskData")

    def __call__(self, seed: int) -> MultiTaskData:
        if seed == self.seed and self.first is not None:
            data, self.first = self.first, None
            return data
        return self.make_data(seed)


def _check_models_fit(models: Mapping[str, ModelSpec], data: MultiTaskData) -> None:
    """Build every model once on the data's schema, so that a model that cannot be trained on
    these tasks (ESMM on regression tasks, say) fails now and not after an hour of training."""
    for name, spec in models.items():
        schemas = ([data.select_tasks([t]).schema for t in data.task_names]
                   if isinstance(spec, PerTask) else [data.schema])
        make = spec.factory if isinstance(spec, PerTask) else spec
        for schema in schemas:
            try:
                make(schema, 0)
            except (ValueError, TypeError) as err:
                raise ValueError(f"model {name!r} cannot be built for tasks "
                                 f"{[(t.name, t.kind) for t in schema.tasks]}: {err}") from err


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
    make_data: Callable[[int], MultiTaskData]
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
    _check_models_fit(resolved, make_data.first)
    _check_metric_selection(metrics, make_data.first)
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
            :class:`~mtlbook.experiments.PerTask` or model name.
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
        **fit_kwargs: passed to :func:`~mtlbook.experiments.repeat_fits` and on to
            :func:`mtlbook.fit` (``epochs``, ``lr``, ``batch_size``, ``early_stopping``,
            ``monitor``, ``transform_train``, ...). The seeds of each configuration train
            together as one vectorised population where the model and weighting allow it
            (:func:`~mtlbook.population.population_trainer`, the default ``trainer``);
            ``trainer=mtlbook.experiments.train_jobs`` trains every fit separately.

    Returns:
        A :class:`CompareResult`; ``result.table()`` is the summary, ``result.gains("single")``
        the paired gains over the single-task baseline.

    Raises:
        ValueError: for an unknown model, weighting, data or metric name (the message lists
            the valid ones), or a model that cannot be built for the data's tasks.

    Example:
        >>> from mtlbook.compare import compare
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
    return _run(plan, fractions=fractions, metrics=metrics, confidence=confidence, csv=csv,
                progress=progress, **fit_kwargs)


def _vectorised(fit_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``fit_kwargs`` with the vectorised multi-seed trainer unless another one is given."""
    from .population import population_trainer

    return {"trainer": population_trainer, **fit_kwargs}


def _run(plan: _Plan, *, fractions, metrics, confidence, csv, progress, **fit_kwargs
         ) -> CompareResult:
    fit_kwargs = _vectorised(fit_kwargs)
    raw = repeat_fits(plan.make_data, plan.models, plan.seeds, fractions=fractions,
                      weightings=plan.weightings, progress=progress, **fit_kwargs)
    result = CompareResult(raw=raw, confidence=confidence, metrics=metrics,
                           split=fit_kwargs.get("split", "test"))
    result.table()  # check the metric selection now, not when the reader first asks
    if csv is not None:
        result.to_csv(csv)
    return result


# ---------------------------------------------------------------------------- seesaw


def pareto_front(table: pd.DataFrame, maximize: Sequence[str] = (),
                 minimize: Sequence[str] = ()) -> pd.Series:
    """Which rows of ``table`` are not dominated: a boolean Series aligned with its index.

    Row ``q`` dominates row ``p`` when ``q`` is at least as good in every objective and
    strictly better in one. Rows with a missing objective are never on the front; identical
    rows do not dominate each other.

    Args:
        table: one row per configuration.
        maximize: columns where higher is better (AUC).
        minimize: columns where lower is better (MSE, log-loss).

    Example:
        >>> import pandas as pd
        >>> summary = pd.DataFrame({"click_auc": [0.70, 0.72, 0.69],
        ...                         "dwell_time_mse": [10.0, 12.0, 11.0]}, index=list("abc"))
        >>> pareto_front(summary, maximize=["click_auc"], minimize=["dwell_time_mse"]).tolist()
        [True, True, False]
    """
    maximize, minimize = list(maximize), list(minimize)
    if not maximize and not minimize:
        raise ValueError("name at least one objective column in maximize= or minimize=")
    missing = [c for c in maximize + minimize if c not in table.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the table; it has {list(table.columns)}")
    # Turn every objective into "higher is better".
    scores = np.column_stack([table[c].to_numpy(float) for c in maximize]
                             + [-table[c].to_numpy(float) for c in minimize])  # [rows, k]
    valid = ~np.isnan(scores).any(axis=1)
    s = np.where(valid[:, None], scores, -np.inf)
    at_least = (s[:, None, :] >= s[None, :, :]).all(axis=2)  # [q, p]: q ≥ p everywhere
    better = (s[:, None, :] > s[None, :, :]).any(axis=2)  # [q, p]: q > p somewhere
    dominated = ((at_least & better) & valid[:, None]).any(axis=0)  # [p]
    return pd.Series(valid & ~dominated, index=table.index, name="pareto")


def _ratio_label(task_a: str, task_b: str, ratio: float) -> str:
    return f"{task_a}:{task_b}={ratio:g}:1"


def seesaw(
    models: Mapping[str, ModelSpec | str] | Iterable[str] | str,
    data: MultiTaskData | Callable[[int], MultiTaskData] | str,
    *,
    ratios: Iterable[float] | None = None,
    tasks: Sequence[str] | None = None,
    metrics: Mapping[str, str] | Sequence[str] | None = None,
    baseline: str | None = "single",
    seeds: int | Iterable[int] = 5,
    split: str = "test",
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    n_samples: int | None = None,
    progress: bool = False,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Both tasks' metrics for several architectures and/or task-loss weight ratios.

    Every model in ``models`` is trained under equal weights or, with ``ratios``, once per
    ratio ``r`` with :class:`~mtlbook.weighting.FixedWeights` ``{task_a: r, task_b: 1}``
    (further tasks keep weight 1). The ``baseline`` (default: a separate single-task model
    per task) is trained once per seed on the same data and splits, so every comparison is
    paired by seed.

    Which split: every fit picks its epoch on the validation split, so the validation scores
    of that epoch are biased upwards — by a different amount for each configuration — while
    the test split has not been used for any choice. The default ``split="test"`` therefore
    reports the test split, as the seesaw figure of the PLE paper does. Use ``split="valid"``
    when the sweep itself is a choice (picking the weight ratio or the architecture to ship):
    choose on the validation scores, then report the chosen configuration's test scores once.

    Args:
        models: model names or a mapping, as in :func:`compare`.
        data: data, a data function or a name, as in :func:`compare`.
        ratios: weight ratios ``w_a / w_b`` to sweep (e.g. ``[0.25, 0.5, 1, 2, 4]``).
        tasks: the two tasks ``(task_a, task_b)``; default the data's first two.
        metrics: the metric of each task, ``{task: metric}`` or ``(metric_a, metric_b)``;
            default AUC for a binary task, MSE for a regression task.
        baseline: name of the reference model (see :data:`MODEL_NAMES`), or ``None``.
        seeds: the number of seeds or the seeds.
        split: ``"test"`` or ``"valid"`` (see above).
        fractions, n_samples, progress: as in :func:`compare`.
        **fit_kwargs: passed to :func:`~mtlbook.experiments.repeat_fits` and :func:`mtlbook.fit`;
            as in :func:`compare`, the seeds train as vectorised populations by default.

    Returns:
        Tidy DataFrame with one row per configuration × seed × task and columns
        ``configuration, model, weighting, ratio, seed, task, metric, value, split``
        (``ratio`` is NaN for equal weights and for the baseline).

    Example:
        >>> from mtlbook.compare import plot_seesaw, seesaw
        >>> frame = seesaw(["shared_bottom", "mmoe"], "correlated:0.2", seeds=2,
        ...                n_samples=600, epochs=3)
        >>> sorted(frame["configuration"].unique())
        ['mmoe', 'shared_bottom', 'single']
        >>> swept = seesaw(["shared_bottom"], "correlated:0.2", ratios=[0.5, 2], seeds=2,
        ...                n_samples=600, epochs=3)
        >>> sorted(swept["configuration"].unique())
        ['shared_bottom task1:task2=0.5:1', 'shared_bottom task1:task2=2:1', 'single']
        >>> fig = plot_seesaw(frame)  # task1's MSE on x, task2's on y, single-task crosshairs
    """
    if "weightings" in fit_kwargs:
        raise ValueError("seesaw sweeps FixedWeights ratios; pass ratios=[...], not weightings")
    plan = _plan(models, data, None, seeds, n_samples)
    first = plan.make_data.first
    tasks = list(first.task_names[:2]) if tasks is None else list(tasks)
    if len(tasks) != 2 or len(set(tasks)) != 2:
        raise ValueError(f"tasks must name two different tasks, got {tasks}")
    unknown = [t for t in tasks if t not in first.task_names]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the data's tasks are "
                         f"{list(first.task_names)}")
    task_a, task_b = tasks
    computed = pd.DataFrame([(t, m) for t, ms in _metric_names(first).items() for m in ms],
                            columns=["task", "metric"])
    chosen = _seesaw_metrics(computed, tasks, metrics)  # checked now, used after training
    swept = {k: v for k, v in plan.models.items() if k != baseline}
    if not swept:
        raise ValueError(f"models holds only the baseline {baseline!r}; add the models to sweep")
    weightings = None
    if ratios is not None:
        ratios = [float(r) for r in ratios]
        if not ratios or any(not (r > 0 and math.isfinite(r)) for r in ratios):
            raise ValueError(f"ratios must be positive finite numbers, got {ratios}")
        weightings = {}
        for r in ratios:
            weights = {t: 1.0 for t in first.task_names} | {task_a: r}
            weightings[_ratio_label(task_a, task_b, r)] = (
                lambda weights=weights: FixedWeights(weights))
    frames = []
    cache: dict[int, MultiTaskData] = {}
    fit_kwargs = _vectorised(fit_kwargs)

    def make_data(seed: int) -> MultiTaskData:  # both runs below see the same data per seed
        if seed not in cache:
            cache[seed] = plan.make_data(seed)
        return cache[seed]

    if baseline is not None:
        base = plan.models.get(baseline) or resolve_models([baseline])[baseline]
        _check_models_fit({baseline: base}, first)
        frames.append(repeat_fits(make_data, {baseline: base}, plan.seeds, fractions=fractions,
                                  split=split, progress=progress, **fit_kwargs)
                      .assign(configuration=baseline, ratio=np.nan))
    raw = repeat_fits(make_data, swept, plan.seeds, fractions=fractions, weightings=weightings,
                      split=split, progress=progress, **fit_kwargs)
    label_ratio = {_ratio_label(task_a, task_b, r): r for r in (ratios or [])}
    raw["ratio"] = raw["weighting"].map(label_ratio).astype(float)
    raw["configuration"] = (raw["model"] if ratios is None
                            else raw["model"] + " " + raw["weighting"])
    frames.append(raw)
    out = pd.concat(frames, ignore_index=True)
    out = out.merge(pd.DataFrame(list(chosen.items()), columns=["task", "metric"]))
    out["split"] = split
    return out[["configuration", "model", "weighting", "ratio", "seed", "task", "metric",
                "value", "split"]].reset_index(drop=True)


def _seesaw_metrics(frame: pd.DataFrame, tasks: Sequence[str],
                    metrics: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """Task → metric for the two tasks of a seesaw plot, checked against the frame."""
    primary = _primary_metrics(frame[frame["task"].isin(tasks)])
    if metrics is None:
        chosen = {t: primary.get(t) for t in tasks}
    elif isinstance(metrics, Mapping):
        chosen = {t: metrics.get(t) or primary.get(t) for t in tasks}
    else:
        metrics = list(metrics)
        if len(metrics) != 2:
            raise ValueError(f"give one metric per task, e.g. ('auc', 'mse'), got {metrics}")
        chosen = dict(zip(tasks, metrics, strict=True))
    for task, metric in chosen.items():
        have = sorted(set(frame.loc[frame["task"] == task, "metric"]))
        if metric not in have:
            raise ValueError(f"task {task!r} has no metric {metric!r}; it has {have}")
    return chosen


def _configurations(frame: pd.DataFrame) -> pd.Series:
    """The configuration label of each row: the column if present, else model (+ weighting
    when there are several)."""
    if "configuration" in frame.columns:
        return frame["configuration"].astype(str)
    if "weighting" in frame.columns and frame["weighting"].nunique() > 1:
        return frame["model"].astype(str) + " " + frame["weighting"].astype(str)
    return frame["model"].astype(str)


def seesaw_table(frame: pd.DataFrame, task_a: str | None = None, task_b: str | None = None,
                 metric_a: str | None = None, metric_b: str | None = None,
                 baseline: str | None = "single", confidence: float = 0.95) -> pd.DataFrame:
    """One row per configuration: both tasks' means and intervals over seeds, and flags.

    ``frame`` is the output of :func:`seesaw` (or any frame with columns ``model, seed, task,
    metric, value``, e.g. ``compare(...).raw``). The columns are ``configuration, n``, then
    ``{task}_{metric}``, ``..._lo``, ``..._hi`` for task A and task B, ``pareto`` (not
    dominated on the two metrics, each in its own direction: AUC higher is better, MSE lower)
    and ``beats_baseline`` (better than the baseline's mean on both tasks; NaN without one).
    """
    tasks = list(dict.fromkeys(frame["task"]))
    task_a = tasks[0] if task_a is None else task_a
    task_b = next(t for t in tasks if t != task_a) if task_b is None else task_b
    if task_a == task_b:
        raise ValueError(f"task_a and task_b must differ, got {task_a!r} twice")
    chosen = _seesaw_metrics(frame, [task_a, task_b],
                             None if metric_a is None and metric_b is None else
                             {task_a: metric_a, task_b: metric_b})
    rows = frame.assign(configuration=_configurations(frame)).merge(
        pd.DataFrame(list(chosen.items()), columns=["task", "metric"]))
    summary = mean_interval(rows, ["configuration", "task"], confidence=confidence)
    configs = list(dict.fromkeys(rows["configuration"]))
    out = pd.DataFrame({"configuration": configs})
    out["n"] = summary.groupby("configuration")["n"].min().reindex(configs).to_numpy()
    columns, objectives = {}, {"maximize": [], "minimize": []}
    for task, metric in chosen.items():
        s = summary[summary["task"] == task].set_index("configuration").reindex(configs)
        col = columns[task] = f"{task}_{metric}"
        out[col], out[f"{col}_lo"], out[f"{col}_hi"] = (s["mean"].to_numpy(), s["lo"].to_numpy(),
                                                         s["hi"].to_numpy())
        objectives["minimize" if metric in LOWER_IS_BETTER else "maximize"].append(col)
    out["pareto"] = pareto_front(out, **objectives)
    beats = pd.array([pd.NA] * len(out), dtype="boolean")
    if baseline is not None and baseline in configs:
        ref = out.set_index("configuration").loc[baseline]
        better = np.ones(len(out), dtype=bool)
        for task, metric in chosen.items():
            col = columns[task]
            better &= (out[col] < ref[col] if metric in LOWER_IS_BETTER
                       else out[col] > ref[col]).to_numpy()
        beats = pd.array(better, dtype="boolean")
        beats[(out["configuration"] == baseline).to_numpy()] = pd.NA
    out["beats_baseline"] = beats
    out.attrs["tasks"] = {"a": (task_a, chosen[task_a]), "b": (task_b, chosen[task_b])}
    return out


def plot_seesaw(frame: pd.DataFrame, task_a: str | None = None, task_b: str | None = None,
                metric_a: str | None = None, metric_b: str | None = None,
                baseline: str | None = "single", confidence: float = 0.95,
                ax: plt.Axes | None = None) -> plt.Figure:
    """Task A's metric against task B's, one point per configuration, after the PLE paper.

    Error bars in both directions are the Student-t intervals over seeds; dashed crosshairs
    mark the baseline's means (single-task by default), so the quadrant of configurations
    that beat it on both tasks is shaded; the Pareto front (configurations no other one beats
    on both metrics) is joined by a line and drawn with filled markers. An axis whose metric
    is lower-better (MSE) is reversed, so up and right always mean better.

    Args:
        frame: output of :func:`seesaw`, or any frame accepted by :func:`seesaw_table`.
        task_a, task_b: the tasks on the x and y axes (default: the first two).
        metric_a, metric_b: their metrics (default: each task's only metric in a
            :func:`seesaw` frame; AUC or MSE otherwise).
        baseline: the configuration drawn as crosshairs (``None``: none).
        confidence: interval level.
        ax: draw into these axes instead of a new figure.

    Example:
        >>> from mtlbook.compare import plot_seesaw, seesaw
        >>> frame = seesaw(["shared_bottom", "mmoe"], "correlated:0.2", seeds=2,
        ...                n_samples=600, epochs=3)
        >>> fig = plot_seesaw(frame)
        >>> fig.axes[0].get_xlabel()
        'task1 MSE (test; ↓ better, axis reversed)'
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    table = seesaw_table(frame, task_a, task_b, metric_a, metric_b, baseline, confidence)
    (task_a, metric_a), (task_b, metric_b) = table.attrs["tasks"]["a"], table.attrs["tasks"]["b"]
    x, y = f"{task_a}_{metric_a}", f"{task_b}_{metric_b}"
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.0))
    else:
        fig = ax.figure
    has_base = baseline is not None and baseline in set(table["configuration"])
    colors = plt.get_cmap("tab10")
    for i, row in table.reset_index(drop=True).iterrows():
        is_base = has_base and row["configuration"] == baseline
        color = "#444444" if is_base else colors(i % 10)
        xerr = np.nan_to_num([[row[x] - row[f"{x}_lo"]], [row[f"{x}_hi"] - row[x]]])
        yerr = np.nan_to_num([[row[y] - row[f"{y}_lo"]], [row[f"{y}_hi"] - row[y]]])
        ax.errorbar(row[x], row[y], xerr=xerr, yerr=yerr, fmt="s" if is_base else "o",
                    color=color, ecolor=to_rgba(color, 0.45), elinewidth=1, capsize=2,
                    markersize=7, markeredgecolor="white", markeredgewidth=0.8, zorder=3)
        ax.annotate(row["configuration"], (row[x], row[y]), textcoords="offset points",
                    xytext=(6, 5), fontsize=8, color=color, zorder=5)
    front = table[table["pareto"]].sort_values(x)
    ax.scatter(front[x], front[y], s=190, facecolors="none", edgecolors="#cc3311",
               linewidths=1.6, zorder=4, label="Pareto front (not dominated)")
    if len(front) > 1:
        ax.plot(front[x], front[y], color="#cc3311", linewidth=1.6, alpha=0.8, zorder=4)
    lower_x, lower_y = metric_a in LOWER_IS_BETTER, metric_b in LOWER_IS_BETTER
    if lower_x:
        ax.invert_xaxis()
    if lower_y:
        ax.invert_yaxis()
    if has_base:
        ref = table.set_index("configuration").loc[baseline]
        ax.axvline(ref[x], color="#444444", linestyle="--", linewidth=1, zorder=1,
                   label=f"{baseline} (mean)")
        ax.axhline(ref[y], color="#444444", linestyle="--", linewidth=1, zorder=1)
        x_lim, y_lim = ax.get_xlim(), ax.get_ylim()
        # Reversed axes keep "better" up and right, so the better quadrant is always there.
        ax.fill_between([ref[x], x_lim[1]], ref[y], y_lim[1], color="#2ca02c", alpha=0.07,
                        zorder=0, label=f"better than {baseline} on both")
        ax.set_xlim(x_lim)
        ax.set_ylim(y_lim)
    split = str(frame["split"].iloc[0]) if "split" in frame.columns else "test"
    for setter, task, metric, lower in ((ax.set_xlabel, task_a, metric_a, lower_x),
                                        (ax.set_ylabel, task_b, metric_b, lower_y)):
        direction = "↓ better, axis reversed" if lower else "↑ better"
        setter(f"{task} {metric.upper()} ({split}; {direction})")
    ax.set_title(f"Seesaw: {task_a} vs {task_b} (mean and {confidence:.0%} interval over seeds)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.85)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- negative transfer


def _verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "positive"
    if hi < 0:
        return "negative"
    return "inconclusive"


def summarise_transfer(results: pd.DataFrame, model: str, baseline: str = "single",
                       metrics: MetricSelection = None, confidence: float = 0.95
                       ) -> pd.DataFrame:
    """Per task: ``model`` against ``baseline`` over paired seeds, with a verdict.

    ``results`` has columns ``model, seed, task, metric, value`` (one weighting only), such as
    the output of :func:`~mtlbook.experiments.repeat_fits`. Only seeds that both models ran
    are used.

    The verdict rule: the per-seed relative gain (PLE sign convention, positive = better for
    AUC and MSE alike) is averaged over the K seeds with a Student-t interval at
    ``confidence``; ``positive`` when the whole interval lies above 0, ``negative`` when it
    lies below 0, ``inconclusive`` otherwise (including a single seed, which has no interval).
    That is a two-sided paired t-test per task at level ``1 − confidence``, with no
    correction for testing several tasks.

    Returns:
        pandas.DataFrame:
        One row per task and metric: ``task, metric, model, baseline, n``; ``model_mean,
        model_lo, model_hi`` and ``baseline_mean, baseline_lo, baseline_hi`` (each model's
        metric); ``diff_mean, diff_lo, diff_hi`` (paired ``model − baseline`` in the metric's
        own units: negative is better for MSE); ``gain_mean, gain_lo, gain_hi`` (paired
        relative gain in %, positive = better); ``verdict``.
    """
    present = set(results["model"])
    for name in (model, baseline):
        if name not in present:
            raise ValueError(f"model {name!r} is not in the results; they have {sorted(present)}")
    if "weighting" in results.columns and results["weighting"].nunique() > 1:
        raise ValueError("the results mix several weightings; filter them to one first")
    rows = results[results["model"].isin([model, baseline])]
    if metrics is None:
        metrics = _primary_metrics(rows)
    rows = _select_metrics(rows, metrics)
    keys = ["task", "metric", "seed"]
    wide = rows.pivot_table(index=keys, columns="model", values="value", aggfunc="first")
    wide = wide.dropna(subset=[model, baseline]).reset_index()
    if wide.empty:
        raise ValueError(f"{model!r} and {baseline!r} share no seed; nothing to pair")
    lower = wide["metric"].isin(LOWER_IS_BETTER)
    wide["diff"] = wide[model] - wide[baseline]
    better = wide["diff"].where(~lower, -wide["diff"])
    wide["gain"] = 100.0 * better / wide[baseline].abs()
    by = ["task", "metric"]
    out = None
    for column, prefix in ((model, "model"), (baseline, "baseline"), ("diff", "diff"),
                           ("gain", "gain")):
        s = mean_interval(wide, by, value=column, confidence=confidence)
        s = s.rename(columns={"mean": f"{prefix}_mean", "lo": f"{prefix}_lo",
                              "hi": f"{prefix}_hi"}).drop(columns="std")
        out = s if out is None else out.merge(s.drop(columns="n"), on=by)
    out["model"], out["baseline"] = model, baseline
    out["verdict"] = [_verdict(lo, hi) for lo, hi in zip(out["gain_lo"], out["gain_hi"],
                                                         strict=True)]
    stats = [f"{prefix}_{stat}" for prefix in ("model", "baseline", "diff", "gain")
             for stat in ("mean", "lo", "hi")]
    return out[["task", "metric", "model", "baseline", "n", *stats, "verdict"]]


def negative_transfer(
    mtl_model: str | Factory | Mapping[str, ModelSpec | str],
    data: MultiTaskData | Callable[[int], MultiTaskData] | str,
    seeds: int | Iterable[int] = 5,
    baseline: str | ModelSpec = "single",
    metrics: MetricSelection = None,
    confidence: float = 0.95,
    *,
    weighting: str | Callable[[], Weighting] | None = None,
    n_samples: int | None = None,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Does sharing help or hurt each task? A multi-task model against the single-task
    baseline over paired seeds, with a verdict per task.

    Both are trained on the same data, splits and seeds (each seed draws fresh named data);
    each selects its epoch on the validation split and is scored on the test split. See
    :func:`summarise_transfer` for the columns and the verdict rule (``positive``: the gain's
    interval lies above 0; ``negative``: below 0; ``inconclusive``: it contains 0).

    Args:
        mtl_model: a model name (``"shared_bottom"``), a ``(schema, seed) → model`` factory,
            or a one-entry mapping name → either.
        data: data, a data function or a name, as in :func:`compare`.
        seeds: the number of seeds or the seeds.
        baseline: the reference: ``"single"`` (a separate SingleTask per task), another
            name, or a factory / :class:`~mtlbook.experiments.PerTask`.
        metrics: per-task metrics; default AUC for binary tasks, MSE for regression tasks.
        confidence: interval level.
        weighting: the multi-task model's loss weighting (a name of
            :func:`~mtlbook.weighting.standard_strategies` or a factory); default equal.
        n_samples: size of named data.
        **fit_kwargs: passed to :func:`~mtlbook.experiments.repeat_fits` (``transform_train``,
            ``fractions``, ...) and :func:`mtlbook.fit` (``epochs``, ``lr``, ...).
            As in :func:`compare`, the seeds train as vectorised populations by default.

    Example:
        >>> from mtlbook.compare import negative_transfer
        >>> verdicts = negative_transfer("shared_bottom", "correlated:0.0", seeds=3,
        ...                              n_samples=600, epochs=3)
        >>> verdicts["task"].tolist()
        ['task1', 'task2']
        >>> set(verdicts["verdict"]) <= {"positive", "negative", "inconclusive"}
        True
    """
    if isinstance(mtl_model, Mapping):
        if len(mtl_model) != 1:
            raise ValueError(f"give one multi-task model, got {list(mtl_model)}")
        models = resolve_models(mtl_model)
    elif isinstance(mtl_model, str):
        models = resolve_models([mtl_model])
    else:
        label = getattr(mtl_model, "__name__", "mtl")
        models = resolve_models({"mtl" if label == "<lambda>" else label: mtl_model})
    name = next(iter(models))
    base_name = baseline if isinstance(baseline, str) else "baseline"
    if base_name == name:
        raise ValueError(f"the model and the baseline are both {name!r}")
    models.update(resolve_models({base_name: baseline}))
    if weighting is not None and not isinstance(weighting, str) and not callable(weighting):
        raise TypeError("weighting must be a name or a () → Weighting factory")
    if isinstance(weighting, str):
        weightings = resolve_weightings([weighting])
    else:
        weightings = None if weighting is None else {"custom": weighting}
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    plan = _plan(models, data, weightings, seeds, n_samples, metrics)
    raw = repeat_fits(plan.make_data, plan.models, plan.seeds, weightings=plan.weightings,
                      **_vectorised(fit_kwargs))
    return summarise_transfer(raw, name, base_name, metrics, confidence)


_VERDICT_COLORS = {"positive": "#228833", "negative": "#cc3311", "inconclusive": "#777777"}


def plot_negative_transfer(frame: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Figure:
    """The paired gain of each task with its interval, coloured by verdict, around 0.

    ``frame`` is the output of :func:`negative_transfer` or :func:`summarise_transfer`.

    Example:
        >>> from mtlbook.compare import negative_transfer, plot_negative_transfer
        >>> verdicts = negative_transfer("shared_bottom", "correlated:0.0", seeds=3,
        ...                              n_samples=600, epochs=3)
        >>> fig = plot_negative_transfer(verdicts)
    """
    import matplotlib.pyplot as plt

    needed = ["task", "metric", "gain_mean", "gain_lo", "gain_hi", "verdict"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {missing} missing; pass the output of negative_transfer")
    rows = frame.reset_index(drop=True)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.6 * len(rows)))
    else:
        fig = ax.figure
    labels = [f"{t} ({m.upper()})" for t, m in zip(rows["task"], rows["metric"], strict=True)]
    ypos = np.arange(len(rows))[::-1]
    for yy, (_, row) in zip(ypos, rows.iterrows(), strict=True):
        color = _VERDICT_COLORS.get(row["verdict"], "#777777")
        err = np.nan_to_num([[row["gain_mean"] - row["gain_lo"]],
                             [row["gain_hi"] - row["gain_mean"]]])
        ax.errorbar(row["gain_mean"], yy, xerr=err, fmt="o", color=color, capsize=4,
                    markersize=7)
        ax.annotate(row["verdict"], (row["gain_mean"], yy), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=8, color=color)
    ax.axvline(0, color="#333333", linewidth=1)
    ax.set_yticks(ypos, labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    model = rows["model"].iloc[0] if "model" in rows else "MTL"
    base = rows["baseline"].iloc[0] if "baseline" in rows else "baseline"
    n = int(rows["n"].min()) if "n" in rows else None
    ax.set_xlabel(f"gain of {model} over {base} in % (positive = better)"
                  + (f"; {n} paired seeds" if n else ""))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
