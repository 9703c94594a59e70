"""Export trained models for serving, and measure what serving them costs.

Chapter 12.4.2 of the book asks what it costs, at serving time, to run one multi-task model
with a head per task instead of a separate model per task. This module answers it with the
models as a server would load them: exported with :func:`torch.export.export` (the
ahead-of-time graph capture of PyTorch 2; TorchScript's ``torch.jit.trace`` is deprecated and
cannot capture the custom autograd function of the expert mixtures, and ONNX needs an extra
package), saved to a ``.pt2`` file and loaded back without the Python class of the model.

* :class:`ServingModule` wraps a :class:`~mtlbook.models.MultiTaskModel` so that it takes
  plain tensors (the dense and/or categorical feature blocks) and returns the predictions
  (probabilities for binary tasks) as a tuple in task order: the signature an exported graph
  needs.
* :func:`export_model` exports and saves one model, with a dynamic batch dimension and the
  task names stored beside the graph; :func:`load_exported` loads it as an
  :class:`ExportedModel` that predicts a :class:`~mtlbook.data.Batch` or a whole data set.
* :func:`export_difference` checks that an exported model predicts what the eager one does.
* :func:`inference_latency` times one forward pass of one or several models over a batch of
  requests (wall-clock, median of a few repeats after a warm-up);
* :func:`serving_benchmark` exports several serving setups (one multi-head model, N separate
  models, ...) into a folder and measures, per setup, the files' total size and the latency
  of one request batch at several batch sizes, for the eager and the exported models.

Latency is wall-clock time on the machine that runs the code (with the caller's thread
settings); read ratios between setups, not absolute milliseconds.

Example:
    >>> import tempfile
    >>> import mtlbook as mb
    >>> from mtlbook.models import SharedBottom
    >>> data = mb.simulate_funnel(2_000, seed=0)
    >>> model = SharedBottom(data.schema, bottom_units=(16,))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = export_model(model, data, f"{folder}/model.pt2")
    ...     served = load_exported(path)
    ...     served.task_names
    ...     float(export_difference(model, served, data)["max_abs_diff"].max()) < 1e-5
    ('click', 'purchase')
    True
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data import Batch, MultiTaskData
from ..models.base import MultiTaskModel

__all__ = [
    "ExportedModel",
    "ServingModule",
    "export_difference",
    "export_model",
    "file_breakdown",
    "inference_latency",
    "load_exported",
    "serving_benchmark",
]

_META = "mtlbook.json"
_FORMAT = 1


class ServingModule(nn.Module):
    """A model as a server calls it: feature tensors in, a tuple of predictions out.

    ``forward(dense, categorical)`` (only the blocks the schema has, in that order) returns
    one ``[batch]`` tensor per task in ``model.task_names`` order: probabilities for binary
    tasks, predictions for regression tasks (the model's
    :meth:`~mtlbook.models.MultiTaskModel.predict_batch` without any
    extra output such as ESMM's ``pcvr``).

    Args:
        model: the model to serve; it is put in evaluation mode (:func:`export_model` and
            :func:`serving_benchmark` restore its mode afterwards).
    """

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        if not isinstance(model, MultiTaskModel):
            raise TypeError(
                f"expected a mtlbook model (MultiTaskModel), got {type(model).__name__}"
            )
        self.model = model.eval()
        self.task_names = tuple(model.task_names)
        self.has_dense = bool(model.schema.dense)
        self.has_categorical = bool(model.schema.categorical)

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        expected = int(self.has_dense) + int(self.has_categorical)
        if len(features) != expected:
            raise ValueError(
                f"expected {expected} feature tensor(s) ({self.input_names()}), got {len(features)}"
            )
        it = iter(features)
        dense = next(it) if self.has_dense else None
        categorical = next(it) if self.has_categorical else None
        out = self.model.predict_batch(Batch(dense=dense, categorical=categorical))
        return tuple(out[t] for t in self.task_names)

    def input_names(self) -> list[str]:
        """The feature blocks ``forward`` takes, in order."""
        return [
            n
            for n, has in (("dense", self.has_dense), ("categorical", self.has_categorical))
            if has
        ]

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The feature tensors of ``batch`` in the order ``forward`` takes them."""
        return tuple(getattr(batch, name) for name in self.input_names())


def _check_data(data: MultiTaskData, schema) -> None:
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    if (tuple(data.schema.dense), tuple(data.schema.categorical)) != (
        tuple(schema.dense),
        tuple(schema.categorical),
    ):
        raise ValueError(
            "the data's feature columns differ from the model's schema: data has "
            f"dense={list(data.schema.dense)}, categorical="
            f"{list(data.schema.categorical)}; the model expects "
            f"dense={list(schema.dense)}, categorical={list(schema.categorical)}"
        )


def _first_batch(data: MultiTaskData, batch_size: int) -> Batch:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(data) == 0:
        raise ValueError("data is empty; the example batch needs at least one row")
    return next(iter(data.loader(min(batch_size, len(data)), shuffle=False)))


def _without_empty_buffers(model: MultiTaskModel) -> MultiTaskModel:
    """``model``, or a copy of it without zero-element buffers.

    ``torch.export.save`` fails on a zero-element tensor (the embedding offsets of a model
    without categorical features are one); such a buffer holds nothing, so the copy drops it
    (sets it to ``None``), and the caller's model is left as it is.
    """
    if not any(b.numel() == 0 for b in model.buffers()):
        return model
    model = copy.deepcopy(model)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.numel() == 0:
                module._buffers[name] = None
    return model


def export_model(
    model: MultiTaskModel,
    data: MultiTaskData,
    path: str | os.PathLike,
    *,
    example_batch_size: int = 8,
) -> Path:
    """Export ``model`` with :func:`torch.export.export` and save it to ``path`` (``.pt2``).

    The graph is captured on an example batch (the first ``example_batch_size`` rows of
    ``data``) with a dynamic batch dimension, so the saved model serves any batch size, 1
    included. The task names and feature blocks are saved in the same file (as an extra file
    ``mtlbook.json``), so :func:`load_exported` needs nothing but the path. The model is
    exported in evaluation mode (no dropout); its own mode is restored afterwards.

    Args:
        model: a trained (or freshly built) mtlbook model.
        data: data with the model's feature columns; only the first rows are used.
        path: the file to write; its folder must exist. Write to a temporary folder rather
            than into a source tree.
        example_batch_size: rows of the example batch (at least 2 are used, so that the batch
            dimension is not specialised to 1).

    Returns:
        ``Path(path)``.

    Raises:
        TypeError: for something that is not a mtlbook model or a data set.
        ValueError: when the data's feature columns differ from the model's schema.
        FileNotFoundError: when the folder of ``path`` does not exist.
        RuntimeError: when ``torch.export`` cannot capture the model (its message is kept).
    """
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected a mtlbook model (MultiTaskModel), got {type(model).__name__}")
    _check_data(data, model.schema)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(path.parent)!r} does not exist")
    batch = _first_batch(data, max(2, example_batch_size))
    if len(batch) < 2:
        raise ValueError("export needs at least 2 rows of data for a dynamic batch dimension")
    was_training = model.training
    module = ServingModule(_without_empty_buffers(model))
    # Copies: a slice of the data shares its storage, and torch.export.save stores the
    # example inputs with the whole storage behind them.
    inputs = tuple(t.clone() for t in module.inputs(batch))
    dynamic = {"features": tuple({0: torch.export.Dim.DYNAMIC} for _ in inputs)}
    try:
        with warnings.catch_warnings():
            # SharedBottom keeps its last shared representation (for MGDA-UB) as an attribute;
            # an exported graph has no such state, and serving never needs it.
            warnings.filterwarnings("ignore", message=".*was assigned during export.*")
            program = torch.export.export(module, inputs, dynamic_shapes=dynamic)
    except Exception as err:  # torch raises many kinds; say which model failed and why
        raise RuntimeError(f"torch.export could not capture {type(model).__name__}: {err}") from err
    finally:
        model.train(was_training)
    meta = {
        "format": _FORMAT,
        "model": type(model).__name__,
        "task_names": list(module.task_names),
        "task_kinds": [t.kind for t in model.schema.tasks],
        "inputs": module.input_names(),
    }
    torch.export.save(program, path, extra_files={_META: json.dumps(meta)})
    return path


