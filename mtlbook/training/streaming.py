"""Data larger than memory: :class:`ParquetSource` streams mini-batches from Parquet shards.

A :class:`ParquetSource` reads a list of Parquet files (*shards*) with the column spec of
:meth:`MultiTaskData.from_frame <mtlbook.data.MultiTaskData.from_frame>` (dense, categorical,
tasks with masks, group) and yields the same :class:`~mtlbook.data.Batch` objects as
:meth:`MultiTaskData.loader <mtlbook.data.MultiTaskData.loader>`, holding only a bounded number
of rows in memory. The rows of the source are the rows of its shards, shard after shard in the
order given (sorted by name for a folder or a glob), each shard in its own row order: the
source over the shards of a DataFrame ``df`` describes the same data as
``MultiTaskData.from_frame(df, ...)``, with the same :class:`~mtlbook.data.Schema`.

**Categorical vocabularies** are fixed before any batch is produced, so that a value has the
same code in every shard and every pass. They come, per column, from (in this order) the
``categories`` argument (codes are positions in the given sequence), the metadata of shards
written by :func:`write_parquet_shards` (which stores the in-memory vocabulary, unobserved
values included), or one streaming pass over that column of every shard (codes are positions
among the sorted distinct values, as in ``from_frame``).

**Validation** happens per row group, with the checks and messages of ``from_frame`` (NaN or
inf features, missing categories, labels other than 0/1, NaN labels inside a mask, masks that
are not boolean, missing group ids, missing columns, labels listed as features), each message
naming the shard file and the row (0-based, within the shard). By default the constructor
reads every row group once to validate it; every row group is checked again whenever it is
read.

**Shuffling** (``shuffle=True``) has two modes, chosen with ``shuffle_mode``:

* ``"buffer"`` (default): each pass visits the shards in a random order and the row groups
  of each shard in a random order, and mixes the rows in a buffer of ``buffer_rows`` rows
  (when the buffer is full it is permuted, the rows for all whole batches beyond half the
  buffer are emitted and the other half stays to be mixed with the next row groups). A batch
  therefore mixes rows of neighbouring row groups only, not of the whole data set: if the
  shards are sorted (by time, by user), write them shuffled or use a large buffer. The order
  is fixed by the seed but differs from the in-memory loader's.
* ``"exact"``: each pass draws the permutation the in-memory loader draws
  (``torch.randperm(n)`` from a generator seeded the same way), so the batches are exactly
  those of ``MultiTaskData.loader`` with the same seed. The permutation is processed in
  chunks of ``buffer_rows`` rows; each chunk reads the shards once and keeps its rows.
  By default the chunk is the whole data set (one read per pass, all rows in memory — for
  data that fit); a smaller ``buffer_rows`` bounds the memory at the cost of
  ``ceil(n / buffer_rows)`` reads per pass. The permutation itself takes 8 bytes per row.

Unshuffled loaders (``shuffle=False``) read the rows in order, one row group at a time, and
give exactly the batches of the in-memory loader.

**Memory.** Besides the permutation of the exact mode, a loader holds at most about twice
``buffer_rows`` plus the rows of the largest row group, decoded to float32/int64 arrays (the
rows held and one copy of them while a buffer is mixed), and the Parquet reader decodes one
row group at a time: write shards with moderate row groups
(:func:`write_parquet_shards` uses 65,536 rows by default).

**Distributed training.** ``loader(..., shard=(rank, world_size))`` gives each process a
contiguous part of every global batch (sizes differing by at most one); every process reads
all the row groups.

Validation and test data, which :func:`~mtlbook.evaluate` scores as a whole, stay in memory:
:meth:`ParquetSource.to_data` reads a (small) source into a :class:`MultiTaskData`.

This module needs ``pyarrow`` (``pip install "mtlbook[stream]"``); it is imported only when
a source is built or shards are written.
"""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import Batch, MultiTaskData, Schema, TaskSpec
from ..data._core import parse_task_spec, shard_bounds

__all__ = ["SHUFFLE_MODES", "ParquetLoader", "ParquetSource", "write_parquet_shards"]

#: The shuffling modes of :meth:`ParquetSource.loader`.
SHUFFLE_MODES = ("buffer", "exact")

#: Rows of the shuffle buffer of ``shuffle_mode="buffer"`` when ``buffer_rows`` is not given.
DEFAULT_BUFFER_ROWS = 262_144

#: Key of the schema metadata that :func:`write_parquet_shards` stores in each shard.
METADATA_KEY = b"mtlbook"
_FORMAT = 1


