"""The writer: :func:`write_parquet_shards` lays a :class:`~mtlbook.data.MultiTaskData` out as
Parquet shards, with metadata from which :class:`ParquetSource` reads it back unchanged."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...data import MultiTaskData
from ._common import _FORMAT, METADATA_KEY, _arrow

__all__ = ["write_parquet_shards"]


@dataclass(frozen=True)
class _Layout:
    """Where the parts of a :class:`~mtlbook.data.MultiTaskData` go among a shard's columns."""

    masks: dict[str, str]  # task → its boolean mask column, for the masked tasks
    group: str | None  # the column of group ids, when the data have them
    vocab: dict[str, list[Any] | None]  # categorical column → the values written (None: codes)


def _json_values(index: pd.Index) -> list[Any] | None:
    """The vocabulary as a JSON list when its values survive the trip, else ``None``."""
    values = index.tolist()
    kinds = {type(v) for v in values}
    if len(kinds) != 1 or kinds.pop() not in (str, int, float, bool):
        return None
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return None
    return values


def _free_name(wanted: str, taken: set[str]) -> str:
    name = wanted
    while name in taken:
        name = "_" + name
    return name


def _check_arguments(data: Any, rows_per_shard: Any, row_group_size: Any) -> int:
    """Check the arguments of :func:`write_parquet_shards`; the row group size to use."""
    if not isinstance(data, MultiTaskData):
        raise ValueError(f"data must be a MultiTaskData, got {type(data).__name__}")
    for name, value in (("rows_per_shard", rows_per_shard), ("row_group_size", row_group_size)):
        if value is None and name == "row_group_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if len(data) == 0:
        raise ValueError("data has no rows; there is nothing to write")
    return min(rows_per_shard, 65_536) if row_group_size is None else row_group_size


def _layout(data: MultiTaskData) -> _Layout:
    """The mask and group columns (named apart from the other columns) and the vocabularies
    written as values: those of ``data.meta["categories"]`` that fit the cardinality (``k``
    values for ``k + 1`` codes, the last one unknown, as after ``from_frame``; or ``k`` values
    for ``k`` codes) and survive a trip through JSON."""
    schema = data.schema
    taken = set(schema.dense) | set(schema.categorical) | set(schema.task_names)
    masks = {}
    for task in schema.task_names:
        if task in data.masks:
            masks[task] = _free_name(f"{task}__mask", taken)
            taken.add(masks[task])
    group = _free_name("group", taken) if data.groups is not None else None

    known = data.meta.get("categories") or {}
    vocab: dict[str, list[Any] | None] = {}
    for col, card in zip(schema.categorical, schema.cardinalities, strict=True):
        values = None
        if col in known and card - len(known[col]) in (0, 1):
            values = _json_values(pd.Index(known[col]))
        vocab[col] = values
    return _Layout(masks, group, vocab)


def _metadata(data: MultiTaskData, layout: _Layout) -> dict[bytes, bytes]:
    """The schema metadata of every shard: the column spec, cardinalities and vocabularies."""
    schema = data.schema
    spec = {
        "format": _FORMAT,
        "dense": list(schema.dense),
        "categorical": list(schema.categorical),
        "cardinalities": list(schema.cardinalities),
        "categories": layout.vocab,
        "tasks": [
            {"name": t.name, "kind": t.kind, "mask": layout.masks.get(t.name)} for t in schema.tasks
        ],
        "group": layout.group,
    }
    return {METADATA_KEY: json.dumps(spec).encode()}