class ExportedModel:
    """A model loaded by :func:`load_exported`: the exported graph and its task names.

    Call it with the feature tensors (as :class:`ServingModule` takes them) to get a tuple of
    predictions, or use :meth:`predict_batch` / :meth:`predict` for ``{task: predictions}``.

    Attributes:
        task_names: the tasks, in output order.
        inputs: the feature blocks the graph takes (``["dense", "categorical"]`` or one).
        model_name: the class name of the model that was exported.
        path: the file it was loaded from.
    """

    def __init__(self, module: nn.Module, meta: Mapping, path: Path) -> None:
        self.module = module
        self.task_names = tuple(meta["task_names"])
        self.inputs = list(meta["inputs"])
        self.model_name = str(meta["model"])
        self.path = path

    def __call__(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.module(*features)

    def predict_batch(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{task: [batch] predictions}`` for one :class:`~mtlbook.data.Batch`."""
        missing = [name for name in self.inputs if getattr(batch, name) is None]
        if missing:
            raise ValueError(
                f"the batch lacks the feature block(s) {missing} the exported "
                f"model takes ({self.inputs})"
            )
        with torch.inference_mode():
            out = self.module(*(getattr(batch, name) for name in self.inputs))
        return dict(zip(self.task_names, out, strict=True))

    def predict(self, data: MultiTaskData, batch_size: int = 4096) -> dict[str, np.ndarray]:
        """``{task: predictions}`` over a whole data set, as numpy arrays."""
        if not isinstance(data, MultiTaskData):
            raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
        parts: dict[str, list[np.ndarray]] = {t: [] for t in self.task_names}
        for batch in data.loader(batch_size, shuffle=False):
            for task, values in self.predict_batch(batch).items():
                parts[task].append(values.numpy())
        return {t: np.concatenate(v) if v else np.zeros(0, np.float32) for t, v in parts.items()}

    def __repr__(self) -> str:
        return (
            f"ExportedModel({self.model_name}, tasks={list(self.task_names)}, "
            f"path={str(self.path)!r})"
        )


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """Load a file written by :func:`export_model` (no mtlbook model class is needed).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not an exported mtlbook model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {str(path)!r}")
    extra = {_META: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a torch.export file: {err}") from err
    if not extra[_META]:
        raise ValueError(
            f"{str(path)!r} was not written by mtlbook.analysis.serving.export_model "
            f"(it has no {_META} entry)"
        )
    meta = json.loads(extra[_META])
    return ExportedModel(program.module(), meta, path)


def export_difference(
    model: MultiTaskModel, exported: ExportedModel, data: MultiTaskData, batch_size: int = 4096
) -> pd.DataFrame:
    """Largest absolute difference, per task, between the eager and the exported predictions.

    Returns:
        pandas.DataFrame:
        One row per task: ``task``, ``max_abs_diff`` (over every row of ``data``).
    """
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected a mtlbook model (MultiTaskModel), got {type(model).__name__}")
    if not isinstance(exported, ExportedModel):
        raise TypeError(
            f"exported must be an ExportedModel (from load_exported), got {type(exported).__name__}"
        )
    if tuple(model.task_names) != exported.task_names:
        raise ValueError(
            f"the models serve different tasks: {list(model.task_names)} and "
            f"{list(exported.task_names)}"
        )
    _check_data(data, model.schema)
    eager = model.predict(data, batch_size=batch_size)
    served = exported.predict(data, batch_size=batch_size)
    return pd.DataFrame(
        {
            "task": list(exported.task_names),
            "max_abs_diff": [
                float(np.max(np.abs(np.asarray(eager[t], np.float64) - served[t])))
                for t in exported.task_names
            ],
        }
    )


def file_breakdown(path: str | os.PathLike) -> dict[str, int]:
    """Bytes of an exported file: ``{"total": file size, "weights": parameter and constant
    tensors, "other": the rest (graph, metadata, example inputs)}``."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not a .pt2 archive")
    with zipfile.ZipFile(path) as archive:
        weights = sum(
            i.file_size
            for i in archive.infolist()
            if "/data/weights/" in i.filename or "/data/constants/" in i.filename
        )
    total = path.stat().st_size
    return {"total": total, "weights": weights, "other": total - weights}


def _time_groups(
    groups: list[list], batches: list[tuple[torch.Tensor, ...]], repeats: int, warmup: int
) -> list[float]:
    """Median seconds per pass of each group (callables run one after another on their own
    inputs); the groups take turns within every repeat so load changes hit all alike."""
    times: list[list[float]] = [[] for _ in groups]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for k, (group, inputs) in enumerate(zip(groups, batches, strict=True)):
                start = time.perf_counter()
                for fn in group:
                    fn(*inputs)
                if i >= warmup:
                    times[k].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def serving_benchmark(
    setups: Mapping[str, Sequence[MultiTaskModel]],
    data: MultiTaskData,
    folder: str | os.PathLike,
    *,
    batch_sizes: Sequence[int] = (1, 512),
    repeats: int = 30,
    warmup: int = 3,
) -> pd.DataFrame:
    """Export every setup's models into ``folder`` and measure size, latency and agreement.

    A setup is the list of models that together serve every task of ``data`` for one request
    (one multi-head model, or one model per task called one after another). Each model is
    exported with :func:`export_model`, loaded back with :func:`load_exported` and checked
    against the eager model with :func:`export_difference` on ``data``. Then, for every batch
    size, one batch of the first rows of ``data`` is timed ``repeats`` times (after
    ``warmup`` untimed passes) through the eager models and through the exported ones; all
    setups take turns within every repeat.

    Args:
        setups: name → models, e.g. ``{"1 multi-head": [mmoe], "N single-task":
            [single_click, single_purchase]}``.
        data: requests with the models' feature columns.
        folder: an existing folder for the ``.pt2`` files (e.g. a
            :class:`tempfile.TemporaryDirectory`).
        batch_sizes: request batch sizes to time.
        repeats, warmup: timed and untimed passes per batch size.

    Returns:
        pandas.DataFrame:
        One row per setup: ``setup, n_models, parameters, file_kb`` (all its files together),
        ``weights_kb`` (the part of the files that holds tensors, see :func:`file_breakdown`),
        ``max_abs_diff`` (exported vs eager, over all tasks and rows), then
        ``eager_ms_b{n}`` and ``exported_ms_b{n}`` (median milliseconds per batch of ``n``)
        for each batch size.

    Raises:
        ValueError: for an empty setup, a setup that does not serve every task of ``data``
            exactly once, a bad batch size or repeat count, or a missing folder.
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    if not setups:
        raise ValueError("setups must name at least one serving setup")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} does not exist")
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    sizes = list(batch_sizes)
    if not sizes or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes!r}")
    states = [(m, m.training) for models in setups.values() for m in models]
    try:
        return _benchmark(setups, data, folder, sizes, repeats, warmup)
    finally:
        for model, state in states:
            model.train(state)


def _benchmark(setups, data, folder, sizes, repeats, warmup) -> pd.DataFrame:
    rows, eager_groups, exported_groups, wrapped = [], [], [], []
    for k, (name, models) in enumerate(setups.items()):
        models = list(models)
        if not models:
            raise ValueError(f"setup {name!r} has no model")
        served = sorted(t for m in models for t in m.task_names)
        if served != sorted(data.task_names):
            raise ValueError(
                f"setup {name!r} serves tasks {served}; every task of the data "
                f"{sorted(data.task_names)} must be served exactly once"
            )
        loaded, n_bytes, n_weights, diff = [], 0, 0, 0.0
        for i, model in enumerate(models):
            part = data.select_tasks(list(model.task_names))
            path = export_model(model, part, folder / f"setup{k}_model{i}.pt2")
            sizes_ = file_breakdown(path)
            n_bytes += sizes_["total"]
            n_weights += sizes_["weights"]
            exported = load_exported(path)
            diff = max(diff, float(export_difference(model, exported, part)["max_abs_diff"].max()))
            loaded.append(exported)
        wrapped.append([ServingModule(m) for m in models])
        eager_groups.append(wrapped[-1])
        exported_groups.append(loaded)
        rows.append(
            {
                "setup": name,
                "n_models": len(models),
                "parameters": sum(m.n_parameters() for m in models),
                "file_kb": n_bytes / 1024,
                "weights_kb": n_weights / 1024,
                "max_abs_diff": diff,
            }
        )
    for n in sizes:
        batch = _first_batch(data, n)
        inputs = [wrapped[k][0].inputs(batch) for k in range(len(setups))]
        groups = eager_groups + exported_groups
        medians = _time_groups(groups, inputs + inputs, repeats, warmup)
        for k, row in enumerate(rows):
            row[f"eager_ms_b{n}"] = 1e3 * medians[k]
            row[f"exported_ms_b{n}"] = 1e3 * medians[len(rows) + k]
    return pd.DataFrame(rows)


def inference_latency(
    models: MultiTaskModel | Sequence[MultiTaskModel],
    data: MultiTaskData,
    *,
    batch_size: int = 4096,
    repeats: int = 7,
    warmup: int = 2,
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
        >>> from mtlbook.analysis.serving import inference_latency
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> t = inference_latency(SharedBottom(data.schema), data, batch_size=512, repeats=3)
        >>> sorted(t), t["min"] <= t["median"] <= t["max"]
        (['max', 'median', 'min'], True)
    """
    timed = _as_models(models)
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
    return _interleaved_latency([timed], data, batch_size, repeats, warmup)[0]


def _interleaved_latency(
    groups: Sequence[Sequence[MultiTaskModel]],
    data: MultiTaskData,
    batch_size: int,
    repeats: int,
    warmup: int,
) -> list[dict[str, float]]:
    """Time each group of models on one batch; the groups take turns within every repeat, so
    that a change in the machine's load affects all of them alike."""
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
    ):
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
    return [
        {"median": float(np.median(t)), "min": float(np.min(t)), "max": float(np.max(t))}
        for t in times
    ]


def _as_models(models: MultiTaskModel | Sequence[MultiTaskModel]) -> list[MultiTaskModel]:
    out = [models] if isinstance(models, nn.Module) else list(models)
    if not out:
        raise ValueError("give at least one model")
    bad = [type(m).__name__ for m in out if not isinstance(m, nn.Module)]
    if bad:
        raise TypeError(f"models must be torch modules, got {bad[0]}")
    return out
