"""The reader: :class:`ParquetSource` resolves the shards, reads their footers and metadata,
fixes the categorical vocabularies, and decodes and validates each row group it reads."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ...data import MultiTaskData, Schema, TaskSpec
from ...data._core import parse_task_spec
from ._common import _arrow
from ._loader import ParquetLoader, _Block, _check_mode, _RowGroup
from ._shards import (
    _index_row_groups,
    _read_footers,
    _resolve_paths,
    _spec_from_metadata,
    _stored_spec,
)

__all__ = ["ParquetSource"]


class ParquetSource:
    """Multi-task training data streamed from Parquet shards, for data larger than memory.

    The column spec is that of :meth:`MultiTaskData.from_frame
    <mtlbook.data.MultiTaskData.from_frame>`. For shards written by
    :func:`write_parquet_shards`, leave ``tasks`` (and the other column arguments) out: the
    spec and the vocabularies stored in the shards are used. The package docstring describes
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
        categories: categorical column → its vocabulary (a sequence of ``k`` distinct
            values; a value's code is its position, and ``k`` is the unknown code of values
            not in it and of missing values). Columns not given here take the vocabulary
            stored in the shards, or else the sorted distinct values found by one streaming
            pass (as in ``from_frame``).
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
            its position), as ``data.meta["categories"]`` of ``from_frame``; for a column
            whose shards store codes, the codes themselves (a ``RangeIndex``).
        unknown_codes: categorical column → the code of its missing and unseen values
            (``len(categories[col])``, the last code), or ``None`` for a column without one
            (shards of a data set whose cardinality is the length of its vocabulary, or that
            store codes): there a missing or unseen value is an error.
        masks: task name → its mask column, for masked tasks.
        group: the group column or ``None``.

    Raises:
        ValueError: for a bad spec, a column missing from a shard, a non-numeric dense
            column, labels listed as features, a bad vocabulary, a categorical column that
            holds text where its vocabulary holds numbers (or the reverse), or (with
            ``validate``) the first bad row group, naming the shard and the row.
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
        _arrow()  # a missing pyarrow is reported before anything else
        self.shards = _resolve_paths(paths)
        _check_mode(shuffle_mode, buffer_rows)
        self.shuffle_mode = shuffle_mode
        self.buffer_rows = buffer_rows

        # Only the footers are read here: each file's schema and row group sizes.
        schemas, sizes, stored = _read_footers(self.shards)
        spec = _stored_spec(stored)
        if tasks is None:
            dense, categorical, tasks, group = _spec_from_metadata(
                spec, stored, dense=dense, categorical=categorical, group=group
            )
        self._parse_spec(list(dense or ()), list(categorical or ()), tasks, group)

        for path, schema in zip(self.shards, schemas, strict=True):
            self._check_columns(path, schema)

        self._row_groups, self._n = _index_row_groups(sizes)

        stored_vocab = (spec or {}).get("categories") or {}
        stored_cards = dict(
            zip(
                (spec or {}).get("categorical", ()),
                (spec or {}).get("cardinalities", ()),
                strict=True,
            )
        )
        self.categories, self.unknown_codes, cards = self._vocabularies(
            categories, stored_vocab, stored_cards
        )
        for path, schema in zip(self.shards, schemas, strict=True):
            self._check_kinds(path, schema)
        self.schema = Schema(
            dense=tuple(self._dense),
            categorical=tuple(self._categorical),
            cardinalities=tuple(cards[c] for c in self._categorical),
            tasks=tuple(self._tasks),
        )
        if validate:
            for _ in self._read(self._row_groups, with_groups=True):
                pass

    # ------------------------------------------------------------------ spec
    def _parse_spec(
        self, dense: list[str], categorical: list[str], tasks: Mapping[str, Any], group: str | None
    ) -> None:
        if not isinstance(tasks, Mapping) or not tasks:
            raise ValueError(
                f"tasks must be a non-empty mapping of label column -> kind, got {tasks!r}"
            )
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
            raise ValueError(
                f"column(s) {missing} not found in shard {str(path)!r}; it has {names}"
            )
        for col in self._dense:
            kind = schema.field(col).type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            if not (
                pa.types.is_integer(kind)
                or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind)
                or pa.types.is_decimal(kind)
                or pa.types.is_null(kind)
            ):
                raise ValueError(
                    f"dense columns must be numeric: column {col!r} of shard "
                    f"{str(path)!r} has type {kind}"
                )

    def _vocabularies(
        self,
        given: Mapping[str, Sequence[Any]] | None,
        stored: Mapping[str, Any],
        stored_cards: Mapping[str, int],
    ) -> tuple[dict[str, pd.Index], dict[str, int | None], dict[str, int]]:
        """``(vocabularies, unknown codes, cardinalities)`` of the categorical columns, from
        ``categories``, else the shards' metadata, else one streaming pass over the shards."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self._categorical))
        if unknown:
            raise ValueError(
                f"categories given for {unknown}, which are not categorical "
                f"columns; those are {self._categorical}"
            )
        vocab = {col: _given_vocabulary(col, values) for col, values in given.items()}
        cards: dict[str, int] = {}
        for col in self._categorical:
            if col in vocab or col not in stored_cards:
                continue
            if stored.get(col) is not None:
                vocab[col] = pd.Index(stored[col])
                cards[col] = _stored_cardinality(col, len(vocab[col]), stored_cards[col])
            elif col in stored:  # the shards hold the codes themselves
                vocab[col] = pd.RangeIndex(stored_cards[col])
                cards[col] = stored_cards[col]
        todo = [c for c in self._categorical if c not in vocab]
        if todo:
            vocab.update(self._scan_vocabularies(todo))
        # A vocabulary of k values has the unknown code k (cardinality k + 1), unless the
        # shards store a cardinality of k (codes, or a data set without an unknown code).
        codes: dict[str, int | None] = {}
        for col in self._categorical:
            k = len(vocab[col])
            cards.setdefault(col, k + 1)
            codes[col] = k if cards[col] == k + 1 else None
        return {c: vocab[c] for c in self._categorical}, codes, cards

    def _scan_vocabularies(self, columns: list[str]) -> dict[str, pd.Index]:
        """One streaming pass over ``columns``: their sorted distinct values, missing values
        left out (whole floats as integers, as ``from_frame`` keys them)."""
        pa, pc, _ = _arrow()
        found: dict[str, list[Any]] = {c: [] for c in columns}
        for _, table in self._tables(self._row_groups, columns):
            for col in columns:
                values = _plain(table.column(col))
                present = values.filter(pc.invert(pa.array(_missing(values))))
                found[col].append(present.unique())
        out = {}
        for col, parts in found.items():
            types = {p.type for p in parts}
            if len(types) > 1 and all(_kind(t) == "number" for t in types):
                parts = [p.cast(pa.float64()) for p in parts]  # ints in one shard, NaN in another
            try:
                merged = pa.chunked_array(parts, type=parts[0].type) if parts else None
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                kinds = sorted({str(p.type) for p in parts})
                raise ValueError(
                    f"categorical column {col!r} has different types in different "
                    f"shards ({kinds}); write it with one type"
                ) from None
            if merged is None:
                out[col] = pd.Index([])
                continue
            uniques = merged.unique().to_numpy(zero_copy_only=False)
            out[col] = _whole_numbers(pd.Index(pd.unique(uniques)).sort_values())
        return out

    def _check_kinds(self, path: Path, schema: Any) -> None:
        """A categorical column of a shard holds text where its vocabulary holds numbers, or
        the reverse: an error naming the column (every value would be unknown)."""
        for col in self._categorical:
            vocab = self.categories[col]
            expected = _index_kind(vocab)
            found = _kind(schema.field(col).type)
            if expected is None or found is None or expected == found:
                continue
            noun = {"text": "text", "number": "numbers"}
            raise ValueError(
                f"categorical column {col!r} holds {noun[found]} ({schema.field(col).type}) in "
                f"shard {str(path)!r} but its vocabulary holds {noun[expected]} (such as "
                f"{vocab[0]!r}); write the column with the type of the vocabulary's values"
            )

    # ------------------------------------------------------------------ reading
    def _tables(
        self, row_groups: Sequence[_RowGroup], columns: list[str]
    ) -> Iterator[tuple[_RowGroup, Any]]:
        """``(row group, pyarrow.Table)`` for the given row groups, in the given order;
        consecutive row groups of one shard share one open file."""
        _, _, pq = _arrow()
        current: int | None = None
        reader: Any = None  # a pyarrow.parquet.ParquetFile once the first shard is open
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

    def _read(
        self, row_groups: Sequence[_RowGroup], with_groups: bool = False
    ) -> Iterator[tuple[_RowGroup, _Block, np.ndarray | None]]:
        """Validated, decoded row groups: ``(row group, block, raw group ids or None)``."""
        columns = self._columns + (
            [self.group] if with_groups and self.group and self.group not in self._columns else []
        )
        for rg, table in self._tables(row_groups, columns):
            block = self._decode(table, rg)
            groups = None
            if with_groups and self.group:
                groups = self._decode_groups(table.column(self.group), rg)
            yield rg, block, groups

    def _where(self, rg: _RowGroup, bad: npt.ArrayLike) -> str:
        first = int(np.flatnonzero(bad)[0])
        return f"shard {str(self.shards[rg.shard])!r}, first at row {rg.start + first}"

    def _codes(self, column: Any, col: str, rg: _RowGroup) -> np.ndarray:
        """The codes of one categorical column of a row group: positions in the vocabulary,
        the unknown code for missing and unseen values; an error for a column without one."""
        values = _plain(column)
        missing = _missing(values)
        codes = _encode(self.categories[col], values.to_numpy(zero_copy_only=False))
        unknown = self.unknown_codes[col]
        if unknown is not None:
            codes[(codes < 0) | missing] = unknown
            return codes
        if missing.any():
            raise ValueError(
                f"categorical column {col!r} has {int(missing.sum())} missing values "
                f"({self._where(rg, missing)}) but no unknown code (its shards store "
                f"{len(self.categories[col])} codes); fill them with an explicit category first"
            )
        outside = codes < 0
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            value = values[first].as_py()
            raise ValueError(
                f"categorical column {col!r} has the value {value!r}, which is not in "
                f"its vocabulary of {len(self.categories[col])} values "
                f"({int(outside.sum())} such rows; {self._where(rg, outside)}); give "
                "`categories` to read it with an unknown code, or let the vocabulary be "
                "built from the shards"
            )
        return codes

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
                    raise ValueError(
                        f"dense columns must be numeric: column {col!r} of shard "
                        f"{str(self.shards[rg.shard])!r}: {err}"
                    ) from err
            bad = ~np.isfinite(dense)
            if bad.any():
                counts = bad.sum(axis=0)
                where = {self._dense[j]: int(c) for j, c in enumerate(counts) if c}
                raise ValueError(
                    f"dense features contain NaN or inf values: {where} "
                    f"(column: count) in {self._where(rg, bad.any(axis=1))}; "
                    "impute or drop them first"
                )
        categorical = None
        if self._categorical:
            categorical = np.empty((n, len(self._categorical)), dtype=np.int64)
            for j, col in enumerate(self._categorical):
                categorical[:, j] = self._codes(table.column(col), col, rg)
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
                raise ValueError(
                    f"task {task.name!r} has {int(bad.sum())} NaN or inf "
                    f"labels{scope} ({self._where(rg, bad)}); drop those rows "
                    "or give the task a mask"
                )
            if task.kind == "binary":
                other = (inside != 0.0) & (inside != 1.0)
                if other.any():
                    shown = np.unique(inside[other])[:5].tolist()
                    raise ValueError(
                        f"binary task {task.name!r} must have labels 0/1, found "
                        f"other values such as {shown} "
                        f"({self._where(rg, other)})"
                    )
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
        ok = (
            np.isin(values, (0, 1))
            if values.dtype != object
            else np.array(
                [v is not None and not isinstance(v, str) and v in (0, 1) for v in values]
            )
        )
        if not ok.all():
            first = int(np.flatnonzero(~ok)[0])
            raise ValueError(
                f"mask of task {task!r} must be boolean or 0/1; column "
                f"{self.masks[task]!r} has {column[first].as_py()!r} "
                f"({self._where(rg, ~ok)})"
            )
        return values.astype(bool)

    def _decode_groups(self, column: Any, rg: _RowGroup) -> np.ndarray:
        values = _plain(column)
        missing = _missing(values)
        if missing.any():
            raise ValueError(
                f"groups has {int(missing.sum())} missing values "
                f"({self._where(rg, missing)}); every sample needs a group id "
                "(for example its user id)"
            )
        return values.to_numpy(zero_copy_only=False)

    # ------------------------------------------------------------------ public
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        tasks = ", ".join(
            f"{t.name}:{t.kind}{'(masked)' if t.name in self.masks else ''}" for t in self._tasks
        )
        return (
            f"ParquetSource(n={self._n}, shards={len(self.shards)}, "
            f"row_groups={len(self._row_groups)}, dense={len(self._dense)}, "
            f"categorical={len(self._categorical)}, tasks=[{tasks}])"
        )

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.schema.task_names

    @property
    def n_row_groups(self) -> int:
        """Number of non-empty row groups over all shards."""
        return len(self._row_groups)

    def loader(
        self,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        *,
        shuffle_mode: str | None = None,
        buffer_rows: int | None = None,
        shard: tuple[int, int] | None = None,
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
                permutation (default: the source's; see the package docstring).
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
        return ParquetLoader(
            self,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            shuffle_mode=self.shuffle_mode if shuffle_mode is None else shuffle_mode,
            buffer_rows=self.buffer_rows if buffer_rows is None else buffer_rows,
            shard=shard,
        )

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


def _given_vocabulary(col: str, values: Any) -> pd.Index:
    """``categories[col]`` checked: a sequence of distinct, present values."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | pd.Index | np.ndarray):
        raise ValueError(f"categories[{col!r}] must be a sequence of values, got {values!r:.100}")
    index = pd.Index(list(values))
    if len(index) == 0:
        raise ValueError(f"categories[{col!r}] is empty")
    if index.hasnans:
        raise ValueError(
            f"categories[{col!r}] holds a missing value; a category must be an explicit "
            "value (missing values take the unknown code)"
        )
    if not index.is_unique:
        dupes = index[index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"categories[{col!r}] must hold distinct values, {dupes} repeat")
    return index


