"""Comparisons on real public data: official splits, user subsets, conditional tasks.

The synthetic chapters of the book draw a fresh data set for every seed and split it at
random (:func:`mtlbook.analysis.compare.compare`). Real data come with constraints of their own, and
this module handles them so that the appendix on real data (appendix A of the book) stays
thin:

* an **official split** is kept: :func:`official_split` carves the validation rows out of the
  official training part only, so the official test part is touched once, for the final
  table (UCI Adult's ``adult.test``);
* a data set too large for a time budget is cut **by user**, not by impression
  (:func:`group_subset`), so every kept user keeps all of their impressions and per-user
  metrics (GAUC) mean the same thing as on the full data;
* a funnel step that is only observed after an earlier one — conversion after a click,
  "liked" after "rated" — becomes a **conditional task** masked to the rows where the earlier
  step happened (:func:`add_conditional_task`); its labels are copies of labels, never
  features;
* :func:`compare_on_splits` trains every model over several seeds on given splits, each
  configuration as one vectorised population (:func:`mtlbook.training.population.fit_population`),
  and returns a :class:`~mtlbook.analysis.compare.CompareResult` (``.table()``, ``.gains()``). It
  also scores every model's estimate of each conditional task: the model's own ``pcvr`` output
  for ESMM, the ratio ``P(task) / P(given)`` for a model that predicts both steps, or the
  prediction of a model trained on the conditional task itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..analysis.compare import CompareResult, MetricSelection, resolve_models
from ..analysis.runs import RESULT_COLUMNS, Factory, PerTask
from ..data import MultiTaskData, Schema, TaskSpec
from ..metrics import score_predictions
from ..models.base import MultiTaskModel
from ..training.population import fit_population
from .page import zh

if TYPE_CHECKING:  # matplotlib is imported by plot_gains only
    import matplotlib.pyplot as plt

__all__ = [
    "OnTasks",
    "add_conditional_task",
    "compare_on_splits",
    "conditional_estimate",
    "group_subset",
    "headline_table",
    "official_split",
    "plot_gains",
]

Splits = tuple[MultiTaskData, MultiTaskData, MultiTaskData]
_META_KEY = "conditional_tasks"


def official_split(
    data: MultiTaskData, *, valid_fraction: float = 0.2, seed: int = 0, column: str = "part"
) -> Splits:
    """Train / valid / test from a data set's official parts, with a seeded validation carve-out.

    The rows whose ``data.truth[column]`` is ``"test"`` are the test split, in their order;
    ``valid_fraction`` of the ``"train"`` rows, drawn by ``numpy.random.default_rng(seed)``,
    are the validation split and the rest the training split. Every seed gives splits of the
    same sizes, so the seeds can train as one population.

    Args:
        data: a data set whose ``truth`` has a column of ``"train"`` / ``"test"`` labels, such
            as ``mtlbook.datasets.load("adult")``.
        valid_fraction: share of the official training rows held out for model selection.
        seed: seed of the carve-out.
        column: the column of ``data.truth`` holding the official part.

    Returns:
        ``(train, valid, test)``.

    Raises:
        ValueError: if the data have no such column, or a part is missing or empty.

    Example:
        >>> import numpy as np, pandas as pd
        >>> from mtlbook.data import MultiTaskData
        >>> data = MultiTaskData(dense=np.zeros((10, 1)), dense_names=["x"],
        ...                      labels={"y": np.arange(10) % 2}, tasks={"y": "binary"},
        ...                      truth=pd.DataFrame({"part": ["train"] * 8 + ["test"] * 2}))
        >>> [len(d) for d in official_split(data, valid_fraction=0.25)]
        [6, 2, 2]
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    if data.truth is None or column not in data.truth.columns:
        have = [] if data.truth is None else list(data.truth.columns)
        raise ValueError(
            f"official_split needs data.truth[{column!r}] with the official "
            f"'train'/'test' part of every row; the truth columns are {have}"
        )
    if not 0.0 < float(valid_fraction) < 1.0:
        raise ValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction!r}")
    part = data.truth[column].astype(str).to_numpy()
    unknown = sorted(set(part) - {"train", "test"})
    if unknown:
        raise ValueError(
            f"data.truth[{column!r}] holds {unknown[:3]}; expected only 'train' and 'test'"
        )
    train_rows, test_rows = np.flatnonzero(part == "train"), np.flatnonzero(part == "test")
    n_valid = round(float(valid_fraction) * len(train_rows))
    if not len(test_rows) or n_valid < 1 or n_valid >= len(train_rows):
        raise ValueError(
            f"the official parts leave an empty split: {len(train_rows)} training "
            f"rows ({n_valid} for validation) and {len(test_rows)} test rows"
        )
    order = np.random.default_rng(seed).permutation(train_rows)
    return (
        data.subset(np.sort(order[n_valid:])),
        data.subset(np.sort(order[:n_valid])),
        data.subset(test_rows),
    )


