"""A trained run as one artefact on disk: :func:`~mtlbook.training.artefact.save`,
:func:`~mtlbook.training.artefact.load` and :class:`~mtlbook.training.artefact.SavedRun`.

A model alone cannot score tomorrow's rows: it needs the encoding of the training data (the
vocabularies of the categorical columns, their unknown codes, the dense statistics), and the
code that built it needs its arguments. :func:`save` writes all of it into one folder:

.. code-block:: text

    runs/mmoe/
        run.json    format and version, mtlbook and torch versions, creation time (UTC),
                    the model's class and constructor arguments, the schema, the encoder
                    (FrameEncoder.to_dict), the validation metrics at the best epoch, and
                    the user's metadata; plain JSON, readable by anyone
        model.pt    the model's weights (torch.save of its state_dict)
        model.pt2   only with export=True: the graph for serving, with the encoder inside
                    (mtlbook.analysis.serving.export_model)

:func:`load` reads the folder back as a :class:`SavedRun` without running any code from it
(the weights are read with ``torch.load(weights_only=True)``; the model is rebuilt from a
class of :mod:`mtlbook.models` by name). A loaded run scores raw rows: a DataFrame, or a CSV or
Parquet file, with at least the feature columns the model was trained on. Labels are needed
only by :meth:`SavedRun.evaluate`.

**Writes are atomic.** The folder is built under a hidden temporary name next to ``path``,
every file is synced to disk, and then it is renamed into place: an interrupted save leaves
nothing under ``path`` (or the previous run there, intact). An existing ``path`` is replaced
only with ``overwrite=True`` and only when it is a run itself; any other file or folder is
never touched.

**Versions.** ``run.json`` records :data:`RUN_FORMAT_VERSION`; a run of another version is
refused with a :class:`RunFormatError` that names both versions.

Example:
    >>> import tempfile
    >>> import pandas as pd
    >>> import mtlbook as mb
    >>> from mtlbook.models import SharedBottom
    >>> frame = pd.DataFrame({"price": [1.0, 2.0, 3.0, 4.0], "shop": ["a", "b", "a", "c"],
    ...                       "click": [1, 0, 1, 0], "buy": [1, 0, 0, 0]})
    >>> train = mb.MultiTaskData.from_frame(frame, dense=["price"], categorical=["shop"],
    ...                                     tasks={"click": "binary", "buy": "binary"})
    >>> model = SharedBottom(train.schema, bottom_units=(8,))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = mb.save(model, f"{folder}/run", metadata={"note": "a tiny example"})
    ...     run = mb.load(path)
    ...     scores = run.predict(pd.DataFrame({"price": [2.5], "shop": ["never seen"]}))
    >>> run.task_names, list(scores.columns)
    (('click', 'buy'), ['click', 'buy'])
    >>> run.info["metadata"]
    {'note': 'a tiny example'}
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import FrameEncoder, Schema
from ..data._io import table_columns
from ..models.base import MultiTaskModel
from .loop import FitResult

__all__ = [
    "EXPORT_FILE",
    "RUN_FILE",
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "WEIGHTS_FILE",
    "RunFormatError",
    "SavedRun",
    "load",
    "save",
]

#: What the ``format`` entry of every ``run.json`` says.
RUN_FORMAT = "mtlbook run"
#: The layout version of a run; a run of another version is refused by :func:`load`.
RUN_FORMAT_VERSION = 1
#: The file of a run folder that describes the run (JSON).
RUN_FILE = "run.json"
#: The file of a run folder that holds the model's weights (``torch.save`` of its state_dict).
WEIGHTS_FILE = "model.pt"
#: The file of a run folder that holds the graph for serving (only with ``export=True``).
EXPORT_FILE = "model.pt2"


class RunFormatError(ValueError):
    """A folder that is not a run :func:`load` can read: no ``run.json``, a ``run.json`` of
    another format or version, an unknown model class, or contents that do not agree."""


# ---------------------------------------------------------------------- saving
def save(
    model: MultiTaskModel,
    path: str | os.PathLike,
    *,
    result: FitResult | None = None,
    encoder: FrameEncoder | None = None,
    metadata: Mapping[str, Any] | None = None,
    export: bool = False,
    overwrite: bool = False,
) -> Path:
    """Save a trained model with its encoder, arguments and metrics as a run folder.

    Args:
        model: a model of :mod:`mtlbook.models` (its arguments must be plain JSON data).
        path: the run folder to create (its parent folders are created when missing).
        result: the :class:`~mtlbook.training.FitResult` of the training, whose best epoch,
            monitored score and validation metrics at that epoch are stored.
        encoder: the :class:`~mtlbook.data.FrameEncoder` of the training data; default
            ``model.schema.encoder`` (set when the model was built on data from
            :meth:`MultiTaskData.from_frame <mtlbook.data.MultiTaskData.from_frame>`).
        metadata: anything else to keep with the run, as a dict of plain JSON data.
        export: also write ``model.pt2``, the graph for serving with the encoder inside.
        overwrite: replace an existing run at ``path``.

    Returns:
        ``Path(path)``.

    Raises:
        TypeError: for something that is not a mtlbook model or a FitResult.
        ValueError: for a model argument or ``metadata`` that is not plain JSON data (named),
            a model class outside :mod:`mtlbook.models`, no encoder, or an encoder that does
            not match the model.
        FileExistsError: when ``path`` exists and ``overwrite`` is false, or when it exists
            and is not a run (never overwritten).
    """
    from .. import __version__  # the package imports this module

    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected a mtlbook model (MultiTaskModel), got {type(model).__name__}")
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a folder path (str or os.PathLike), got {path!r}")
    path = Path(path)
    encoder = _run_encoder(model, encoder)
    info = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "mtlbook_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"class": _model_class(model), "arguments": _model_arguments(model)},
        "schema": _schema_dict(model.schema),
        "encoder": encoder.to_dict(),
        "metrics": _best_metrics(result),
        "metadata": _metadata(metadata),
        "files": {"weights": WEIGHTS_FILE, "export": EXPORT_FILE if export else None},
    }
    _check_target(path, overwrite)

    def write(folder: Path) -> None:
        _write_json(folder / RUN_FILE, info)
        with open(folder / WEIGHTS_FILE, "wb") as file:
            torch.save(model.state_dict(), file)
            _sync(file)
        if export:
            from ..analysis.serving import export_model  # analysis imports training

            export_model(model, None, folder / EXPORT_FILE, encoder=encoder)
            with open(folder / EXPORT_FILE, "rb") as file:
                os.fsync(file.fileno())

    _write_folder(path, write)
    return path


def _run_encoder(model: MultiTaskModel, encoder: Any) -> FrameEncoder:
    """The encoder to store: ``encoder`` or the model's, checked and narrowed to its tasks."""
    from ..analysis.serving import _encoder_for_model  # analysis imports training

    encoder = encoder if encoder is not None else model.schema.encoder
    if encoder is None:
        raise ValueError(
            "the model has no encoder: it was not built on data from "
            "MultiTaskData.from_frame, so a saved run could not encode raw rows. Build the "
            "data with MultiTaskData.from_frame, or pass encoder= (the fitted FrameEncoder "
            "of the training data)"
        )
    narrowed = _encoder_for_model(model, encoder)
    assert narrowed is not None
    return narrowed


