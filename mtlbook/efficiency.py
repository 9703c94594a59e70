"""Serving cost of one multi-head model against separate single-task models (chapter 12.1).

A recommender that predicts ``N`` outcomes (click, purchase, dwell time, ...) can serve them
with ``N`` separate models or with one multi-task model that has a head per task. This module
measures the two costs that decide between them in production:

* **parameters** (memory), split into the embedding tables and the rest, with
  :func:`parameter_count`;
* **inference latency** of one forward pass over a batch of requests, with
  :func:`inference_latency` (wall-clock, median of a few repeats, after a warm-up).

:func:`serving_cost` puts both in one table for several serving setups and task counts; a
setup is a function ``data → list of models`` that together predict every task of ``data``,
built with :func:`separate_models` (one model per task) or :func:`one_model`.

Latency is measured on whatever machine runs the code, with the thread settings of the
caller (the book uses ``torch.set_num_threads(1)``); the *ratio* between setups on the same
machine is the number to read, not the absolute milliseconds.

Example:
    >>> import mtlbook as mb
    >>> from mtlbook.efficiency import one_model, separate_models, serving_cost
    >>> from mtlbook.models import SharedBottom, SingleTask
    >>> data = mb.simulate_funnel(2_000, seed=0, with_dwell_time=True)
    >>> table = serving_cost(data, {"separate": separate_models(SingleTask),
    ...                             "shared": one_model(SharedBottom)},
    ...                      task_counts=(2, 3), baseline="separate", batch_size=256,
    ...                      repeats=3, warmup=1)
    >>> print(table[["n_tasks", "setup", "n_models"]].to_string(index=False))
     n_tasks    setup  n_models
           2 separate         2
           2   shared         1
           3 separate         3
           3   shared         1
    >>> shared = table[table["setup"] == "shared"]
    >>> bool((shared["parameter_ratio"] < 1).all())  # one embedding table instead of N
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .data import MultiTaskData, Schema
from .models.base import MultiTaskModel

__all__ = ["inference_latency", "one_model", "parameter_count", "separate_models",
           "serving_cost"]

#: ``data → models``: the models that together serve every task of ``data``.
Setup = Callable[[MultiTaskData], Sequence[MultiTaskModel]]


def _as_models(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models:
        raise ValueError("give at least one model")
    bad = [type(m).__name__ for m in models if not isinstance(m, nn.Module)]
    if bad:
        raise TypeError(f"models must be torch modules, got {bad[0]}")
    return models


def parameter_count(models: nn.Module | Sequence[nn.Module]) -> dict[str, int]:
    """Trainable parameters of one model or of several together.

    Returns:
        dict: ``parameters`` (the total), ``embedding`` (those in ``nn.Embedding`` tables) and
        ``dense`` (the rest), summed over ``models``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.efficiency import parameter_count
        >>> from mtlbook.models import SharedBottom, SingleTask
        >>> d = mb.simulate_funnel(2_000, seed=0)
        >>> separate = parameter_count([SingleTask(d.select_tasks([t]).schema)
        ...                             for t in d.task_names])
        >>> shared = parameter_count(SharedBottom(d.schema))
        >>> sorted(shared)
        ['dense', 'embedding', 'parameters']
        >>> separate["embedding"] == 2 * shared["embedding"]  # an embedding table per model
        True
    """
    total = embedding = 0
    for model in _as_models(models):
        total += sum(p.numel() for p in model.parameters() if p.requires_grad)
        embedding += sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding)
                         for p in m.parameters() if p.requires_grad)
    return {"parameters": total, "embedding": embedding, "dense": total - embedding}


def inference_latency(models: MultiTaskModel | Sequence[MultiTaskModel], data: MultiTaskData,
                      *, batch_size: int = 4096, repeats: int = 7, warmup: int = 2
                      ) -> dict[str, float]:
    """Wall-clock time of one prediction pass of ``models`` over a batch of ``data``.

    The first ``batch_size`` rows of ``data`` form one batch (built once, outside the timed
    region); every repeat runs ``model.predict_batch(batch)`` for each model in turn, in eval
    mode under ``torch.inference_mode``, and is timed with :func:`time.perf_counter`. Several
    models are timed *together*: the cost of serving all of them for the same requests.

    Args:
        models: one model, or several that serve the same requests one after another.
        data: the requests; only the features are used.
        batch_size: number of requests per batch (capped at ``len(data)``).
        repeats: timed repeats; the median is robust to the odd slow one.
        warmup: untimed passes first (allocations, lazy initialisation).

    Returns:
        ``{"median": s, "min": s, "max": s}`` in seconds per batch.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.efficiency import inference_latency
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> t = inference_latency(SharedBottom(data.schema), data, batch_size=512, repeats=3)
        >>> sorted(t), t["min"] <= t["median"] <= t["max"]
        (['max', 'median', 'min'], True)
    """
    models = _as_models(models)
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    return _interleaved_latency([models], data, batch_size, repeats, warmup)[0]


def _interleaved_latency(groups: list[list[nn.Module]], data: MultiTaskData, batch_size: int,
                         repeats: int, warmup: int) -> list[dict[str, float]]:
    """Time each group of models on one batch; the groups take turns within every repeat, so
    that a change in the machine's load affects all of them alike."""
    for name, value, low in (("batch_size", batch_size, 1), ("repeats", repeats, 1),
                             ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    batch = next(iter(data.loader(min(batch_size, len(data)), shuffle=False)))
    models = [m for group in groups for m in group]
    states = [m.training for m in models]
    times: list[list[float]] = [[] for _ in groups]
    try:
        for m in models:
            m.eval()
        with torch.inference_mode():
            for i in range(warmup + repeats):
                for k, group in enumerate(groups):
                    start = time.perf_counter()
                    for m in group:
                        m.predict_batch(batch)
                    if i >= warmup:
                        times[k].append(time.perf_counter() - start)
    finally:
        for m, state in zip(models, states, strict=True):
            m.train(state)
    return [{"median": float(np.median(t)), "min": float(np.min(t)), "max": float(np.max(t))}
            for t in times]


def separate_models(factory: Callable[[Schema], MultiTaskModel]) -> Setup:
    """A setup that serves each task with its own model ``factory(schema_of_that_task)``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.efficiency import separate_models
        >>> from mtlbook.models import SingleTask
        >>> data = mb.simulate_funnel(2_000, seed=0, with_dwell_time=True)
        >>> [m.task_names for m in separate_models(SingleTask)(data)]  # one model per task
        [('click',), ('purchase',), ('dwell_time',)]
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable (schema → model), got {factory!r}")

    def build(data: MultiTaskData) -> list[MultiTaskModel]:
        return [factory(data.select_tasks([task]).schema) for task in data.task_names]

    return build


def one_model(factory: Callable[[Schema], MultiTaskModel]) -> Setup:
    """A setup that serves every task with one model ``factory(data.schema)``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.efficiency import one_model
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.simulate_funnel(2_000, seed=0, with_dwell_time=True)
        >>> [m.task_names for m in one_model(SharedBottom)(data)]  # one model for all tasks
        [('click', 'purchase', 'dwell_time')]
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable (schema → model), got {factory!r}")

    def build(data: MultiTaskData) -> list[MultiTaskModel]:
        return [factory(data.schema)]

    return build


def serving_cost(data: MultiTaskData, setups: Mapping[str, Setup], *,
                 task_counts: Sequence[int] | None = None, baseline: str | None = None,
                 batch_size: int = 4096, repeats: int = 7, warmup: int = 2) -> pd.DataFrame:
    """Parameters and inference latency of several serving setups, for 1..N tasks.

    For each ``n`` in ``task_counts`` the first ``n`` tasks of ``data`` are kept and every
    setup builds the models that serve them; their parameters are counted and their latency on
    one batch measured with :func:`inference_latency`. The models are freshly initialised
    (latency and size do not depend on training).

    Args:
        data: the data whose schema the models are built for; its first rows are the batch.
        setups: name → ``data → models``, e.g. ``{"separate": separate_models(SingleTask),
            "shared": one_model(SharedBottom)}``.
        task_counts: numbers of tasks to try (default: every count from 1 to all tasks).
        baseline: a setup name; adds ``parameter_ratio`` and ``latency_ratio`` columns
            (setup / baseline at the same task count).
        batch_size, repeats, warmup: as in :func:`inference_latency`.

    Returns:
        pandas.DataFrame:
        One row per task count and setup: ``n_tasks, setup, n_models, parameters, embedding,
        dense, latency_ms`` (median per batch), ``latency_min_ms``, ``latency_max_ms`` and,
        with ``baseline``, the two ratios.
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    if not setups:
        raise ValueError("setups must name at least one serving setup")
    if baseline is not None and baseline not in setups:
        raise ValueError(f"baseline {baseline!r} is not one of the setups {list(setups)}")
    n_all = len(data.task_names)
    counts = list(range(1, n_all + 1)) if task_counts is None else list(task_counts)
    bad = [n for n in counts if not isinstance(n, int | np.integer) or not 1 <= n <= n_all]
    if bad or not counts:
        raise ValueError(f"task_counts must be integers in 1..{n_all} (the data have tasks "
                         f"{list(data.task_names)}), got {task_counts!r}")
    rows = []
    for n in counts:
        part = data.select_tasks(list(data.task_names[:n]))
        groups = []
        for name, setup in setups.items():
            models = list(setup(part))
            served = sorted({t for m in models for t in m.task_names})
            if served != sorted(part.task_names):
                raise ValueError(f"setup {name!r} serves tasks {served} for data with tasks "
                                 f"{sorted(part.task_names)}")
            groups.append(models)
        latencies = _interleaved_latency(groups, part, batch_size, repeats, warmup)
        for (name, models), latency in zip(zip(setups, groups, strict=True), latencies,
                                           strict=True):
            rows.append({"n_tasks": n, "setup": name, "n_models": len(models),
                         **parameter_count(models),
                         "latency_ms": 1e3 * latency["median"],
                         "latency_min_ms": 1e3 * latency["min"],
                         "latency_max_ms": 1e3 * latency["max"]})
    table = pd.DataFrame(rows)
    if baseline is not None:
        base = table[table["setup"] == baseline].set_index("n_tasks")
        table["parameter_ratio"] = table["parameters"] / table["n_tasks"].map(base["parameters"])
        table["latency_ratio"] = table["latency_ms"] / table["n_tasks"].map(base["latency_ms"])
    return table