def group_subset(data: MultiTaskData, fraction: float, *, seed: int = 0) -> MultiTaskData:
    """Keep a random ``fraction`` of the groups (users) with all of their rows.

    Cutting by user rather than by impression keeps every kept user's history whole, so
    per-user metrics such as GAUC keep their meaning; only the number of users shrinks.

    Args:
        data: a data set with ``groups`` (for example the user ids of MovieLens).
        fraction: share of the distinct groups kept, in (0, 1]; ``1`` returns ``data``.
        seed: seed of ``numpy.random.default_rng`` that draws the groups.

    Raises:
        ValueError: if the data have no groups or ``fraction`` is outside (0, 1].

    Example:
        >>> import numpy as np
        >>> from mtlbook.data import MultiTaskData
        >>> data = MultiTaskData(dense=np.zeros((8, 1)), dense_names=["x"],
        ...                      labels={"y": [0, 1] * 4}, tasks={"y": "binary"},
        ...                      groups=[1, 1, 2, 2, 3, 3, 4, 4])
        >>> len(np.unique(group_subset(data, 0.5).groups))
        2
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    if data.groups is None:
        raise ValueError(
            "group_subset needs data.groups (for example user ids); these data have none"
        )
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    if float(fraction) == 1.0:
        return data
    groups = np.unique(data.groups)
    n_keep = max(1, round(float(fraction) * len(groups)))
    keep = np.random.default_rng(seed).choice(groups, size=n_keep, replace=False)
    return data.subset(np.isin(data.groups, keep))


def add_conditional_task(
    data: MultiTaskData, task: str, given: str, name: str | None = None
) -> MultiTaskData:
    """Add the binary task "``task`` given ``given``", defined only where ``given`` is 1.

    In a funnel the later step is observed only after the earlier one: on MovieLens, whether a
    user liked a film is only known for the films they rated, just as a conversion is only
    known after a click. ``task`` must be the joint event ("rated and liked", 0 where
    ``given`` is 0), as ESMM's CTCVR label is. The new task's labels are ``task``'s labels,
    masked to the rows where ``given`` is 1: P(task | given) is the CVR of that funnel. Only
    labels are copied; the features are untouched, so nothing leaks into them.

    The new task is recorded in ``data.meta["conditional_tasks"]`` (name → ``(task,
    given)``), where :func:`compare_on_splits` finds it.

    Args:
        data: the data set.
        task: the joint binary task (``"liked"``, ``"purchase"``).
        given: the earlier binary step (``"rated"``, ``"click"``); unmasked.
        name: the new task's name; default ``f"{task}_given_{given}"``.

    Raises:
        ValueError: for unknown or non-binary tasks, a masked ``given``, a ``task`` that is
            positive where ``given`` is not (then it is not a joint event), or a name in use.

    Example:
        >>> import numpy as np
        >>> from mtlbook.data import MultiTaskData
        >>> data = MultiTaskData(dense=np.zeros((4, 1)), dense_names=["x"],
        ...                      labels={"click": [1, 1, 0, 0], "buy": [1, 0, 0, 0]},
        ...                      tasks={"click": "binary", "buy": "binary"})
        >>> cvr = add_conditional_task(data, "buy", "click")
        >>> cvr.task_names, cvr.mask("buy_given_click").tolist()
        (('click', 'buy', 'buy_given_click'), [True, True, False, False])
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    for role, t in (("task", task), ("given", given)):
        if t not in data.task_names:
            raise ValueError(
                f"{role}={t!r} is not a task of the data; tasks are {list(data.task_names)}"
            )
        if data.schema.task(t).kind != "binary":
            raise ValueError(
                f"{role}={t!r} must be a binary task, it is {data.schema.task(t).kind}"
            )
    if task == given:
        raise ValueError(f"task and given must differ, both are {task!r}")
    if given in data.masks:
        raise ValueError(
            f"given={given!r} is itself masked; the earlier step must be observed on every row"
        )
    name = f"{task}_given_{given}" if name is None else name
    if name in data.task_names:
        raise ValueError(f"a task named {name!r} already exists; pass another name")
    observed = data.labels[given] == 1
    joint = data.labels[task] * data.mask(task)
    outside = int(((joint == 1) & ~observed).sum())
    if outside:
        raise ValueError(
            f"task {task!r} is 1 on {outside} rows where {given!r} is 0, so it is "
            f"not the joint event '{given} and {task}'; a conditional task needs "
            "one"
        )
    out = MultiTaskData(
        dense=data.dense,
        categorical=data.categorical,
        labels={**data.labels, name: np.where(observed, data.labels[task], 0.0)},
        tasks=[*data.schema.tasks, TaskSpec(name, "binary")],
        dense_names=data.schema.dense,
        categorical_names=data.schema.categorical,
        cardinalities=data.schema.cardinalities or None,
        masks={**data.masks, name: observed},
        groups=data.groups,
        truth=data.truth,
        meta={**data.meta, _META_KEY: {**data.meta.get(_META_KEY, {}), name: (task, given)}},
    )
    return out


