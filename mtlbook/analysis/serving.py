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
* The graph takes encoded features (index tensors for the categorical columns), so the file
  also carries the :class:`~mtlbook.data.FrameEncoder` of a model trained on data from
  :meth:`MultiTaskData.from_frame <mtlbook.data.MultiTaskData.from_frame>`: its vocabularies,
  unknown codes and dense statistics, as JSON beside the graph. A server needs nothing else
  to score raw rows: :meth:`ExportedModel.predict_frame` encodes a DataFrame (or reads a
  CSV/Parquet file) with it, unseen and missing values going to the unknown codes as in
  training. :meth:`mtlbook.training.SavedRun.export` exports a saved run this way.
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

With an encoder, raw rows in and scores out:

    >>> import pandas as pd
    >>> from mtlbook.data import MultiTaskData
    >>> frame = pd.DataFrame({"price": [1.0, 2.0, 3.0, 4.0], "shop": ["a", "b", "a", "c"],
    ...                       "click": [1, 0, 1, 0]})
    >>> train = MultiTaskData.from_frame(frame, dense=["price"], categorical=["shop"],
    ...                                  tasks={"click": "binary"})
    >>> model = SharedBottom(train.schema, bottom_units=(8,))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     served = load_exported(export_model(model, train, f"{folder}/model.pt2"))
    ...     scores = served.predict_frame(pd.DataFrame({"price": [2.5], "shop": ["new"]}))
    >>> list(scores.columns), len(scores)
    (['click'], 1)
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data import Batch, FrameEncoder, MultiTaskData, read_table
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
#: The extra file of a ``.pt2`` that holds the encoder (:meth:`FrameEncoder.to_dict`).
_ENCODER = "mtlbook_encoder.json"
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


def _exportable(model: MultiTaskModel) -> MultiTaskModel:
    """``model``, or a copy of it on the CPU without zero-element buffers.

    The graph is exported for the CPU (the example inputs are CPU tensors), so a model
    trained on a GPU is copied to the CPU first. ``torch.export.save`` fails on a
    zero-element tensor (the embedding offsets of a model without categorical features are
    one); such a buffer holds nothing, so the copy drops it (sets it to ``None``). The
    caller's model is left as it is.
    """
    tensors = [*model.parameters(), *model.buffers()]
    empty = any(b.numel() == 0 for b in model.buffers())
    if not empty and all(t.device.type == "cpu" for t in tensors):
        return model
    model = copy.deepcopy(model).cpu()
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.numel() == 0:
                module._buffers[name] = None
    return model


def _encoder_for_model(model: MultiTaskModel, encoder: Any) -> FrameEncoder | None:
    """``encoder`` checked against the model's schema and narrowed to the model's tasks, in
    the model's order (a model built on ``data.select_tasks([...]).schema`` keeps the
    encoder of all the data's tasks); ``None`` for ``None``.

    Raises:
        TypeError: for something that is not a :class:`~mtlbook.data.FrameEncoder`.
        ValueError: for an encoder that is not fitted, whose features or cardinalities
            differ from the model's, or that lacks one of the model's tasks.
    """
    if encoder is None:
        return None
    if not isinstance(encoder, FrameEncoder):
        raise TypeError(f"encoder must be a fitted FrameEncoder, got {type(encoder).__name__}")
    if not encoder.fitted:
        raise ValueError("the encoder is not fitted; pass the one of the training data")
    schema = model.schema
    have = (list(encoder.dense), list(encoder.categorical), list(encoder.cardinalities))
    want = (list(schema.dense), list(schema.categorical), list(schema.cardinalities))
    if have != want:
        raise ValueError(
            "the encoder does not encode the model's features: it gives dense={}, "
            "categorical={}, cardinalities={}; the model expects dense={}, categorical={}, "
            "cardinalities={}. Pass the encoder of the data the model was trained on".format(
                *have, *want
            )
        )
    unknown = [
        t.name
        for t in schema.tasks
        if t.name not in encoder.tasks or encoder.tasks[t.name]["kind"] != t.kind
    ]
    if unknown:
        raise ValueError(
            f"the encoder lacks the model's task(s) {unknown} (with their kinds "
            f"{[schema.task(n).kind for n in unknown]}); its tasks are {encoder.tasks}"
        )
    if list(encoder.tasks) == list(schema.task_names):
        return encoder
    state = encoder.to_dict()
    state["tasks"] = {name: state["tasks"][name] for name in schema.task_names}
    return FrameEncoder.from_dict(state)