def _arrow() -> tuple[Any, Any, Any]:
    """``(pyarrow, pyarrow.compute, pyarrow.parquet)``, with a clear error when missing."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("mtlbook.training.streaming needs pyarrow: pip install 'mtlbook[stream]' "
                          "(or pip install pyarrow)") from err
    return pa, pc, pq


# ---------------------------------------------------------------------- decoded rows
@dataclass
class _Block:
    """Decoded rows, laid out as a :class:`Batch` needs them (NumPy arrays)."""

    dense: np.ndarray | None
    categorical: np.ndarray | None
    labels: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]

    def __len__(self) -> int:
        block = self.dense if self.dense is not None else self.categorical
        return 0 if block is None else len(block)

    def take(self, index: np.ndarray | slice) -> _Block:
        return _Block(
            dense=None if self.dense is None else self.dense[index],
            categorical=None if self.categorical is None else self.categorical[index],
            labels={k: v[index] for k, v in self.labels.items()},
            masks={k: v[index] for k, v in self.masks.items()},
        )

    @staticmethod
    def concat(blocks: Sequence[_Block]) -> _Block:
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        return _Block(
            dense=None if first.dense is None else np.concatenate([b.dense for b in blocks]),
            categorical=None if first.categorical is None
            else np.concatenate([b.categorical for b in blocks]),
            labels={k: np.concatenate([b.labels[k] for b in blocks]) for k in first.labels},
            masks={k: np.concatenate([b.masks[k] for b in blocks]) for k in first.masks},
        )

    def batch(self) -> Batch:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a))

        return Batch(
            dense=None if self.dense is None else tensor(self.dense),
            categorical=None if self.categorical is None else tensor(self.categorical),
            labels={k: tensor(v) for k, v in self.labels.items()},
            masks={k: tensor(v) for k, v in self.masks.items()},
        )


@dataclass(frozen=True)
class _RowGroup:
    shard: int  # index into ParquetSource.shards
    index: int  # row group within the shard
    start: int  # first row within the shard
    offset: int  # first row within the source
    rows: int


# ---------------------------------------------------------------------- paths
def _resolve_paths(paths: Any) -> tuple[Path, ...]:
    if isinstance(paths, str | os.PathLike):
        items = [paths]
    elif isinstance(paths, Sequence) and not isinstance(paths, bytes):
        items = list(paths)
    else:
        raise TypeError("paths must be a file, a folder, a glob pattern or a list of files, "
                        f"got {type(paths).__name__}")
    if not items:
        raise ValueError("paths is empty; give at least one Parquet file")
    out: list[Path] = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise TypeError(f"paths must hold file paths, got {item!r}")
        text = os.fspath(item)
        if os.path.isdir(text):
            found = sorted(Path(text).glob("*.parquet"))
            if not found:
                raise FileNotFoundError(f"the folder {text!r} holds no *.parquet file")
            out.extend(found)
        elif os.path.exists(text):
            out.append(Path(text))
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text))
            if not found:
                raise FileNotFoundError(f"no file matches the pattern {text!r}")
            out.extend(found)
        else:
            raise FileNotFoundError(f"no such Parquet file or folder: {text!r}")
    seen = set()
    for path in out:
        key = os.path.abspath(path)
        if key in seen:
            raise ValueError(f"the shard {str(path)!r} is listed twice")
        seen.add(key)
    return tuple(out)


# ---------------------------------------------------------------------- the source
class ParquetSource:
    """Multi-task training data streamed from Parquet shards, for data larger than memory.

    The column spec is that of :meth:`MultiTaskData.from_frame
    <mtlbook.data.MultiTaskData.from_frame>`. For shards written by
    :func:`write_parquet_shards`, leave ``tasks`` (and the other column arguments) out: the
    spec and the vocabularies stored in the shards are used. The module docstring describes
    the vocabularies, the validation, the two shuffling modes and the memory bound.

    Args:
        paths: a Parquet file, a folder (its ``*.parquet`` files, sorted by name), a glob
            pattern (the matching files, sorted) or a list of these; the rows of the source
            are those of the files in this order.
        dense: numeric feature columns (used as float32, not rescaled).
        categorical: categorical feature columns, encoded with fixed vocabularies.
        tasks: label column → kind (``"binary"`` or ``"regression"``), or → ``{"kind": ...,
            "mask": column}`` for a task defined only where ``mask`` is true (labels outside
            it may be NaN). ``None``: read the spec from the shards' metadata.
        group: optional column of group ids (for example the user id), kept by
            :meth:`to_data` for GAUC; batches do not carry it.
        categories: categorical column → its vocabulary (a sequence of distinct values; a
            value's code is its position). Columns not given here take the vocabulary stored
            in the shards, or else the sorted distinct values found by one streaming pass.
        validate: read every row group once now and raise on the first bad one. ``False``
            only reads the files' footers now (and the categorical columns when a vocabulary
            must be built); a bad row group then raises when it is first read.
        shuffle_mode: default shuffling of :meth:`loader`: ``"buffer"`` or ``"exact"``.
        buffer_rows: default buffer of :meth:`loader` (``None``: 262,144 rows in
            ``"buffer"`` mode, every row in ``"exact"`` mode).

    Attributes:
        shards: the Parquet files, in order.
        schema: the :class:`~mtlbook.data.Schema`, equal to that of the in-memory data.
        categories: categorical column → vocabulary (a ``pandas.Index``; a value's code is
            its position), as ``data.meta["categories"]`` of ``from_frame``.
        masks: task name → its mask column, for masked tasks.
        group: the group column or ``None``.

    Raises:
        ValueError: for a bad spec, a column missing from a shard, a non-numeric dense
            column, labels listed as features, a bad vocabulary, or (with ``validate``) the
            first bad row group, naming the shard and the row.
        FileNotFoundError: when a path does not exist or a folder/pattern finds no file.

    Example:
        >>> import tempfile
        >>> import mtlbook as mb
        >>> from mtlbook.training.streaming import ParquetSource, write_parquet_shards
        >>> data = mb.simulate_funnel(1_000, seed=0)
        >>> folder = tempfile.mkdtemp()
        >>> paths = write_parquet_shards(data, folder, rows_per_shard=300)
        >>> source = ParquetSource(folder)
        >>> len(paths), len(source), source.schema == data.schema
        (4, 1000, True)
        >>> stream = source.loader(256, shuffle=True, seed=0, shuffle_mode="exact")
        >>> memory = data.loader(256, shuffle=True, seed=0)
        >>> all(bool((a.dense == b.dense).all()) for a, b in zip(stream, memory))
        True
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        dense: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        tasks: Mapping[str, str | Mapping[str, str]] | None = None,
        group: str | None = None,
        categories: Mapping[str, Sequence[Any]] | None = None,
        validate: bool = True,
        shuffle_mode: str = "buffer",
        buffer_rows: int | None = None,
    ) -> None:
        pa, _, pq = _arrow()
        self.shards = _resolve_paths(paths)
        _check_mode(shuffle_mode, buffer_rows)
        self.shuffle_mode = shuffle_mode
        self.buffer_rows = buffer_rows

        # Only the footers are read here: each file's schema and row group sizes.
        schemas, sizes, stored = [], [], []
        for path in self.shards:
            try:
                with pq.ParquetFile(path) as footer:
                    schemas.append(footer.schema_arrow)
                    sizes.append([footer.metadata.row_group(g).num_rows
                                  for g in range(footer.metadata.num_row_groups)])
            except (OSError, pa.ArrowInvalid) as err:
                raise ValueError(f"{str(path)!r} is not a readable Parquet file: {err}") from err
            stored.append((schemas[-1].metadata or {}).get(METADATA_KEY))
        # The stored spec counts only when every shard carries the same one.
        spec = None
        if stored[0] is not None and all(s == stored[0] for s in stored):
            spec = json.loads(stored[0])
            if spec.get("format") != _FORMAT:
                raise ValueError(f"the shards' mtlbook metadata has format "
                                 f"{spec.get('format')!r}; this version reads format {_FORMAT}")

        if tasks is None:
            given = {"dense": dense, "categorical": categorical, "group": group}
            extra = [k for k, v in given.items() if v is not None]
            if extra:
                raise ValueError(f"{extra} given without tasks; give tasks too, or leave the "
                                 "column spec out to read it from the shards' metadata")
            if spec is None:
                why = ("no shard carries" if all(s is None for s in stored)
                       else "the shards carry different")
                raise ValueError(f"tasks is None but {why} mtlbook metadata (written by "
                                 "write_parquet_shards); give dense, categorical and tasks")
            dense, categorical, group = spec["dense"], spec["categorical"], spec["group"]
            tasks = {t["name"]: ({"kind": t["kind"], "mask": t["mask"]} if t["mask"]
                                 else t["kind"]) for t in spec["tasks"]}
        self._parse_spec(list(dense or ()), list(categorical or ()), tasks, group)

        for path, schema in zip(self.shards, schemas, strict=True):
            self._check_columns(path, schema)

        self._row_groups: list[_RowGroup] = []
        offset = 0
        for s, rows_of_groups in enumerate(sizes):
            start = 0
            for g, rows in enumerate(rows_of_groups):
                if rows:
                    self._row_groups.append(_RowGroup(s, g, start, offset, rows))
                start += rows
                offset += rows
        self._n = offset

        stored_vocab = (spec or {}).get("categories") or {}
        stored_cards = dict(zip((spec or {}).get("categorical", ()),
                                (spec or {}).get("cardinalities", ()), strict=True))
        self.categories = self._vocabularies(categories, stored_vocab, stored_cards)
        self.schema = Schema(
            dense=tuple(self._dense),
            categorical=tuple(self._categorical),
            cardinalities=tuple(len(self.categories[c]) for c in self._categorical),
            tasks=tuple(self._tasks),
        )
        if validate:
            for _ in self._read(self._row_groups, with_groups=True):
                pass

    # ------------------------------------------------------------------ spec
    def _parse_spec(self, dense: list[str], categorical: list[str],
                    tasks: Mapping[str, Any], group: str | None) -> None:
        if not isinstance(tasks, Mapping) or not tasks:
            raise ValueError("tasks must be a non-empty mapping of label column -> kind, "
                             f"got {tasks!r}")
        for name, cols in (("dense", dense), ("categorical", categorical)):
            if any(not isinstance(c, str) for c in cols):
                raise ValueError(f"{name} must be a sequence of column names, got {cols!r}")
        if not dense and not categorical:
            raise ValueError("a data set needs at least one feature: give dense or categorical")
        features = dense + categorical
        if len(set(features)) != len(features):
            raise ValueError(f"feature column names must be unique, got {features}")
        leaked = [c for c in tasks if c in features]
        if leaked:
            raise ValueError(
                f"label column(s) {leaked} are also listed as features; a model would see its "
                "own target (label leak). Remove them from `dense`/`categorical`."
            )
        if group is not None and not isinstance(group, str):
            raise ValueError(f"group must be a column name or None, got {group!r}")
        specs, masks = [], {}
        for name, spec in tasks.items():
            kind, mask_col = parse_task_spec(name, spec)
            specs.append(TaskSpec(name, kind))
            if mask_col:
                masks[name] = mask_col
        self._dense, self._categorical = dense, categorical
        self._tasks, self.masks, self.group = specs, masks, group
        # The columns a batch needs, each once (a mask column may also be a label).
        needed = dense + categorical + list(tasks) + list(masks.values())
        self._columns = list(dict.fromkeys(needed))

    def _check_columns(self, path: Path, schema: Any) -> None:
        pa, _, _ = _arrow()
        wanted = self._columns + ([self.group] if self.group else [])
        names = schema.names
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ValueError(f"column(s) {missing} not found in shard {str(path)!r}; "
                             f"it has {names}")
        for col in self._dense:
            kind = schema.field(col).type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                    or pa.types.is_boolean(kind) or pa.types.is_decimal(kind)
                    or pa.types.is_null(kind)):
                raise ValueError(f"dense columns must be numeric: column {col!r} of shard "
                                 f"{str(path)!r} has type {kind}")

    def _vocabularies(self, given: Mapping[str, Sequence[Any]] | None,
                      stored: Mapping[str, Any], stored_cards: Mapping[str, int]
                      ) -> dict[str, pd.Index]:
        given = dict(given or {})
        unknown = sorted(set(given) - set(self._categorical))
        if unknown:
            raise ValueError(f"categories given for {unknown}, which are not categorical "
                             f"columns; those are {self._categorical}")
        vocab: dict[str, pd.Index] = {}
        for col, values in given.items():
            if isinstance(values, str | bytes) or not isinstance(values, Sequence | pd.Index
                                                                 | np.ndarray):
                raise ValueError(f"categories[{col!r}] must be a sequence of values, "
                                 f"got {values!r:.100}")
            index = pd.Index(list(values))
            if len(index) == 0:
                raise ValueError(f"categories[{col!r}] is empty")
            if index.hasnans:
                raise ValueError(f"categories[{col!r}] holds a missing value; a category must "
                                 "be an explicit value")
            if not index.is_unique:
                dupes = index[index.duplicated()].unique()[:5].tolist()
                raise ValueError(f"categories[{col!r}] must hold distinct values, "
                                 f"{dupes} repeat")
            vocab[col] = index
        for col in self._categorical:
            if col in vocab:
                continue
            if col in stored and stored[col] is not None:
                vocab[col] = pd.Index(stored[col])
            elif col in stored and col in stored_cards:  # shards hold the codes themselves
                vocab[col] = pd.RangeIndex(stored_cards[col])
        todo = [c for c in self._categorical if c not in vocab]
        if todo:
            vocab.update(self._scan_vocabularies(todo))
        return {c: vocab[c] for c in self._categorical}

    def _scan_vocabularies(self, columns: list[str]) -> dict[str, pd.Index]:
        """One streaming pass over ``columns``: their sorted distinct values."""
        pa, _, _ = _arrow()
        found: dict[str, list[Any]] = {c: [] for c in columns}
        for rg, table in self._tables(self._row_groups, columns):
            for col in columns:
                values = _plain(table.column(col))
                missing = _missing(values)
                if missing.any():
                    raise ValueError(self._missing_category(col, missing, rg))
                found[col].append(values.unique())
        out = {}
        for col, parts in found.items():
            try:
                merged = pa.chunked_array(parts, type=parts[0].type) if parts else None
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                kinds = sorted({str(p.type) for p in parts})
                raise ValueError(f"categorical column {col!r} has different types in different "
                                 f"shards ({kinds}); write it with one type") from None
            if merged is None:
                out[col] = pd.Index([])
                continue
            uniques = merged.unique().to_numpy(zero_copy_only=False)
            out[col] = pd.Index(pd.unique(uniques)).sort_values()
        return out

    # ------------------------------------------------------------------ reading
    def _tables(self, row_groups: Sequence[_RowGroup], columns: list[str]
                ) -> Iterator[tuple[_RowGroup, Any]]:
        """``(row group, pyarrow.Table)`` for the given row groups, in the given order;
        consecutive row groups of one shard share one open file."""
        _, _, pq = _arrow()
        current, reader = None, None
        try:
            for rg in row_groups:
                if rg.shard != current:
                    if reader is not None:
                        reader.close()
                    current, reader = rg.shard, pq.ParquetFile(self.shards[rg.shard])
                yield rg, reader.read_row_group(rg.index, columns=columns)
        finally:
            if reader is not None:
                reader.close()

    def _read(self, row_groups: Sequence[_RowGroup], with_groups: bool = False
              ) -> Iterator[tuple[_RowGroup, _Block, np.ndarray | None]]:
        """Validated, decoded row groups: ``(row group, block, raw group ids or None)``."""
        columns = self._columns + ([self.group] if with_groups and self.group
                                   and self.group not in self._columns else [])
        for rg, table in self._tables(row_groups, columns):
            block = self._decode(table, rg)
            groups = None
            if with_groups and self.group:
                groups = self._decode_groups(table.column(self.group), rg)
            yield rg, block, groups

    def _where(self, rg: _RowGroup, bad: np.ndarray) -> str:
        first = int(np.flatnonzero(bad)[0])
        return f"shard {str(self.shards[rg.shard])!r}, first at row {rg.start + first}"

    def _missing_category(self, col: str, missing: np.ndarray, rg: _RowGroup) -> str:
        return (f"categorical column {col!r} has {int(missing.sum())} missing values "
                f"({self._where(rg, missing)}); fill them with an explicit category first")

    def _decode(self, table: Any, rg: _RowGroup) -> _Block:
        pa, _, _ = _arrow()
        n = table.num_rows
        dense = None
        if self._dense:
            dense = np.empty((n, len(self._dense)), dtype=np.float32)
            for j, col in enumerate(self._dense):
                values = _plain(table.column(col))
                try:
                    dense[:, j] = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise ValueError(f"dense columns must be numeric: column {col!r} of shard "
                                     f"{str(self.shards[rg.shard])!r}: {err}") from err
            bad = ~np.isfinite(dense)
            if bad.any():
                counts = bad.sum(axis=0)
                where = {self._dense[j]: int(c) for j, c in enumerate(counts) if c}
                raise ValueError(f"dense features contain NaN or inf values: {where} "
                                 f"(column: count) in {self._where(rg, bad.any(axis=1))}; "
                                 "impute or drop them first")
        categorical = None
        if self._categorical:
            categorical = np.empty((n, len(self._categorical)), dtype=np.int64)
            for j, col in enumerate(self._categorical):
                values = _plain(table.column(col))
                missing = _missing(values)
                if missing.any():
                    raise ValueError(self._missing_category(col, missing, rg))
                codes = _encode(self.categories[col], values.to_numpy(zero_copy_only=False))
                unknown = codes < 0
                if unknown.any():
                    first = int(np.flatnonzero(unknown)[0])
                    value = values[first].as_py()
                    raise ValueError(
                        f"categorical column {col!r} has the value {value!r}, which is not in "
                        f"its vocabulary of {len(self.categories[col])} values "
                        f"({int(unknown.sum())} such rows; {self._where(rg, unknown)}); add "
                        "it to `categories`, or let the vocabulary be built from the shards"
                    )
                categorical[:, j] = codes
        labels, masks = {}, {}
        for task in self._tasks:
            y = _numeric(table.column(task.name))
            mask = None
            if task.name in self.masks:
                mask = self._decode_mask(table.column(self.masks[task.name]), task.name, rg)
            inside = y if mask is None else np.where(mask, y, 0.0)
            bad = ~np.isfinite(inside)
            if bad.any():
                scope = "" if mask is None else " inside its mask"
                raise ValueError(f"task {task.name!r} has {int(bad.sum())} NaN or inf "
                                 f"labels{scope} ({self._where(rg, bad)}); drop those rows "
                                 "or give the task a mask")
            if task.kind == "binary":
                other = (inside != 0.0) & (inside != 1.0)
                if other.any():
                    shown = np.unique(inside[other])[:5].tolist()
                    raise ValueError(f"binary task {task.name!r} must have labels 0/1, found "
                                     f"other values such as {shown} "
                                     f"({self._where(rg, other)})")
            if mask is not None:
                masks[task.name] = mask
            labels[task.name] = inside.astype(np.float32)
        return _Block(dense, categorical, labels, masks)

    def _decode_mask(self, column: Any, task: str, rg: _RowGroup) -> np.ndarray:
        pa, _, _ = _arrow()
        column = _plain(column)
        if pa.types.is_boolean(column.type) and column.null_count == 0:
            return column.to_numpy(zero_copy_only=False).astype(bool)
        values = column.to_numpy(zero_copy_only=False)
        ok = np.isin(values, (0, 1)) if values.dtype != object else np.array(
            [v is not None and not isinstance(v, str) and v in (0, 1) for v in values])
        if not ok.all():
            first = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"mask of task {task!r} must be boolean or 0/1; column "
                             f"{self.masks[task]!r} has {column[first].as_py()!r} "
                             f"({self._where(rg, ~ok)})")
        return values.astype(bool)

    def _decode_groups(self, column: Any, rg: _RowGroup) -> np.ndarray:
        values = _plain(column)
        missing = _missing(values)
        if missing.any():
            raise ValueError(f"groups has {int(missing.sum())} missing values "
                             f"({self._where(rg, missing)}); every sample needs a group id "
                             "(for example its user id)")
        return values.to_numpy(zero_copy_only=False)

    # ------------------------------------------------------------------ public
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        tasks = ", ".join(f"{t.name}:{t.kind}{'(masked)' if t.name in self.masks else ''}"
                          for t in self._tasks)
        return (f"ParquetSource(n={self._n}, shards={len(self.shards)}, "
                f"row_groups={len(self._row_groups)}, dense={len(self._dense)}, "
                f"categorical={len(self._categorical)}, tasks=[{tasks}])")

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.schema.task_names

    @property
    def n_row_groups(self) -> int:
        """Number of non-empty row groups over all shards."""
        return len(self._row_groups)

    def loader(self, batch_size: int = 256, shuffle: bool = True, seed: int = 0,
               drop_last: bool = False, *, shuffle_mode: str | None = None,
               buffer_rows: int | None = None, shard: tuple[int, int] | None = None
               ) -> ParquetLoader:
        """Mini-batches of :class:`~mtlbook.data.Batch` streamed from the shards; the
        arguments mean what they mean for :meth:`MultiTaskData.loader
        <mtlbook.data.MultiTaskData.loader>`.

        Args:
            batch_size: rows per batch (the last one may be smaller unless ``drop_last``).
            shuffle: shuffle in each pass (see ``shuffle_mode``); ``False`` keeps row order.
            seed: seeds the private generator of the shuffling; each pass draws a new order.
            drop_last: leave out the last, incomplete batch.
            shuffle_mode: ``"buffer"`` or ``"exact"`` (default: the source's).
            buffer_rows: rows of the shuffle buffer, or of each chunk of the exact
                permutation (default: the source's; see the module docstring).
            shard: ``(rank, world_size)`` for distributed training: each batch is this
                process's part of the global batch (see :class:`ParquetLoader`).

        Example:
            >>> import tempfile
            >>> import mtlbook as mb
            >>> from mtlbook.training.streaming import ParquetSource, write_parquet_shards
            >>> folder = tempfile.mkdtemp()
            >>> _ = write_parquet_shards(mb.make_correlated_tasks(500, 0.5, seed=0), folder,
            ...                          rows_per_shard=200)
            >>> loader = ParquetSource(folder).loader(64, seed=1, buffer_rows=128)
            >>> [len(batch) for batch in loader]
            [64, 64, 64, 64, 64, 64, 64, 52]
        """
        return ParquetLoader(self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                             shuffle_mode=self.shuffle_mode if shuffle_mode is None
                             else shuffle_mode,
                             buffer_rows=self.buffer_rows if buffer_rows is None
                             else buffer_rows, shard=shard)

    def to_data(self) -> MultiTaskData:
        """Read the whole source into a :class:`~mtlbook.data.MultiTaskData` (for
        validation and test data, which are scored as a whole), with the group ids and
        ``meta["categories"]``; equal to ``from_frame`` over the concatenated shards.

        Example:
            >>> import tempfile
            >>> import mtlbook as mb
            >>> from mtlbook.training.streaming import ParquetSource, write_parquet_shards
            >>> data = mb.simulate_funnel(500, seed=0)
            >>> folder = tempfile.mkdtemp()
            >>> _ = write_parquet_shards(data, folder, rows_per_shard=200)
            >>> back = ParquetSource(folder).to_data()
            >>> back.schema == data.schema, bool((back.groups == data.groups).all())
            (True, True)
        """
        blocks, groups = [], []
        for _, block, ids in self._read(self._row_groups, with_groups=True):
            blocks.append(block)
            if ids is not None:
                groups.append(ids)
        if not blocks:
            raise ValueError("the source has no rows")
        block = _Block.concat(blocks)
        return MultiTaskData(
            dense=block.dense,
            categorical=block.categorical,
            labels=block.labels,
            tasks=self.schema.tasks,
            dense_names=self.schema.dense,
            categorical_names=self.schema.categorical,
            cardinalities=self.schema.cardinalities,
            masks=block.masks,
            groups=np.concatenate(groups) if groups else None,
            meta={"categories": dict(self.categories)},
        )