def conditional_estimate(
    predictions: pd.DataFrame, task: str, given: str, model: MultiTaskModel | None = None
) -> np.ndarray | None:
    """A model's estimate of P(``task`` | ``given``) from its predictions, or ``None``.

    ESMM (whose ``ctr_task`` is ``given`` and ``ctcvr_task`` is ``task``) has its own
    ``pcvr`` column: the output of its CVR tower. A model that predicts both steps gives the
    ratio ``P(task) / P(given)``, clipped to [0, 1] (nothing in an ordinary multi-task model
    keeps its P(task) below its P(given)). A model predicting neither gives ``None``.

    Example:
        >>> import pandas as pd
        >>> p = pd.DataFrame({"click": [0.5, 0.2], "buy": [0.1, 0.3]})
        >>> conditional_estimate(p, "buy", "click").round(2).tolist()
        [0.2, 1.0]
    """
    if (
        model is not None
        and "pcvr" in predictions
        and getattr(model, "ctr_task", None) == given
        and getattr(model, "ctcvr_task", None) == task
    ):
        return predictions["pcvr"].to_numpy(np.float64)
    if task in predictions and given in predictions:
        p_given = predictions[given].to_numpy(np.float64)
        p_task = predictions[task].to_numpy(np.float64)
        return np.clip(p_task / np.maximum(p_given, 1e-12), 0.0, 1.0)
    return None


@dataclass(frozen=True)
class OnTasks:
    """Train a model on some tasks of the data only (see :func:`compare_on_splits`).

    ``OnTasks(PerTask(model_factory(SingleTask)), ["liked_given_rated"])`` is the naive CVR
    model of chapter 12.5: trained on the rated rows only, where the conditional task is
    defined.
    """

    spec: Factory | PerTask | str
    tasks: Sequence[str]


def _per_seed(splits, seeds: Sequence[int]) -> list[Splits]:
    if callable(splits):
        out = [tuple(splits(seed)) for seed in seeds]
    else:
        out = [tuple(splits)] * len(seeds)
    for seed, parts in zip(seeds, out, strict=True):
        if len(parts) != 3 or not all(isinstance(p, MultiTaskData) for p in parts):
            raise TypeError(
                f"splits must give (train, valid, test) MultiTaskData; for seed "
                f"{seed} got {[type(p).__name__ for p in parts]}"
            )
    return out


def _shared_or_list(parts: list[MultiTaskData]) -> MultiTaskData | list[MultiTaskData]:
    return parts[0] if all(p is parts[0] for p in parts) else parts