def _stored_cardinality(col: str, n_values: int, cardinality: int) -> int:
    """The stored cardinality of a column stored as values: ``n_values + 1`` (the last code
    is unknown, as after ``from_frame``) or ``n_values`` (a data set without one)."""
    if cardinality not in (n_values, n_values + 1):
        raise ValueError(
            f"the shards' mtlbook metadata gives column {col!r} a cardinality of "
            f"{cardinality} for a vocabulary of {n_values} values; expected {n_values} or "
            f"{n_values + 1} (write the shards again with write_parquet_shards)"
        )
    return cardinality


def _kind(arrow_type: Any) -> str | None:
    """``"text"`` or ``"number"`` for an Arrow type (``None`` for any other)."""
    pa, _, _ = _arrow()
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    if (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_boolean(arrow_type)
    ):
        return "number"
    return None


def _index_kind(index: pd.Index) -> str | None:
    """``"text"`` or ``"number"`` for a vocabulary (``None`` when empty or of another kind)."""
    if len(index) == 0:
        return None
    if pd.api.types.is_numeric_dtype(index.dtype) or pd.api.types.is_bool_dtype(index.dtype):
        return "number"
    if all(isinstance(v, str) for v in index):
        return "text"
    return None


def _whole_numbers(index: pd.Index) -> pd.Index:
    """A float vocabulary whose values are all whole as integers (ids read as floats because
    of missing values), as ``from_frame`` keys them."""
    if index.dtype.kind == "f" and len(index) and bool((index == np.floor(index)).all()):
        if bool((np.abs(index) < 2**53).all()):
            return index.astype(np.int64)
    return index


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
    if (
        isinstance(vocabulary, pd.RangeIndex)
        and vocabulary.start == 0
        and vocabulary.step == 1
        and np.issubdtype(values.dtype, np.integer)
    ):
        codes = values.astype(np.int64)
        codes[(codes < 0) | (codes >= len(vocabulary))] = -1
        return codes
    return np.asarray(vocabulary.get_indexer(values), dtype=np.int64)


def _missing(values: Any) -> np.ndarray:
    """Null entries, and NaN in a float column (``pandas.isna``'s notion of missing)."""
    pa, pc, _ = _arrow()
    missing = values.is_null()
    if pa.types.is_floating(values.type):
        missing = pc.or_kleene(missing, pc.is_nan(values))  # null or NaN: true, never null
    return np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool)


def _numeric(column: Any) -> np.ndarray:
    """A label column as float64; text is coerced as ``pandas.to_numeric(errors="coerce")``
    does (what cannot be read becomes NaN), nulls become NaN."""
    pa, _, _ = _arrow()
    values = _plain(column)
    kind = values.type
    if (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    ):
        return np.asarray(
            values.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )
    series = pd.Series(values.to_numpy(zero_copy_only=False))
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