def _targets(folder: Path, n_rows: int, rows_per_shard: int) -> list[Path]:
    """The shards' paths, ``part-00000.parquet`` onwards; raises if any of them exists."""
    n_shards = -(-n_rows // rows_per_shard)
    width = max(5, len(str(n_shards - 1)))
    targets = [folder / f"part-{i:0{width}d}.parquet" for i in range(n_shards)]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise FileExistsError(
            f"{existing[:3]}{' ...' if len(existing) > 3 else ''} already "
            "exist; nothing is overwritten. Choose another folder or remove "
            "them"
        )
    return targets


def _columns(
    data: MultiTaskData, layout: _Layout, values_of: Mapping[str, Any], lo: int, hi: int
) -> dict[str, Any]:
    """The Arrow columns of rows ``lo:hi``; ``values_of`` holds each vocabulary written as
    values, as an Arrow array."""
    pa, _, _ = _arrow()
    schema = data.schema
    columns: dict[str, Any] = {}
    for j, col in enumerate(schema.dense):
        assert data.dense is not None  # a schema with dense columns has a dense block
        columns[col] = pa.array(data.dense[lo:hi, j], type=pa.float32())
    for j, col in enumerate(schema.categorical):
        assert data.categorical is not None  # likewise for the categorical block
        codes = data.categorical[lo:hi, j]
        if layout.vocab[col] is None:
            columns[col] = pa.array(codes, type=pa.int64())
        else:  # the unknown code (one past the vocabulary) is written as a missing value
            unknown = codes >= len(values_of[col])
            columns[col] = values_of[col].take(pa.array(codes, mask=unknown))
    for task in schema.task_names:
        y = data.labels[task][lo:hi].astype(np.float64)
        if task in data.masks:
            mask = data.masks[task][lo:hi]
            columns[layout.masks[task]] = pa.array(mask, type=pa.bool_())
            y = np.where(mask, y, np.nan)
        columns[task] = pa.array(y, type=pa.float64())
    if layout.group is not None:
        columns[layout.group] = pa.array(data.groups[lo:hi], type=pa.int64())
    return columns


def _write_files(
    tables: Iterable[Any], targets: list[Path], folder: Path, row_group_size: int
) -> list[Path]:
    """Write each table (made lazily, one per target) under a temporary name in ``folder``,
    then link them all to their targets; on failure, remove the files of this call."""
    _, _, pq = _arrow()
    written: list[Path] = []
    temporary: list[str] = []
    try:
        for target, table in zip(targets, tables, strict=True):
            handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
            os.close(handle)
            temporary.append(tmp)
            pq.write_table(table, tmp, row_group_size=row_group_size)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, target in zip(temporary, targets, strict=True):
            try:
                os.link(tmp, target)  # fails if the target exists: never overwrites
            except FileExistsError:
                raise FileExistsError(
                    f"{str(target)!r} appeared while writing; it is not overwritten"
                ) from None
            written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temporary:
            Path(tmp).unlink(missing_ok=True)
    return written


def write_parquet_shards(
    data: MultiTaskData,
    folder: str | os.PathLike,
    rows_per_shard: int,
    *,
    row_group_size: int | None = None,
) -> list[Path]:
    """Write a :class:`~mtlbook.data.MultiTaskData` as Parquet shards that
    :class:`ParquetSource` reads back with the same schema, codes and rows.

    The shards are ``part-00000.parquet``, ``part-00001.parquet``, ... in ``folder`` (created
    if needed), ``rows_per_shard`` rows each (the last may hold fewer), in row order. Each
    holds the dense columns (float32), the categorical columns (their original values when
    ``data.meta["categories"]`` has them — as after ``from_frame`` — else the codes; a row
    with the unknown code holds a missing value), one column per task (NaN outside its
    mask), a boolean ``<task>__mask`` column per masked task and a ``group`` column when the
    data have group ids (names prefixed with ``_`` as needed to stay distinct). The column
    spec, the cardinalities and the vocabularies are stored in each file's metadata, so
    ``ParquetSource(folder)`` needs no other argument and reads the same codes and
    cardinalities back. Ground truth (``data.truth``) is not written.

    Nothing is overwritten: if any of the files exists, nothing is written. Each file is
    written under a temporary name in ``folder`` and then linked to its name, so a file of
    that name is always complete; if writing fails, the files of this call are removed.

    Args:
        data: the data to write.
        folder: where to write the shards.
        rows_per_shard: rows per file.
        row_group_size: rows per Parquet row group (default ``min(rows_per_shard, 65536)``);
            a reader holds one decoded row group at a time.

    Returns:
        The paths of the files written, in order.

    Raises:
        FileExistsError: when one of the files exists.
        ValueError: for bad arguments or data without rows.

    Example:
        >>> import tempfile
        >>> import mtlbook as mb
        >>> folder = tempfile.mkdtemp()
        >>> data = mb.make_correlated_tasks(250, 0.5, seed=0)
        >>> [p.name for p in write_parquet_shards(data, folder, rows_per_shard=100)]
        ['part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet']
    """
    pa, _, _ = _arrow()
    row_group_size = _check_arguments(data, rows_per_shard, row_group_size)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} exists and is not a folder")
    layout = _layout(data)
    metadata = _metadata(data, layout)
    targets = _targets(folder, len(data), rows_per_shard)
    folder.mkdir(parents=True, exist_ok=True)
    values_of = {
        col: pa.array(values) for col, values in layout.vocab.items() if values is not None
    }
    n = len(data)
    # One table per shard, made only when that shard is written.
    tables = (
        pa.table(
            _columns(data, layout, values_of, lo, min(n, lo + rows_per_shard))
        ).replace_schema_metadata(metadata)
        for lo in range(0, n, rows_per_shard)
    )
    return _write_files(tables, targets, folder, row_group_size)