def _example_batch(
    model: MultiTaskModel, data: Any, encoder: FrameEncoder | None, rows: int
) -> Batch:
    """The example batch of an export: the first ``rows`` rows of ``data`` (a data set, or a
    raw frame encoded with ``encoder``), or ``rows`` rows of zeros for ``data=None``."""
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise ValueError(f"batch_size must be a positive integer, got {rows!r}")
    schema = model.schema
    if data is None:  # the graph depends on the shapes only; any valid codes will do
        return Batch(
            dense=torch.zeros(rows, schema.n_dense) if schema.dense else None,
            categorical=(
                torch.zeros(rows, len(schema.categorical), dtype=torch.long)
                if schema.categorical
                else None
            ),
        )
    if not isinstance(data, MultiTaskData | pd.DataFrame):
        raise TypeError(
            f"data must be a MultiTaskData, a raw DataFrame or None, got {type(data).__name__}"
        )
    if isinstance(data, pd.DataFrame):
        if encoder is None:
            raise ValueError(
                "data is a raw DataFrame, but there is no encoder to encode it: pass "
                "encoder= (a fitted FrameEncoder) or data as a MultiTaskData"
            )
        return _encoded_batch(encoder, data.iloc[:rows], "data")
    _check_data(data, schema)
    return _first_batch(data, rows)


def _encoded_batch(encoder: FrameEncoder, frame: pd.DataFrame, where: str) -> Batch:
    """The feature blocks of the raw rows ``frame``, encoded by ``encoder``, as a batch."""
    dense, categorical = encoder.features(frame, where=where)
    return Batch(
        dense=None if dense is None else torch.from_numpy(dense),
        categorical=None if categorical is None else torch.from_numpy(categorical),
    )


def _raw_frame(
    data: Any, encoder: FrameEncoder, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """``data`` as a DataFrame: itself, or the file it names read with
    :func:`~mtlbook.data.read_table` (only ``columns``, default the encoder's features; the
    categorical columns that held text in training are read as text)."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, str | os.PathLike):
        columns = encoder.feature_columns() if columns is None else list(columns)
        text = [c for c in encoder.categorical if encoder.kinds.get(c) == "text" and c in columns]
        return read_table(data, columns=columns, text_columns=text)
    raise TypeError(
        "data must be a pandas DataFrame or the path of a .csv or .parquet file, got "
        f"{type(data).__name__}"
    )


def _frame_batches(encoder: FrameEncoder, frame: pd.DataFrame, batch_size: int) -> Iterator[Batch]:
    """The rows of ``frame`` encoded by ``encoder``, in order, ``batch_size`` at a time."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    encoder.features(frame.iloc[:0], where="the frame")  # missing columns, even with no rows
    for start in range(0, len(frame), batch_size):
        rows = frame.iloc[start : start + batch_size]
        yield _encoded_batch(encoder, rows, f"the frame (rows {start}..{start + len(rows) - 1})")


def export_model(
    model: MultiTaskModel,
    data: MultiTaskData | pd.DataFrame | None,
    path: str | os.PathLike,
    *,
    example_batch_size: int = 8,
    encoder: FrameEncoder | None = None,
) -> Path:
    """Export ``model`` with :func:`torch.export.export` and save it to ``path`` (``.pt2``).

    The graph is captured on an example batch (the first ``example_batch_size`` rows of
    ``data``) with a dynamic batch dimension, so the saved model serves any batch size, 1
    included. The task names and feature blocks are saved in the same file (as an extra file
    ``mtlbook.json``), and so is the encoder of raw rows, when there is one (as
    ``mtlbook_encoder.json``), so :func:`load_exported` needs nothing but the path. The model
    is exported in evaluation mode (no dropout); its own mode is restored afterwards.

    Args:
        model: a trained (or freshly built) mtlbook model.
        data: data with the model's feature columns; only the first rows are used: a
            :class:`~mtlbook.data.MultiTaskData`, a raw DataFrame (encoded with the encoder),
            or ``None`` for an example batch of zeros (the graph depends on the shapes only).
        path: the file to write; its folder must exist. Write to a temporary folder rather
            than into a source tree.
        example_batch_size: rows of the example batch (at least 2 are used, so that the batch
            dimension is not specialised to 1).
        encoder: the :class:`~mtlbook.data.FrameEncoder` to store; default ``data.encoder``,
            else ``model.schema.encoder`` (set for models built on data from
            :meth:`MultiTaskData.from_frame <mtlbook.data.MultiTaskData.from_frame>`), else
            none. It is narrowed to the model's tasks.

    Returns:
        ``Path(path)``.

    Raises:
        TypeError: for something that is not a mtlbook model, a data set or an encoder.
        ValueError: when the data's feature columns or the encoder differ from the model's
            schema.
        FileNotFoundError: when the folder of ``path`` does not exist.
        RuntimeError: when ``torch.export`` cannot capture the model (its message is kept).
    """
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected a mtlbook model (MultiTaskModel), got {type(model).__name__}")
    if encoder is None:
        encoder = getattr(data, "encoder", None) if isinstance(data, MultiTaskData) else None
        encoder = encoder if encoder is not None else model.schema.encoder
    encoder = _encoder_for_model(model, encoder)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(path.parent)!r} does not exist")
    batch = _example_batch(model, data, encoder, max(2, example_batch_size))
    if len(batch) < 2:
        raise ValueError("export needs at least 2 rows of data for a dynamic batch dimension")
    program, names = _capture(model, batch)
    meta = {
        "format": _FORMAT,
        "model": type(model).__name__,
        "task_names": list(model.task_names),
        "task_kinds": [t.kind for t in model.schema.tasks],
        "inputs": names,
    }
    extra = {_META: json.dumps(meta)}
    if encoder is not None:
        extra[_ENCODER] = json.dumps(encoder.to_dict())
    # Written under the same name in a temporary folder beside it, then renamed: a failed or
    # interrupted export leaves no half-written file (and an older file at path as it was).
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        torch.export.save(program, folder / path.name, extra_files=extra)
        os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def _capture(model: MultiTaskModel, batch: Batch) -> tuple[Any, list[str]]:
    """``(exported program, its input names)`` of ``model`` on the example ``batch``."""
    was_training = model.training
    module = ServingModule(_exportable(model))
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
    return program, module.input_names()