def _plain(column: Any) -> Any:
    """A chunked column as one plain (not dictionary-encoded) array."""
    pa, _, _ = _arrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def _encode(vocabulary: pd.Index, values: np.ndarray) -> np.ndarray:
    """Codes of ``values`` in ``vocabulary`` (-1 where absent); integer codes ``0..k-1``
    stored as such (a ``RangeIndex`` vocabulary) are only range-checked."""
    if (isinstance(vocabulary, pd.RangeIndex) and vocabulary.start == 0
            and vocabulary.step == 1 and np.issubdtype(values.dtype, np.integer)):
        codes = values.astype(np.int64)
        codes[(codes < 0) | (codes >= len(vocabulary))] = -1
        return codes
    return vocabulary.get_indexer(values)


def _missing(values: Any) -> np.ndarray:
    """Null entries, and NaN in a float column (``pandas.isna``'s notion of missing)."""
    pa, pc, _ = _arrow()
    missing = values.is_null()
    if pa.types.is_floating(values.type):
        missing = pc.or_(missing, pc.is_nan(values))
    return missing.to_numpy(zero_copy_only=False)


def _numeric(column: Any) -> np.ndarray:
    """A label column as float64; text is coerced as ``pandas.to_numeric(errors="coerce")``
    does (what cannot be read becomes NaN), nulls become NaN."""
    pa, _, _ = _arrow()
    values = _plain(column)
    kind = values.type
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or pa.types.is_decimal(kind) or pa.types.is_null(kind)):
        return np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False),
                          dtype=np.float64)
    series = pd.Series(values.to_numpy(zero_copy_only=False))
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------- the loader
def _check_mode(shuffle_mode: Any, buffer_rows: Any) -> None:
    if shuffle_mode not in SHUFFLE_MODES:
        raise ValueError(f"shuffle_mode must be one of {SHUFFLE_MODES}, got {shuffle_mode!r}")
    if buffer_rows is not None and (isinstance(buffer_rows, bool)
                                    or not isinstance(buffer_rows, int) or buffer_rows < 1):
        raise ValueError(f"buffer_rows must be None or a positive integer, got {buffer_rows!r}")