def compare_on_splits(
    models: Mapping[str, Factory | PerTask | OnTasks | str],
    splits: Splits | Callable[[int], Splits],
    seeds: Sequence[int],
    *,
    tasks: Sequence[str] | None = None,
    valid_gauc: bool = False,
    metrics: MetricSelection = None,
    confidence: float = 0.95,
    **fit_kwargs: Any,
) -> CompareResult:
    """Train every model over ``seeds`` on given splits; test metrics with intervals.

    Like :func:`mtlbook.analysis.compare.compare`, but the splits are given rather than drawn: one
    ``(train, valid, test)`` for every seed (an official split, touched the same way by every
    seed), or a function ``seed → (train, valid, test)`` (each seed its own carve-out or
    random split; the parts must have the same sizes for every seed). The seeds of each
    configuration train as one population (:func:`~mtlbook.training.population.fit_population`: each
    member selects its own best epoch on the validation split); the selected models are
    scored once on the test split with :func:`mtlbook.metrics.score_predictions` (AUC,
    log-loss and, where the data have groups, GAUC).

    Conditional tasks made by :func:`add_conditional_task` are scored for every model that can
    estimate them (:func:`conditional_estimate`), on the test rows where they are defined;
    they are trained only by a model that asks for them with :class:`OnTasks`.

    Args:
        models: name → ``(schema, seed) → model`` factory, :class:`~mtlbook.analysis.runs.PerTask`
            (one model per task, each selected on its own validation loss), a model name of
            :data:`mtlbook.analysis.compare.MODEL_NAMES`, or :class:`OnTasks` to train on other
            tasks.
        splits: ``(train, valid, test)`` or ``seed → (train, valid, test)``.
        seeds: the seeds: initial weights, batch order and (for a function) the split.
        tasks: the tasks the models train on by default; default every task of the data
            except the conditional ones.
        valid_gauc: also compute GAUC on the validation split every epoch (slow on many
            users; early stopping does not need it).
        metrics: the metrics the result's tables keep (``None``: all; see
            :func:`mtlbook.analysis.compare.compare`); ``raw`` keeps every metric.
        confidence: level of the intervals of the result's tables.
        **fit_kwargs: passed to :func:`~mtlbook.training.population.fit_population` (``epochs``,
            ``batch_size``, ``lr``, ``early_stopping``, ``monitor``, ...).

    Returns:
        A :class:`~mtlbook.analysis.compare.CompareResult`: ``raw`` has the columns of
        :func:`~mtlbook.analysis.runs.repeat_fits` (``weighting`` is ``"equal"``), and
        ``result.table()`` / ``result.gains("single")`` summarise it.

    Raises:
        ValueError, TypeError: for bad splits, unknown tasks or models (and, from
            :func:`~mtlbook.training.population.fit_population`, for models with dropout).
        NotImplementedError: for a model that cannot train as a vectorised population;
            train its seeds one by one with :func:`mtlbook.fit` instead.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.compare import model_factory
        >>> from mtlbook.models import MMoE
        >>> data = mb.simulate_funnel(2_000, seed=0, n_users=100, n_items=50)
        >>> data = add_conditional_task(data, "purchase", "click")
        >>> result = compare_on_splits(
        ...     {"single": "single", "mmoe": model_factory(MMoE, expert_units=(8,))},
        ...     lambda seed: data.split((0.6, 0.2, 0.2), seed=seed), seeds=[0, 1], epochs=1)
        >>> sorted(result.raw["task"].unique())
        ['click', 'purchase', 'purchase_given_click']
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    per_seed = _per_seed(splits, seeds)
    conditional, plan = _plan(models, per_seed[0][0], tasks)
    rows: list[tuple] = []
    for name, (spec, model_tasks) in plan.items():
        predictions, info, built = _fit_model(
            spec, model_tasks, per_seed, seeds, valid_gauc, fit_kwargs
        )
        for k, seed in enumerate(seeds):
            scored = _score_seed(
                pd.concat(predictions[k], axis=1),
                per_seed[k][2],
                model_tasks,
                conditional,
                built[k],
            )
            for t, metric, value in scored.itertuples(index=False):
                best, run, seconds = info.get(t, (None, None, np.nan))
                rows.append(
                    (
                        name,
                        "equal",
                        seed,
                        t,
                        metric,
                        value,
                        np.nan if best is None else best[k],
                        np.nan if run is None else run[k],
                        seconds,
                    )
                )
    raw = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    result = CompareResult(raw=raw, confidence=confidence, metrics=metrics)
    result.table()  # check the metric selection now
    return result


def _plan(
    models: Mapping[str, Any], first: MultiTaskData, tasks: Sequence[str] | None
) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[Factory | PerTask, list[str]]]]:
    """The conditional tasks of the data, and each model's resolved spec and tasks."""
    conditional: dict[str, tuple[str, str]] = dict(first.meta.get(_META_KEY, {}))
    default = (
        [t for t in first.task_names if t not in conditional] if tasks is None else list(tasks)
    )
    unknown = sorted(set(default) - set(first.task_names))
    if unknown or not default:
        raise ValueError(
            f"tasks {unknown or default} are not tasks of the data; tasks are "
            f"{list(first.task_names)}"
        )
    plan: dict[str, tuple[Factory | PerTask, list[str]]] = {}
    for name, spec in models.items():
        spec, model_tasks = (
            (spec.spec, list(spec.tasks)) if isinstance(spec, OnTasks) else (spec, default)
        )
        bad = sorted(set(model_tasks) - set(first.task_names))
        if bad:
            raise ValueError(
                f"model {name!r}: tasks {bad} are not tasks of the data; tasks "
                f"are {list(first.task_names)}"
            )
        plan[name] = (resolve_models({name: spec})[name], model_tasks)
    return conditional, plan