def _model_class(model: MultiTaskModel) -> str:
    from .. import models  # models is imported by the package before training

    name = type(model).__name__
    if getattr(models, name, None) is not type(model):
        raise ValueError(
            f"only the models of mtlbook.models can be saved as a run (load rebuilds them by "
            f"name); {type(model).__module__}.{type(model).__qualname__} is not one of them. "
            "Save its state_dict with torch.save instead"
        )
    return name


def _model_arguments(model: MultiTaskModel) -> dict[str, Any]:
    """The model's constructor arguments as JSON data (tuples become lists)."""
    name = type(model).__name__
    out = {}
    for argument, value in model.init_arguments.items():
        try:
            out[argument] = _to_json(value, f"argument {argument!r} of {name}")
        except ValueError as err:
            hint = ""
            if callable(value):
                hint = (
                    "; a run rebuilds the model from its arguments, so give it by name instead "
                    "of a callable" + (" (ESMM: backbone='mlp')" if name == "ESMM" else "")
                )
            raise ValueError(f"{err}{hint}") from None
    return out


def _to_json(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (tuples as lists, numpy scalars as numbers), or a
    ``ValueError`` naming ``where``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic) and isinstance(value.item(), bool | int | float | str):
        return _to_json(value.item(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}; JSON holds finite numbers only")
        return float(value)
    if isinstance(value, list | tuple):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r}; JSON keys are strings")
        return {key: _to_json(v, f"{where}[{key!r}]") for key, v in value.items()}
    raise ValueError(
        f"{where} is {value!r} ({type(value).__name__}), not plain JSON data (None, bool, "
        "int, float, str, and lists and dicts of these)"
    )