class ParquetLoader:
    """Iterates over a :class:`ParquetSource` in mini-batches of :class:`~mtlbook.data.Batch`.

    Made by :meth:`ParquetSource.loader`. Like :class:`~mtlbook.data.BatchLoader`, it shuffles
    with a private ``torch.Generator`` seeded with ``seed`` and draws a new order in each pass;
    :meth:`state_dict` and :meth:`load_state_dict` save and restore that state between passes
    (what :func:`~mtlbook.fit`'s checkpoints keep). In ``"exact"`` mode the generator is used
    exactly as the in-memory loader uses it, so their states are interchangeable.

    With ``shard=(rank, world_size)`` each yielded batch is process ``rank``'s contiguous part
    of the global batch (rows ``n * rank // world_size`` to ``n * (rank + 1) // world_size``
    of a batch of ``n`` rows): loaders with the same seed on every process draw the same
    global batches and together cover each one exactly once; ``len()`` counts global
    batches. Every process reads every row group (the parts are cut from the decoded global
    batch).
    """

    def __init__(self, source: ParquetSource, batch_size: int, shuffle: bool, seed: int,
                 drop_last: bool = False, shuffle_mode: str = "buffer",
                 buffer_rows: int | None = None, shard: tuple[int, int] | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if shard is not None:
            ok = (isinstance(shard, tuple | list) and len(shard) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
                  and shard[1] >= 1 and 0 <= shard[0] < shard[1])
            if not ok:
                raise ValueError("shard must be None or (rank, world_size) with "
                                 f"0 <= rank < world_size, got {shard!r}")
            shard = (int(shard[0]), int(shard[1]))
        self.shard = shard
        _check_mode(shuffle_mode, buffer_rows)
        if buffer_rows is None:
            buffer_rows = DEFAULT_BUFFER_ROWS if shuffle_mode == "buffer" else max(1, len(source))
        if shuffle and shuffle_mode == "buffer" and buffer_rows < 2 * batch_size:
            raise ValueError(f"buffer_rows must be at least 2 × batch_size = {2 * batch_size} "
                             f"in shuffle_mode='buffer', got {buffer_rows}")
        self.source = source
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.shuffle_mode = shuffle_mode
        self.buffer_rows = int(buffer_rows)
        self._generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        n = len(self.source)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The shuffling state between two passes (plain tensors and numbers)."""
        return {"generator": self._generator.get_state(), "n_samples": len(self.source),
                "batch_size": self.batch_size, "shuffle": self.shuffle,
                "drop_last": self.drop_last, "shuffle_mode": self.shuffle_mode,
                "buffer_rows": self.buffer_rows}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a loader with the same settings over a source of
        the same size (in ``"exact"`` mode also one of an in-memory ``BatchLoader``).

        Raises:
            ValueError: when the state is not a loader state or its settings differ.
        """
        keys = ("generator", "n_samples", "batch_size", "shuffle", "drop_last")
        if not isinstance(state, Mapping) or any(k not in state for k in keys):
            raise ValueError(f"state must be a loader's state_dict() with keys {keys}, "
                             f"got {state!r:.200}")
        mine = {"n_samples": len(self.source), "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last,
                # An in-memory loader's state is one of the exact mode.
                "shuffle_mode": self.shuffle_mode}
        theirs = {**state, "shuffle_mode": state.get("shuffle_mode", "exact")}
        if not self.shuffle:
            mine.pop("shuffle_mode")
        elif self.shuffle_mode == "buffer":  # the buffer's size shapes the order too
            mine["buffer_rows"] = self.buffer_rows
            theirs.setdefault("buffer_rows", None)
        differ = [f"{k}: state {theirs[k]!r}, loader {v!r}" for k, v in mine.items()
                  if theirs[k] != v]
        if differ:
            raise ValueError("the loader state was saved with other settings: "
                             + "; ".join(differ))
        self._generator.set_state(state["generator"].cpu())

    def __iter__(self) -> Iterator[Batch]:
        if not self.shuffle:
            return self._sequential()
        if self.shuffle_mode == "exact":
            return self._exact()
        return self._buffered()

    # ------------------------------------------------------------------ modes
    def _batch(self, block: _Block, rows: np.ndarray | slice) -> Batch:
        """The batch of ``block``'s ``rows`` (this process's part of it when sharded)."""
        if self.shard is not None:
            if isinstance(rows, slice):
                lo, hi = shard_bounds(rows.stop - rows.start, *self.shard)
                rows = slice(rows.start + lo, rows.start + hi)
            else:
                lo, hi = shard_bounds(len(rows), *self.shard)
                rows = rows[lo:hi]
        return block.take(rows).batch()

    def _emit(self, block: _Block, final: bool) -> Iterator[Batch]:
        """Batches of ``block`` in order; the incomplete tail is kept unless ``final``."""
        bs = self.batch_size
        full = len(block) // bs * bs
        for lo in range(0, full, bs):
            yield self._batch(block, slice(lo, lo + bs))
        if final and full < len(block) and not self.drop_last:
            yield self._batch(block, slice(full, len(block)))

    def _sequential(self) -> Iterator[Batch]:
        tail: list[_Block] = []
        bs = self.batch_size
        for _, block, _ in self.source._read(self.source._row_groups):
            tail.append(block)
            if sum(len(b) for b in tail) >= bs:
                merged = _Block.concat(tail)
                yield from self._emit(merged, final=False)
                rest = len(merged) // bs * bs
                tail = [merged.take(slice(rest, len(merged)))] if rest < len(merged) else []
        if tail:
            yield from self._emit(_Block.concat(tail), final=True)

    def _exact(self) -> Iterator[Batch]:
        n, bs = len(self.source), self.batch_size
        order = torch.randperm(n, generator=self._generator).numpy()
        stop = n // bs * bs if self.drop_last else n
        chunk = max(bs, self.buffer_rows // bs * bs)
        groups = self.source._row_groups
        starts = np.array([rg.offset for rg in groups] + [n], dtype=np.int64)
        for lo in range(0, stop, chunk):
            wanted = order[lo:min(stop, lo + chunk)]
            # The wanted rows in file order, and where each one lands in that order.
            sorter = np.argsort(wanted)
            rows = wanted[sorter]
            position = np.empty_like(sorter)
            position[sorter] = np.arange(len(sorter))
            # The row groups holding some of the wanted rows, in file order.
            cuts = np.searchsorted(rows, starts)
            needed = [g for g in range(len(groups)) if cuts[g + 1] > cuts[g]]
            parts = []
            for rg, block, _ in self.source._read([groups[g] for g in needed]):
                g_rows = rows[np.searchsorted(rows, rg.offset):
                              np.searchsorted(rows, rg.offset + rg.rows)]
                parts.append(block if len(g_rows) == rg.rows else block.take(g_rows - rg.offset))
            held = _Block.concat(parts)
            for b in range(0, len(wanted), bs):
                yield self._batch(held, position[b:b + bs])

    def _buffered(self) -> Iterator[Batch]:
        source, bs, capacity = self.source, self.batch_size, self.buffer_rows
        by_shard: dict[int, list[_RowGroup]] = {}
        for rg in source._row_groups:
            by_shard.setdefault(rg.shard, []).append(rg)
        shards = sorted(by_shard)
        visit = []
        for s in torch.randperm(len(shards), generator=self._generator).tolist():
            groups = by_shard[shards[s]]
            visit += [groups[i] for i in torch.randperm(len(groups),
                                                        generator=self._generator).tolist()]
        pending: list[_Block] = []
        held = 0
        for _, block, _ in source._read(visit):
            pending.append(block)
            held += len(block)
            if held < capacity:
                continue
            merged = _Block.concat(pending)
            perm = torch.randperm(len(merged), generator=self._generator).numpy()
            out = (len(merged) - capacity // 2) // bs * bs
            for lo in range(0, out, bs):
                yield self._batch(merged, perm[lo:lo + bs])
            pending = [merged.take(perm[out:])]
            held = len(merged) - out
        if held:
            merged = _Block.concat(pending)
            perm = torch.randperm(len(merged), generator=self._generator).numpy()
            yield from self._emit(merged.take(perm), final=True)


# ---------------------------------------------------------------------- writing
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


def write_parquet_shards(data: MultiTaskData, folder: str | os.PathLike, rows_per_shard: int,
                         *, row_group_size: int | None = None) -> list[Path]:
    """Write a :class:`~mtlbook.data.MultiTaskData` as Parquet shards that
    :class:`ParquetSource` reads back with the same schema, codes and rows.

    The shards are ``part-00000.parquet``, ``part-00001.parquet``, ... in ``folder`` (created
    if needed), ``rows_per_shard`` rows each (the last may hold fewer), in row order. Each
    holds the dense columns (float32), the categorical columns (their original values when
    ``data.meta["categories"]`` has them — as after ``from_frame`` — else the codes), one
    column per task (NaN outside its mask), a boolean ``<task>__mask`` column per masked
    task and a ``group`` column when the data have group ids (names prefixed with ``_`` as
    needed to stay distinct). The column spec, the cardinalities and the vocabularies are
    stored in each file's metadata, so ``ParquetSource(folder)`` needs no other argument.
    Ground truth (``data.truth``) is not written.

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
    pa, _, pq = _arrow()
    if not isinstance(data, MultiTaskData):
        raise ValueError(f"data must be a MultiTaskData, got {type(data).__name__}")
    for name, value in (("rows_per_shard", rows_per_shard), ("row_group_size", row_group_size)):
        if value is None and name == "row_group_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if len(data) == 0:
        raise ValueError("data has no rows; there is nothing to write")
    if row_group_size is None:
        row_group_size = min(rows_per_shard, 65_536)
    schema = data.schema
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} exists and is not a folder")

    taken = set(schema.dense) | set(schema.categorical) | set(schema.task_names)
    mask_columns = {}
    for task in schema.task_names:
        if task in data.masks:
            mask_columns[task] = _free_name(f"{task}__mask", taken)
            taken.add(mask_columns[task])
    group_column = _free_name("group", taken) if data.groups is not None else None

    known = data.meta.get("categories") or {}
    vocab: dict[str, list[Any] | None] = {}
    for col, card in zip(schema.categorical, schema.cardinalities, strict=True):
        values = None
        if col in known and len(known[col]) == card:
            values = _json_values(pd.Index(known[col]))
        vocab[col] = values
    spec = {
        "format": _FORMAT,
        "dense": list(schema.dense),
        "categorical": list(schema.categorical),
        "cardinalities": list(schema.cardinalities),
        "categories": vocab,
        "tasks": [{"name": t.name, "kind": t.kind, "mask": mask_columns.get(t.name)}
                  for t in schema.tasks],
        "group": group_column,
    }
    metadata = {METADATA_KEY: json.dumps(spec).encode()}

    n_shards = -(-len(data) // rows_per_shard)
    width = max(5, len(str(n_shards - 1)))
    targets = [folder / f"part-{i:0{width}d}.parquet" for i in range(n_shards)]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[:3]}{' ...' if len(existing) > 3 else ''} already "
                              "exist; nothing is overwritten. Choose another folder or remove "
                              "them")
    folder.mkdir(parents=True, exist_ok=True)

    values_of = {col: pa.array(vocab[col]) for col in schema.categorical
                 if vocab[col] is not None}

    def column_arrays(lo: int, hi: int) -> dict[str, Any]:
        columns: dict[str, Any] = {}
        for j, col in enumerate(schema.dense):
            columns[col] = pa.array(data.dense[lo:hi, j], type=pa.float32())
        for j, col in enumerate(schema.categorical):
            codes = data.categorical[lo:hi, j]
            if vocab[col] is None:
                columns[col] = pa.array(codes, type=pa.int64())
            else:
                columns[col] = values_of[col].take(pa.array(codes))
        for task in schema.task_names:
            y = data.labels[task][lo:hi].astype(np.float64)
            if task in data.masks:
                mask = data.masks[task][lo:hi]
                columns[mask_columns[task]] = pa.array(mask, type=pa.bool_())
                y = np.where(mask, y, np.nan)
            columns[task] = pa.array(y, type=pa.float64())
        if group_column is not None:
            columns[group_column] = pa.array(data.groups[lo:hi], type=pa.int64())
        return columns

    written: list[Path] = []
    temporary: list[str] = []
    try:
        for i, target in enumerate(targets):
            lo, hi = i * rows_per_shard, min(len(data), (i + 1) * rows_per_shard)
            table = pa.table(column_arrays(lo, hi)).replace_schema_metadata(metadata)
            handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                           dir=folder)
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
                raise FileExistsError(f"{str(target)!r} appeared while writing; it is not "
                                      "overwritten") from None
            written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temporary:
            Path(tmp).unlink(missing_ok=True)
    return written