class ExportedModel:
    """A model loaded by :func:`load_exported`: the exported graph, its task names and the
    encoder of raw rows (when the export has one).

    Call it with the feature tensors (as :class:`ServingModule` takes them) to get a tuple of
    predictions, use :meth:`predict_batch` / :meth:`predict` for ``{task: predictions}``, or
    :meth:`predict_frame` to score raw rows.

    Attributes:
        task_names: the tasks, in output order.
        inputs: the feature blocks the graph takes (``["dense", "categorical"]`` or one).
        model_name: the class name of the model that was exported.
        path: the file it was loaded from.
        encoder: the :class:`~mtlbook.data.FrameEncoder` stored with the graph, or ``None``
            for a model exported without one.
    """

    def __init__(
        self, module: nn.Module, meta: Mapping, path: Path, encoder: FrameEncoder | None = None
    ) -> None:
        self.module = module
        self.task_names = tuple(meta["task_names"])
        self.inputs = list(meta["inputs"])
        self.model_name = str(meta["model"])
        self.path = path
        self.encoder = encoder

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

    def predict_frame(
        self, data: pd.DataFrame | str | os.PathLike, batch_size: int = 4096
    ) -> pd.DataFrame:
        """Scores of raw rows, encoded with the stored :attr:`encoder`.

        Args:
            data: a DataFrame with (at least) the feature columns the model was trained on,
                or the path of a CSV or Parquet file (:func:`~mtlbook.data.read_table`).
                Labels are not needed; unseen and missing categorical values get the unknown
                codes.
            batch_size: rows per call of the graph.

        Returns:
            One column per task (probabilities for binary tasks), the rows in input order,
            indexed like the input frame.

        Raises:
            ValueError: when the export has no encoder, or a feature column is missing or
                changed type since training.
        """
        if self.encoder is None:
            raise ValueError(
                f"{str(self.path)!r} was exported without an encoder (the model was not "
                "trained on data from MultiTaskData.from_frame), so it cannot encode raw "
                "rows; export it with encoder=..., or encode the rows and use predict_batch"
            )
        frame = _raw_frame(data, self.encoder)
        parts: dict[str, list[np.ndarray]] = {t: [] for t in self.task_names}
        for batch in _frame_batches(self.encoder, frame, batch_size):
            for task, values in self.predict_batch(batch).items():
                parts[task].append(values.numpy())
        return pd.DataFrame(
            {t: np.concatenate(v) if v else np.zeros(0, np.float32) for t, v in parts.items()},
            index=frame.index,
        )

    def __repr__(self) -> str:
        encoder = ", with encoder" if self.encoder is not None else ""
        return (
            f"ExportedModel({self.model_name}, tasks={list(self.task_names)}, "
            f"path={str(self.path)!r}{encoder})"
        )


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """Load a file written by :func:`export_model` (no mtlbook model class is needed).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not an exported mtlbook model, or its encoder is of
            another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {str(path)!r}")
    extra = {_META: "", _ENCODER: ""}
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
    encoder = None
    if extra[_ENCODER]:
        try:
            encoder = FrameEncoder.from_dict(json.loads(extra[_ENCODER]))
        except ValueError as err:
            raise ValueError(f"the encoder stored in {str(path)!r} cannot be read: {err}") from err
    return ExportedModel(program.module(), meta, path, encoder)


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