def _fit_model(
    spec: Factory | PerTask,
    model_tasks: list[str],
    per_seed: list[tuple],
    seeds: list[int],
    valid_gauc: bool,
    fit_kwargs: dict[str, Any],
) -> tuple[list[list[pd.DataFrame]], dict[str, tuple], list[Any]]:
    """Train one model (one population per task group: all its tasks, or one each for a
    :class:`~mtlbook.analysis.runs.PerTask`) on every seed's split; per seed its test
    predictions (one frame per group), per task the best epochs, epochs run and seconds per
    seed, and per seed the trained model (``None`` when it is split over several groups)."""
    groups = [[t] for t in model_tasks] if isinstance(spec, PerTask) else [model_tasks]
    factory = spec.factory if isinstance(spec, PerTask) else spec
    predictions: list[list[pd.DataFrame]] = [[] for _ in seeds]
    info: dict[str, tuple[list[int], list[int], float]] = {}
    built: list[MultiTaskModel | None] = [None] * len(seeds)
    for group in groups:
        selected: dict[int, MultiTaskData] = {}  # a part shared by seeds is copied once
        for split in per_seed:
            for part in split:
                if id(part) not in selected:
                    selected[id(part)] = part.select_tasks(group)
        parts = [[selected[id(split[i])] for split in per_seed] for i in range(3)]
        valid = [p if valid_gauc else p.without_groups() for p in parts[1]]
        schema = parts[0][0].schema

        def make(seed: int, f: Factory = factory, s: Schema = schema) -> MultiTaskModel:
            return f(s, seed)

        result = fit_population(
            make, _shared_or_list(parts[0]), _shared_or_list(valid), seeds, **fit_kwargs
        )
        for k in range(len(seeds)):
            model = result.model(k)
            predictions[k].append(model.predict(parts[2][k]))
            if len(groups) == 1:
                built[k] = model
        summary = result.summary
        for t in group:
            info[t] = (
                summary["best_epoch"].tolist(),
                summary["epochs_run"].tolist(),
                result.train_seconds / len(seeds),
            )
    return predictions, info, built


def _score_seed(
    pred: pd.DataFrame,
    test: MultiTaskData,
    model_tasks: list[str],
    conditional: dict[str, tuple[str, str]],
    model: Any,
) -> pd.DataFrame:
    """One seed's test metrics of a model's tasks, and of its estimate of each conditional
    task it does not learn itself."""
    scored = score_predictions(pred[model_tasks], test.select_tasks(model_tasks))
    extra = []
    for cond, (task, given) in conditional.items():
        if cond in model_tasks:
            continue
        estimate = conditional_estimate(pred, task, given, model)
        if estimate is not None:
            extra.append(
                score_predictions(pd.DataFrame({cond: estimate}), test.select_tasks([cond]))
            )
    return pd.concat([scored, *extra], ignore_index=True)


def _metric_list(
    metrics: str | Sequence[str] | Mapping[str, str | Sequence[str]], name: str
) -> list[str]:
    chosen = metrics.get(name, ("auc",)) if isinstance(metrics, Mapping) else metrics
    return [chosen] if isinstance(chosen, str) else list(chosen)