def _metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(
            f"metadata must be a dict of plain JSON data, got {type(metadata).__name__}"
        )
    return _to_json(metadata, "metadata")


def _schema_dict(schema: Schema) -> dict[str, Any]:
    return {
        "dense": list(schema.dense),
        "categorical": list(schema.categorical),
        "cardinalities": [int(c) for c in schema.cardinalities],
        "tasks": [{"name": t.name, "kind": t.kind} for t in schema.tasks],
    }


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _best_metrics(result: Any) -> dict[str, Any] | None:
    """The best epoch, the monitored score and the validation metrics at that epoch."""
    if result is None:
        return None
    if not isinstance(result, FitResult):
        raise TypeError(f"result must be the FitResult of mtlbook.fit, got {type(result).__name__}")
    history = result.history
    rows = history[(history["split"] == "valid") & (history["epoch"] == result.best_epoch)]
    return {
        "best_epoch": int(result.best_epoch),
        "monitor": str(result.monitor),
        "best_score": _finite(result.best_score),
        "epochs_run": int(result.epochs_run),
        "valid": [
            {"task": str(task), "metric": str(metric), "value": _finite(value)}
            for task, metric, value in rows[["task", "metric", "value"]].itertuples(index=False)
        ],
    }


# ---------------------------------------------------------------------- the folder on disk
def _is_run(path: Path) -> bool:
    """Whether ``path`` is a folder with a ``run.json`` of this format (any version)."""
    try:
        info = json.loads((path / RUN_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return path.is_dir() and not path.is_symlink() and info.get("format") == RUN_FORMAT


def _check_target(path: Path, overwrite: bool) -> None:
    if not (path.exists() or path.is_symlink()):
        return
    if not _is_run(path):
        kind = "folder" if path.is_dir() else "file"
        raise FileExistsError(
            f"{str(path)!r} is an existing {kind} that is not a mtlbook run; it is never "
            "overwritten (not even with overwrite=True). Choose another path or remove it"
        )
    if not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already holds a mtlbook run; pass overwrite=True to replace it, "
            "or choose another path"
        )


def _sync(file: Any) -> None:
    file.flush()
    os.fsync(file.fileno())


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (new and renamed files) to disk where the system allows."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open a folder
        return
    try:
        os.fsync(handle)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(handle)


def _write_json(path: Path, info: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(info, file, indent=2, ensure_ascii=False, allow_nan=False)
        file.write("\n")
        _sync(file)


def _write_folder(path: Path, write: Any) -> None:
    """Build the run in a hidden temporary folder next to ``path`` with ``write(folder)``,
    then rename it into place (moving an old run aside first and removing it last)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        mode = (path.stat().st_mode & 0o777) if path.is_dir() else 0o755
        write(temporary)
        _sync_folder(temporary)
        os.chmod(temporary, mode)
        if path.exists():  # a run (checked): aside, then the new one in its place
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)
            try:
                os.rename(temporary, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temporary, path)
        _sync_folder(path.parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


# ---------------------------------------------------------------------- loading
def load(path: str | os.PathLike) -> SavedRun:
    """Read a run folder written by :func:`save`.

    Returns:
        The :class:`SavedRun`, its model rebuilt with the saved arguments and weights, on the
        CPU and in evaluation mode.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        RunFormatError: for a folder without ``run.json``, a ``run.json`` of another format
            or version, a model class mtlbook does not have, or contents that disagree
            (the schema and the encoder, the weights and the model).
    """
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a folder path (str or os.PathLike), got {path!r}")
    path = Path(path)
    info = _read_info(path)
    try:
        encoder = FrameEncoder.from_dict(info["encoder"])
    except (ValueError, TypeError) as err:
        raise RunFormatError(
            f"the encoder in {str(path / RUN_FILE)!r} cannot be read: {err}"
        ) from err
    _check_schema(path, info["schema"], encoder)
    model = _rebuild(path, info["model"], encoder.schema)
    return SavedRun(model, encoder, info, path)


def _read_info(path: Path) -> dict[str, Any]:
    """The checked contents of ``run.json``."""
    from .. import __version__

    if not path.exists():
        raise FileNotFoundError(f"no run at {str(path)!r}")
    if not (path / RUN_FILE).is_file():
        raise RunFormatError(
            f"{str(path)!r} is not a mtlbook run: it has no {RUN_FILE} (a run is the folder "
            "written by mtlbook.save)"
        )
    try:
        info = json.loads((path / RUN_FILE).read_text("utf-8"))
    except ValueError as err:
        raise RunFormatError(f"{str(path / RUN_FILE)!r} is not valid JSON: {err}") from None
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise RunFormatError(
            f"{str(path / RUN_FILE)!r} is of format {found!r}, not {RUN_FORMAT!r}: the folder "
            "was not written by mtlbook.save"
        )
    version = info.get("format_version")
    if version != RUN_FORMAT_VERSION:
        wrote = info.get("mtlbook_version", "unknown")
        raise RunFormatError(
            f"the run {str(path)!r} has format version {version!r} (written by mtlbook "
            f"{wrote}); this mtlbook {__version__} reads format version {RUN_FORMAT_VERSION}. "
            f"Install the mtlbook version that wrote it ({wrote}) to use it, or save the run "
            f"again with mtlbook {__version__}"
        )
    missing = [k for k in ("model", "schema", "encoder") if not isinstance(info.get(k), dict)]
    if missing:
        raise RunFormatError(f"{str(path / RUN_FILE)!r} lacks the entries {missing}")
    return info


def _check_schema(path: Path, saved: Mapping[str, Any], encoder: FrameEncoder) -> None:
    """The schema in ``run.json`` must be the one its encoder gives."""
    have = _schema_dict(encoder.schema)
    for key in ("dense", "categorical", "cardinalities", "tasks"):
        if list(saved.get(key, [])) != have[key]:
            raise RunFormatError(
                f"{str(path / RUN_FILE)!r} is inconsistent: the schema's {key} are "
                f"{saved.get(key)}, its encoder's {have[key]}; the file was changed after "
                "it was saved"
            )


def _rebuild(path: Path, spec: Mapping[str, Any], schema: Schema) -> MultiTaskModel:
    """The model of class ``spec["class"]`` built with its arguments and saved weights."""
    from .. import models

    name = spec.get("class")
    cls = getattr(models, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, MultiTaskModel)):
        raise RunFormatError(
            f"the run {str(path)!r} holds a model of class {name!r}, which this mtlbook does "
            f"not have; its models are {list(models.__all__)}"
        )
    try:
        model = cls(schema, **spec.get("arguments", {}))
    except (TypeError, ValueError) as err:
        raise RunFormatError(
            f"the run's model {name} cannot be built with the saved arguments "
            f"{spec.get('arguments')}: {err}"
        ) from err
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise RunFormatError(f"the run {str(path)!r} has no weights file {WEIGHTS_FILE}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # unpickling and shape errors come in many kinds
        raise RunFormatError(
            f"the weights {str(weights)!r} do not fit the model {name}: {err}"
        ) from err
    return model.eval()


# ---------------------------------------------------------------------- a loaded run
class SavedRun:
    """A run read by :func:`load`: the model, its encoder and what ``run.json`` says.

    Attributes:
        model: the rebuilt model, in evaluation mode.
        encoder: the :class:`~mtlbook.data.FrameEncoder` of the training data.
        info: the contents of ``run.json`` (versions, model arguments, schema, metrics at the
            best epoch, metadata, ...).
        path: the run folder.
    """

    def __init__(
        self, model: MultiTaskModel, encoder: FrameEncoder, info: dict[str, Any], path: Path
    ) -> None:
        self.model = model
        self.encoder = encoder
        self.info = info
        self.path = Path(path)

    @property
    def schema(self) -> Schema:
        """The model's :class:`~mtlbook.data.Schema` (with the encoder)."""
        return self.model.schema

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.model.task_names

    @torch.no_grad()
    def predict(
        self, data: pd.DataFrame | str | os.PathLike, batch_size: int = 8192
    ) -> pd.DataFrame:
        """Scores of raw rows, encoded with the run's encoder.

        Args:
            data: a DataFrame, or the path of a CSV or Parquet file
                (:func:`~mtlbook.data.read_table`; only the feature columns are read, and
                the categorical columns that held text in training are read as text). Labels
                are not needed; unseen and missing categorical values get the unknown codes.
            batch_size: rows per forward pass.

        Returns:
            One column per task (the probability for a binary task, the prediction for a
            regression task), then the model's extra columns: ``pctr``, ``pcvr``,
            ``pctcvr`` for :class:`~mtlbook.models.ESMM`, and ``pctcvr`` for
            :class:`~mtlbook.models.AITM`, a copy of its last step's probability. AITM
            learns every step over all impressions (a later step is 0 where the earlier one
            did not happen), so the last step's probability is already P(every step | x),
            e.g. P(click and buy); a ``pcvr`` would be a ratio of two separately fitted
            probabilities, not bounded by 1, so none is given. The rows are in input order,
            indexed like the input frame.

        Raises:
            ValueError: when a feature column is missing or its type changed since training.
        """
        from ..analysis.serving import _frame_batches, _raw_frame

        frame = _raw_frame(data, self.encoder)
        device = next(iter(self.model.parameters()), torch.empty(0)).device
        was_training = self.model.training
        self.model.eval()
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.task_names}
        try:
            for batch in _frame_batches(self.encoder, frame, batch_size):
                out = _with_funnel(self.model, self.model.predict_batch(batch.to(device)))
                for name, values in out.items():
                    parts.setdefault(name, []).append(values.float().cpu().numpy())
        finally:
            self.model.train(was_training)
        return pd.DataFrame(
            {
                name: np.concatenate(v) if v else np.zeros(0, np.float32)
                for name, v in parts.items()
            },
            index=frame.index,
        )

    def evaluate(
        self,
        data: pd.DataFrame | str | os.PathLike,
        metrics: Sequence[str] | None = None,
        batch_size: int = 8192,
    ) -> pd.DataFrame:
        """Metrics of the model on labelled rows (:func:`mtlbook.evaluate`).

        Args:
            data: a DataFrame or the path of a CSV or Parquet file with the feature columns
                and the label columns (and the mask and group columns the tasks use).
            metrics: keep only these metrics (e.g. ``["auc"]``); default all of them.
            batch_size: rows per forward pass.

        Returns:
            A tidy DataFrame ``task, metric, value``.

        Raises:
            ValueError: when a label, mask or group column is missing (named; ``predict``
                does not need them), or for a metric name that was not computed.
        """
        from ..metrics import evaluate

        labels = self.encoder.label_columns()
        if isinstance(data, pd.DataFrame):
            present: Sequence[str] = list(data.columns)
        elif isinstance(data, str | os.PathLike):
            present = table_columns(data)
        else:
            raise TypeError(
                "data must be a pandas DataFrame or the path of a .csv or .parquet file, "
                f"got {type(data).__name__}"
            )
        missing = [c for c in labels if c not in present]
        if missing:
            raise ValueError(
                f"evaluate needs the label column(s) {missing} (labels, masks and groups of "
                f"the tasks {list(self.task_names)}), which the data lack; predict does not "
                "need them"
            )
        from ..analysis.serving import _raw_frame

        frame = _raw_frame(data, self.encoder, self.encoder.feature_columns() + labels)
        table = evaluate(self.model, self.encoder.transform(frame), batch_size=batch_size)
        if metrics is None:
            return table
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [m for m in metrics if m not in set(table["metric"])]
        if unknown:
            raise ValueError(
                f"metric(s) {unknown} were not computed; the metrics are "
                f"{sorted(set(table['metric']))}"
            )
        return table[table["metric"].isin(metrics)].reset_index(drop=True)

    def export(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Export the model for serving, with the encoder inside, to the file ``path``
        (``.pt2``; :func:`mtlbook.analysis.serving.load_exported` reads it, and its
        ``predict_frame`` scores raw rows as :meth:`predict` does).

        Raises:
            FileExistsError: when ``path`` exists and ``overwrite`` is false.
            FileNotFoundError: when the folder of ``path`` does not exist.
        """
        from ..analysis.serving import export_model

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{str(path)!r} exists; pass overwrite=True to replace it, or choose another path"
            )
        if path.is_dir():
            raise IsADirectoryError(
                f"{str(path)!r} is a folder; give a file path such as 'model.pt2'"
            )
        return export_model(self.model, None, path, encoder=self.encoder)

    def __repr__(self) -> str:
        return (
            f"SavedRun({type(self.model).__name__}, tasks={list(self.task_names)}, "
            f"path={str(self.path)!r}, saved {self.info.get('created')} with mtlbook "
            f"{self.info.get('mtlbook_version')})"
        )


def _with_funnel(model: MultiTaskModel, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``out`` plus AITM's ``pctcvr`` (its last step's probability), unless there already
    is such a column (ESMM gives its own)."""
    from ..models import AITM

    if isinstance(model, AITM) and "pctcvr" not in out:
        out = {**out, "pctcvr": out[model.sequence[-1]]}
    return out