def headline_table(
    results: Mapping[str, CompareResult],
    metrics: str | Sequence[str] | Mapping[str, str | Sequence[str]] = "auc",
    *,
    gains_over: str | None = None,
    digits: int = 4,
) -> pd.DataFrame:
    """One table for several data sets: a row per ``(dataset, task, metric)``, a column per model.

    Each cell is ``"mean [lo, hi]"`` over the seeds (:meth:`CompareResult.table`), or, with
    ``gains_over``, the paired relative gain in % over that model
    (:meth:`CompareResult.gains`; positive = better). A model not run on a data set, or
    that does not predict a task, has an empty cell.

    Args:
        results: data-set name → its :class:`~mtlbook.analysis.compare.CompareResult`.
        metrics: the metrics shown: one name, several, or data-set name → name(s).
        gains_over: a baseline model name, to show gains instead of values.
        digits: significant digits of the values (gains use ``digits - 1``).

    Example:
        >>> import pandas as pd
        >>> from mtlbook.analysis.compare import CompareResult
        >>> raw = pd.DataFrame({"model": ["a", "a", "b", "b"], "weighting": "equal",
        ...                     "seed": [0, 1, 0, 1], "task": "y", "metric": "auc",
        ...                     "value": [0.70, 0.72, 0.74, 0.76]})
        >>> headline_table({"toy": CompareResult(raw)}).columns.tolist()
        ['a', 'b']
    """
    if not results:
        raise ValueError("results is empty; give data-set name -> CompareResult")
    frames, models = [], []
    for name, result in results.items():
        if not isinstance(result, CompareResult):
            raise TypeError(
                f"results[{name!r}] must be a CompareResult, got {type(result).__name__}"
            )
        wanted = _metric_list(metrics, name)
        if gains_over is None:
            table = result.table(digits=digits)
        else:
            table = result.gains(gains_over, digits=digits - 1)
        table = table[table["metric"].isin(wanted)]
        if table.empty:
            raise ValueError(
                f"no rows for metrics {wanted} in results[{name!r}]; it has "
                f"{sorted(set(result.raw['metric']))}"
            )
        frames.append(table.assign(dataset=name))
        models += [m for m in result.raw["model"].unique() if m not in models]
    long = pd.concat(frames, ignore_index=True)
    wide = long.pivot_table(
        index=["dataset", "task", "metric"],
        columns="model",
        values="formatted",
        aggfunc="first",
        sort=False,
    )
    order = [m for m in models if m in wide.columns]
    return wide.reindex(columns=order).fillna("")


def plot_gains(
    gains: pd.DataFrame,
    *,
    ax: plt.Axes | None = None,
    title: str | None = None,
    names: Mapping[str, str] | None = None,
) -> plt.Axes:
    """Paired gains with their intervals: one row per ``task（metric）``, one marker per model.

    Args:
        gains: rows of :meth:`CompareResult.gains` (columns ``model, task, metric, mean, lo,
            hi``), for example filtered to ``metric == "auc"``.
        ax: the axes to draw on (default: a new figure).
        title: the axes title.
        names: model and task names → the labels shown (e.g. ``{"mmoe": "MMoE",
            "liked": "喜欢"}``); other names go through :func:`mtlbook.book.page.zh`.

    Returns:
        The axes, with a vertical line at 0 (no gain) and Chinese labels; metrics are shown
        in capitals (``AUC``, ``GAUC``).
    """
    import matplotlib.pyplot as plt

    need = {"model", "task", "metric", "mean", "lo", "hi"}
    if not need <= set(gains.columns):
        raise ValueError(f"gains needs the columns {sorted(need)}; it has {list(gains.columns)}")
    if gains.empty:
        raise ValueError("gains is empty: nothing to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(gains)))
    rows = list(dict.fromkeys(zip(gains["task"], gains["metric"], strict=True)))
    model_names = list(dict.fromkeys(gains["model"]))
    step = 0.7 / max(1, len(model_names))
    for j, model in enumerate(model_names):
        part = gains[gains["model"] == model]
        y = np.array([rows.index(r) for r in zip(part["task"], part["metric"], strict=True)])
        y = y - 0.35 + step * (j + 0.5)
        mean = part["mean"].to_numpy(float)
        err = np.vstack([mean - part["lo"].to_numpy(float), part["hi"].to_numpy(float) - mean])
        ax.errorbar(mean, y, xerr=np.nan_to_num(err), fmt="o", capsize=3, label=zh(model, names))
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{zh(t, names)}（{m.upper()}）" for t, m in rows])
    ax.invert_yaxis()
    ax.set_xlabel("相对基线的增益（%，95% 区间；> 0 更好）")
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return ax
