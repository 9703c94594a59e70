"""Core containers: :class:`TaskSpec`, :class:`Schema`, :class:`Batch` and :class:`MultiTaskData`.

A :class:`MultiTaskData` holds one table of impressions (or samples): a dense float block, a
block of categorical indices, one label vector per task, an optional per-task mask for tasks
that are only defined on a subspace (conversion is only observed on clicked impressions), optional
group ids (users, for GAUC) and optional ground truth that is never fed to a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["TASK_KINDS", "Batch", "BatchLoader", "MultiTaskData", "Schema", "TaskSpec"]

TASK_KINDS = ("binary", "regression")


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task.

    Args:
        name: the task's name, used as the key of labels, outputs and metrics.
        kind: ``"binary"`` (0/1 labels, log-loss) or ``"regression"`` (real labels, MSE).

    Whether a task is defined only on a subspace is a property of the data (``data.masks``),
    not of the task: a model built for one schema serves data with or without masks.
    """

    name: str
    kind: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"task name must be a non-empty string, got {self.name!r}")
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"task {self.name!r} has unknown kind {self.kind!r}; expected one of {TASK_KINDS}"
            )


@dataclass(frozen=True)
class Schema:
    """What a model needs to know about the inputs and outputs of a data set.

    Attributes:
        dense: names of the dense (float) feature columns, in order.
        categorical: names of the categorical feature columns, in order.
        cardinalities: number of distinct values of each categorical column (indices are
            ``0 .. cardinality - 1``).
        tasks: the task specifications, in order.
    """

    dense: tuple[str, ...]
    categorical: tuple[str, ...]
    cardinalities: tuple[int, ...]
    tasks: tuple[TaskSpec, ...]

    @property
    def n_dense(self) -> int:
        return len(self.dense)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task named {name!r}; tasks are {list(self.task_names)}")


@dataclass
class Batch:
    """A mini-batch as models consume it.

    ``dense`` is ``[batch, n_dense]`` float32 (or ``None``), ``categorical`` is
    ``[batch, n_categorical]`` int64 (or ``None``); ``labels`` and ``masks`` map task names to
    ``[batch]`` tensors (a task without a mask has no entry in ``masks``).
    """

    dense: torch.Tensor | None
    categorical: torch.Tensor | None
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        block = self.dense if self.dense is not None else self.categorical
        return 0 if block is None else int(block.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """Return the batch with every tensor moved to ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            dense=move(self.dense),
            categorical=move(self.categorical),
            labels={k: v.to(device, non_blocking=True) for k, v in self.labels.items()},
            masks={k: v.to(device, non_blocking=True) for k, v in self.masks.items()},
        )


def parse_task_spec(name: str, spec: Any) -> tuple[str, str | None]:
    """``(kind, mask column or None)`` of one entry of a ``tasks=`` mapping: a kind string, or
    ``{"kind": ..., "mask": column}``.

    Example:
        >>> from mtlbook.data._core import parse_task_spec
        >>> parse_task_spec("buy", {"kind": "binary", "mask": "click"})
        ('binary', 'click')
    """
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, Mapping):
        if set(spec) - {"kind", "mask"} or "kind" not in spec:
            raise ValueError(f"task {name!r}: expected {{'kind': ..., 'mask': ...}}, "
                             f"got {dict(spec)!r}")
        return spec["kind"], spec.get("mask")
    raise ValueError(f"task {name!r}: expected a kind string or a dict, got {spec!r}")


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``lo:hi`` of a global batch of ``n`` rows that process ``rank`` of ``world_size``
    takes: contiguous shards in rank order whose sizes differ by at most one.

    Example:
        >>> from mtlbook.data._core import shard_bounds
        >>> [shard_bounds(5, r, 2) for r in range(2)]
        [(0, 2), (2, 5)]
    """
    for name, value in (("n", n), ("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(f"need n >= 0, world_size >= 1 and 0 <= rank < world_size, got "
                         f"n={n}, rank={rank}, world_size={world_size}")
    return int(n * rank // world_size), int(n * (rank + 1) // world_size)


class BatchLoader:
    """Iterates over a :class:`MultiTaskData` in mini-batches of :class:`Batch`.

    Shuffling uses a private ``torch.Generator`` seeded with ``seed``, so the order does not
    depend on (or disturb) the global random state. Each pass draws a new order; the sequence
    of orders is fixed by the seed. :meth:`state_dict` and :meth:`load_state_dict` save and
    restore the shuffling state between passes, so a resumed training run draws the orders
    the uninterrupted one would have drawn.

    With ``shard=(rank, world_size)`` each yielded batch is process ``rank``'s shard of the
    global batch of ``batch_size`` rows (:func:`shard_bounds`): loaders with the same seed on
    every process draw the same global batches and together cover each one exactly once
    (what :func:`mtlbook.fit` does under ``torchrun``). ``len()`` counts global batches.
    """

    def __init__(self, data: MultiTaskData, batch_size: int, shuffle: bool, seed: int,
                 drop_last: bool = False, shard: tuple[int, int] | None = None) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if shard is not None:
            if not isinstance(shard, tuple | list) or len(shard) != 2:
                raise ValueError(f"shard must be None or (rank, world_size), got {shard!r}")
            shard_bounds(0, *shard)  # validates
            shard = (int(shard[0]), int(shard[1]))
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.shard = shard
        self._generator = torch.Generator().manual_seed(int(seed))
        self._tensors = data.tensors()

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The shuffling state between two passes: the generator's state and the settings
        it must be restored with (plain tensors and numbers, ``torch.save``-able).

        Example:
            >>> from mtlbook.data import make_correlated_tasks
            >>> data = make_correlated_tasks(50, 0.5, seed=0)
            >>> a, b = data.loader(8, seed=1), data.loader(8, seed=2)
            >>> _ = list(a)  # one pass
            >>> b.load_state_dict(a.state_dict())
            >>> bool((next(iter(a)).dense == next(iter(b)).dense).all())
            True
        """
        return {"generator": self._generator.get_state(), "n_samples": len(self.data),
                "batch_size": self.batch_size, "shuffle": self.shuffle,
                "drop_last": self.drop_last}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a loader over data of the same size with the same
        batch size and settings; the next pass draws the order the saved loader's would.

        Raises:
            ValueError: when the state is not a loader state or its settings differ.
        """
        keys = ("generator", "n_samples", "batch_size", "shuffle", "drop_last")
        if not isinstance(state, Mapping) or any(k not in state for k in keys):
            raise ValueError(f"state must be a BatchLoader.state_dict() with keys {keys}, "
                             f"got {state!r:.200}")
        mine = {"n_samples": len(self.data), "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last}
        differ = [f"{k}: state {state[k]!r}, loader {v!r}" for k, v in mine.items()
                  if state[k] != v]
        if differ:
            raise ValueError("the loader state was saved with other settings: "
                             + "; ".join(differ))
        self._generator.set_state(state["generator"].cpu())

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.data)
        order = torch.randperm(n, generator=self._generator) if self.shuffle else None
        dense, categorical, labels, masks = self._tensors
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            if self.shard is not None:
                first, last = shard_bounds(hi - lo, *self.shard)
                lo, hi = lo + first, lo + last
            if order is None:
                idx: slice | torch.Tensor = slice(lo, hi)
            else:
                idx = order[lo:hi]
            yield Batch(
                dense=None if dense is None else dense[idx],
                categorical=None if categorical is None else categorical[idx],
                labels={k: v[idx] for k, v in labels.items()},
                masks={k: v[idx] for k, v in masks.items()},
            )


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _truthy(column: pd.Series) -> pd.Series:
    """The rows where a mask column is true (``1``, ``True``); anything else counts as false."""
    return pd.to_numeric(column, errors="coerce").fillna(0).astype(bool)


def _numeric_column(df: pd.DataFrame, column: str, role: str, hint: str,
                    rows: pd.Series | None = None) -> np.ndarray:
    """Column ``column`` of ``df`` as float64 (missing values as NaN), or a ``ValueError`` that
    names the column and shows a value that is not a number (only ``rows`` are checked)."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if rows is not None:
        bad &= rows
    if bad.any():
        raise ValueError(f"{role} column {column!r} has non-numeric values such as "
                         f"{raw[bad].iloc[0]!r} ({int(bad.sum())} of {len(raw)} rows); {hint}")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _as_2d(name: str, values: Any, dtype: Any, n_columns: int) -> np.ndarray | None:
    if values is None:
        if n_columns:
            raise ValueError(f"{name} is None but {n_columns} {name} column names were given")
        return None
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n_samples, n_columns], "
                         f"got shape {arr.shape}")
    if arr.shape[1] != n_columns:
        raise ValueError(
            f"{name} has {arr.shape[1]} columns but {n_columns} column names were given"
        )
    return np.ascontiguousarray(arr, dtype=dtype)


class MultiTaskData:
    """A multi-task data set: features, one label vector per task, masks, groups and truth.

    Most readers create one with :meth:`from_frame` or with the generators in
    :mod:`mtlbook.data` (:func:`~mtlbook.data.make_correlated_tasks`,
    :func:`~mtlbook.data.simulate_funnel`).

    Args:
        dense: ``[n, n_dense]`` float array or ``None``.
        categorical: ``[n, n_categorical]`` integer array of indices ``0 .. cardinality-1``,
            or ``None``.
        labels: task name → ``[n]`` label array. Labels outside a task's mask are ignored
            (and stored as 0).
        tasks: the task specifications (or a mapping name → kind). Order defines task order.
        dense_names, categorical_names: column names of the two feature blocks.
        cardinalities: cardinality of each categorical column (default: max index + 1).
        masks: task name → ``[n]`` boolean array, for tasks defined on a subspace.
        groups: ``[n]`` integer group ids (for example users), used by GAUC.
        truth: a DataFrame with ``n`` rows of ground-truth quantities. It is carried along
            through :meth:`split` and :meth:`subset` but never given to a model.
        meta: free-form information about how the data were made (generator parameters).

    Raises:
        ValueError: for inconsistent lengths, NaN/inf values, binary labels other than 0/1,
            unknown task kinds, or categorical indices out of range.
    """

    def __init__(
        self,
        *,
        dense: Any = None,
        categorical: Any = None,
        labels: Mapping[str, Any],
        tasks: Sequence[TaskSpec] | Mapping[str, str],
        dense_names: Sequence[str] = (),
        categorical_names: Sequence[str] = (),
        cardinalities: Sequence[int] | None = None,
        masks: Mapping[str, Any] | None = None,
        groups: Any = None,
        truth: pd.DataFrame | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        masks = dict(masks or {})
        if isinstance(tasks, Mapping):
            tasks = [TaskSpec(n, k) for n, k in tasks.items()]
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("at least one task is required")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")

        dense_arr = _as_2d("dense", dense, np.float32, len(dense_names))
        cat_arr = _as_2d("categorical", categorical, np.int64, len(categorical_names))
        if dense_arr is None and cat_arr is None:
            raise ValueError("a data set needs at least one feature: give dense or categorical")
        if dense_arr is not None and cat_arr is not None and len(dense_arr) != len(cat_arr):
            raise ValueError(f"length mismatch: dense has {len(dense_arr)} rows, "
                             f"categorical has {len(cat_arr)}")
        n = len(dense_arr) if dense_arr is not None else len(cat_arr)
        if n == 0:
            raise ValueError("the features have 0 rows; a data set needs at least one sample")
        all_columns = list(dense_names) + list(categorical_names)
        if len(set(all_columns)) != len(all_columns):
            raise ValueError(f"feature column names must be unique, got {all_columns}")
        leaked = sorted(set(names) & set(all_columns))
        if leaked:
            raise ValueError(
                f"label column(s) {leaked} are also listed as features; a model would see its "
                "own target (label leak). Remove them from the features."
            )

        if dense_arr is not None:
            bad = ~np.isfinite(dense_arr)
            if bad.any():
                counts = bad.sum(axis=0)
                where = {dense_names[j]: int(c) for j, c in enumerate(counts) if c}
                raise ValueError(f"dense features contain NaN or inf values: {where} "
                                 "(column: count); impute or drop them first")

        if cat_arr is not None:
            if cardinalities is None:
                cardinalities = [int(c.max()) + 1 if len(c) else 1 for c in cat_arr.T]
            cardinalities = tuple(int(c) for c in cardinalities)
            if len(cardinalities) != cat_arr.shape[1]:
                raise ValueError(f"{len(cardinalities)} cardinalities given for "
                                 f"{cat_arr.shape[1]} categorical columns")
            for j, (col, card) in enumerate(zip(categorical_names, cardinalities, strict=True)):
                column = cat_arr[:, j]
                if len(column) and (column.min() < 0 or column.max() >= card):
                    raise ValueError(
                        f"categorical column {col!r} has indices outside 0..{card - 1} "
                        f"(min {column.min()}, max {column.max()})"
                    )
        else:
            cardinalities = ()

        unknown = sorted(set(labels) ^ set(names))
        if unknown:
            raise ValueError(f"labels are given for {sorted(labels)} but tasks are {names}")
        unknown_masks = sorted(set(masks) - set(names))
        if unknown_masks:
            raise ValueError(f"masks given for unknown task(s) {unknown_masks}; tasks are {names}")

        clean_labels: dict[str, np.ndarray] = {}
        clean_masks: dict[str, np.ndarray] = {}
        for task in tasks:
            y = np.asarray(labels[task.name]).reshape(-1)
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError):
                example = next(v for v in y.tolist() if not _is_number(v))
                raise ValueError(f"task {task.name!r} has non-numeric labels such as "
                                 f"{example!r}; labels must be numbers (0/1 for a binary "
                                 "task)") from None
            if len(y) != n:
                raise ValueError(f"length mismatch: task {task.name!r} has {len(y)} labels "
                                 f"but the features have {n} rows")
            mask = None
            if task.name in masks and masks[task.name] is not None:
                mask = np.asarray(masks[task.name]).reshape(-1)
                if len(mask) != n:
                    raise ValueError(f"length mismatch: mask of task {task.name!r} has "
                                     f"{len(mask)} entries but the features have {n} rows")
                if mask.dtype != bool:
                    if not np.isin(mask, (0, 1)).all():
                        raise ValueError(f"mask of task {task.name!r} must be boolean or 0/1")
                    mask = mask.astype(bool)
            inside = y if mask is None else y[mask]
            bad = int((~np.isfinite(inside)).sum())
            if bad:
                where = "" if mask is None else " inside its mask"
                raise ValueError(f"task {task.name!r} has {bad} NaN or inf labels{where}; "
                                 "drop those rows or give the task a mask")
            if task.kind == "binary":
                values = np.unique(inside)
                if not np.isin(values, (0.0, 1.0)).all():
                    shown = values[~np.isin(values, (0.0, 1.0))][:5].tolist()
                    raise ValueError(f"binary task {task.name!r} must have labels 0/1, found "
                                     f"other values such as {shown}")
            if mask is not None:
                y = np.where(mask, y, 0.0)
                clean_masks[task.name] = mask
            clean_labels[task.name] = y.astype(np.float32)

        if groups is not None:
            groups = np.asarray(groups).reshape(-1)
            n_missing = int(pd.isna(groups).sum())
            if n_missing:
                raise ValueError(f"groups has {n_missing} missing values; every sample needs "
                                 "a group id (for example its user id)")
            if len(groups) != n:
                raise ValueError(f"length mismatch: groups has {len(groups)} entries "
                                 f"but the features have {n} rows")
            if not np.issubdtype(groups.dtype, np.integer):
                groups = pd.factorize(groups)[0]
            groups = groups.astype(np.int64)
        if truth is not None:
            if not isinstance(truth, pd.DataFrame):
                raise ValueError(f"truth must be a pandas DataFrame, got {type(truth).__name__}")
            if len(truth) != n:
                raise ValueError(f"length mismatch: truth has {len(truth)} rows "
                                 f"but the features have {n} rows")
            truth = truth.reset_index(drop=True)

        self.dense = dense_arr
        self.categorical = cat_arr
        self.labels = clean_labels
        self.masks = clean_masks
        self.groups = groups
        self.truth = truth
        self.meta: dict[str, Any] = dict(meta or {})
        self.schema = Schema(
            dense=tuple(dense_names),
            categorical=tuple(categorical_names),
            cardinalities=tuple(cardinalities),
            tasks=tasks,
        )
        self._n = n
        self._tensor_cache: tuple | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        dense: Sequence[str] = (),
        categorical: Sequence[str] = (),
        tasks: Mapping[str, str | Mapping[str, str]],
        group: str | None = None,
        truth: Sequence[str] = (),
    ) -> MultiTaskData:
        """Build a data set from a pandas DataFrame — the way to bring your own data.

        Args:
            df: one row per sample (impression).
            dense: numeric feature columns (used as float32, not rescaled).
            categorical: categorical feature columns; their values are encoded as indices
                ``0 .. k-1`` in sorted order (``data.meta["categories"]`` keeps the mapping).
            tasks: label column → kind (``"binary"`` or ``"regression"``), or → a dict
                ``{"kind": ..., "mask": column}`` for a task defined only where the boolean
                (or 0/1) column ``mask`` is true, e.g. ``{"kind": "binary", "mask": "click"}``
                for conversion given click. Labels outside the mask may be NaN.
            group: optional column of group ids (for example the user id), used for GAUC.
            truth: optional ground-truth columns kept in ``data.truth``, never as features.

        Example:
            >>> import pandas as pd
            >>> df = pd.DataFrame({"price": [1.0, 2.5, 0.5, 3.0], "user": ["a", "b", "a", "c"],
            ...                    "item": [7, 7, 9, 8], "click": [1, 0, 1, 0],
            ...                    "buy": [1, 0, 0, 0]})
            >>> data = MultiTaskData.from_frame(df, dense=["price"], categorical=["user", "item"],
            ...                                 tasks={"click": "binary", "buy": "binary"})
            >>> data.task_names, data.schema.cardinalities
            (('click', 'buy'), (3, 3))
        """
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise ValueError(f"df has no rows (columns {list(df.columns)}); a data set needs "
                             "at least one sample")
        dense, categorical, truth = list(dense), list(categorical), list(truth)
        if not isinstance(tasks, Mapping) or not tasks:
            raise ValueError("tasks must be a non-empty mapping of label column -> kind, "
                             f"got {tasks!r}")
        wanted = dense + categorical + list(tasks) + truth + ([group] if group else [])
        missing = [c for c in wanted if c not in df.columns]
        for spec in tasks.values():
            if isinstance(spec, Mapping) and spec.get("mask") and spec["mask"] not in df.columns:
                missing.append(spec["mask"])
        if missing:
            raise ValueError(f"column(s) {missing} not found in the DataFrame; "
                             f"it has {list(df.columns)}")
        leaked = [c for c in tasks if c in dense or c in categorical]
        if leaked:
            raise ValueError(
                f"label column(s) {leaked} are also listed as features; a model would see its "
                "own target (label leak). Remove them from `dense`/`categorical`."
            )
        leaked_truth = [c for c in truth if c in dense or c in categorical]
        if leaked_truth:
            raise ValueError(f"truth column(s) {leaked_truth} are also listed as features; "
                             "ground truth must never be fed to a model")

        specs, labels, masks = [], {}, {}
        for name, spec in tasks.items():
            kind, mask_col = parse_task_spec(name, spec)
            specs.append(TaskSpec(name, kind))
            # Outside a mask the labels are ignored (NaN or anything else).
            inside = None if mask_col is None else _truthy(df[mask_col])
            hint = "binary labels must be 0/1" if kind == "binary" else "labels must be numbers"
            labels[name] = _numeric_column(df, name, "label", hint, rows=inside)
            if mask_col is not None:
                masks[name] = df[mask_col].to_numpy()

        dense_arr = None
        if dense:
            dense_arr = np.stack([_numeric_column(df, col, "dense feature",
                                                  "dense features must be numbers; declare "
                                                  "the column as categorical instead")
                                  for col in dense], axis=1)
        cat_arr, cards, categories = None, None, {}
        if categorical:
            codes = []
            for col in categorical:
                n_missing = int(df[col].isna().sum())
                if n_missing:
                    raise ValueError(f"categorical column {col!r} has {n_missing} missing "
                                     "values; fill them with an explicit category first")
                code, uniques = pd.factorize(df[col], sort=True)
                codes.append(code)
                categories[col] = pd.Index(uniques)
            cat_arr = np.stack(codes, axis=1)
            cards = [len(categories[c]) for c in categorical]
        return cls(
            dense=dense_arr,
            categorical=cat_arr,
            labels=labels,
            tasks=specs,
            dense_names=dense,
            categorical_names=categorical,
            cardinalities=cards,
            masks=masks,
            groups=None if group is None else df[group].to_numpy(),
            truth=df[truth].reset_index(drop=True) if truth else None,
            meta={"categories": categories},
        )

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        tasks = ", ".join(f"{t.name}:{t.kind}{'(masked)' if t.name in self.masks else ''}"
                          for t in self.schema.tasks)
        return (f"MultiTaskData(n={self._n}, dense={self.schema.n_dense}, "
                f"categorical={len(self.schema.categorical)}, tasks=[{tasks}])")

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.schema.task_names

    @property
    def weights(self) -> np.ndarray:
        """The generator's task weight vectors ``[n_tasks, n_features]`` (synthetic data only)."""
        if "weights" not in self.meta:
            raise AttributeError("this data set has no generator weights (only data made by "
                                 "make_correlated_tasks have them)")
        return self.meta["weights"]

    def mask(self, task: str) -> np.ndarray:
        """Boolean mask of the samples on which ``task`` is defined (all true if unmasked)."""
        self.schema.task(task)
        return self.masks.get(task, np.ones(self._n, dtype=bool))

    # ------------------------------------------------------------------ slicing
    def subset(self, index: Any) -> MultiTaskData:
        """A new data set with the rows selected by ``index`` (integer array or boolean mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            if len(index) != self._n:
                raise ValueError(f"boolean index has {len(index)} entries, data has {self._n}")
            index = np.flatnonzero(index)
        out = object.__new__(MultiTaskData)
        out.dense = None if self.dense is None else self.dense[index]
        out.categorical = None if self.categorical is None else self.categorical[index]
        out.labels = {k: v[index] for k, v in self.labels.items()}
        out.masks = {k: v[index] for k, v in self.masks.items()}
        out.groups = None if self.groups is None else self.groups[index]
        out.truth = None if self.truth is None else self.truth.iloc[index].reset_index(drop=True)
        out.meta = self.meta
        out.schema = self.schema
        out._n = len(index)
        out._tensor_cache = None
        return out

    def split(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
              ) -> tuple[MultiTaskData, ...]:
        """Randomly split into parts of the given fractions (e.g. train, valid, test).

        Fractions must be positive and sum to 1; the split is fixed by ``seed``.
        """
        fractions = [float(f) for f in fractions]
        if len(fractions) < 2 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError("fractions must be ≥ 2 positive numbers summing to 1, "
                             f"got {fractions}")
        order = np.random.default_rng(seed).permutation(self._n)
        bounds = np.round(np.cumsum(fractions) * self._n).astype(int)
        bounds[-1] = self._n
        parts, start = [], 0
        for stop in bounds:
            if stop <= start:
                raise ValueError(f"split fractions {fractions} leave an empty part for "
                                 f"{self._n} samples")
            parts.append(self.subset(np.sort(order[start:stop])))
            start = stop
        return tuple(parts)

    def select_tasks(self, tasks: Sequence[str]) -> MultiTaskData:
        """A copy with only the given tasks (features, groups and truth unchanged)."""
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        if not tasks:
            raise ValueError("select_tasks needs at least one task name")
        specs = tuple(self.schema.task(name) for name in tasks)
        out = self.subset(np.arange(self._n))
        out.labels = {name: self.labels[name] for name in tasks}
        out.masks = {name: self.masks[name] for name in tasks if name in self.masks}
        out.schema = Schema(dense=self.schema.dense, categorical=self.schema.categorical,
                            cardinalities=self.schema.cardinalities, tasks=specs)
        return out

    def subsample_labels(self, task: str, fraction: float, seed: int = 0) -> MultiTaskData:
        """A copy in which ``task`` keeps its labels on a random ``fraction`` of the samples.

        The other samples become unlabelled for that task (it gets, or narrows, a mask); the
        features and the other tasks are unchanged. Use it on a training split to make a task
        sparse while validating and testing on all its labels.
        """
        self.schema.task(task)
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
        defined = np.flatnonzero(self.mask(task))
        n_keep = max(1, round(float(fraction) * len(defined)))
        keep = np.random.default_rng(seed).choice(defined, size=n_keep, replace=False)
        mask = np.zeros(self._n, dtype=bool)
        mask[keep] = True
        out = self.subset(np.arange(self._n))
        out.masks = {**self.masks, task: mask}
        labels = np.where(mask, self.labels[task], 0.0).astype(np.float32)
        out.labels = {**self.labels, task: labels}
        return out

    # ------------------------------------------------------------------ iteration
    def tensors(self) -> tuple:
        """The data as torch tensors ``(dense, categorical, labels, masks)``, built once."""
        if self._tensor_cache is None:
            self._tensor_cache = (
                None if self.dense is None else torch.from_numpy(self.dense),
                None if self.categorical is None else torch.from_numpy(self.categorical),
                {k: torch.from_numpy(v) for k, v in self.labels.items()},
                {k: torch.from_numpy(v) for k, v in self.masks.items()},
            )
        return self._tensor_cache

    def loader(self, batch_size: int = 256, shuffle: bool = True, seed: int = 0,
               drop_last: bool = False) -> BatchLoader:
        """Mini-batches of :class:`Batch` that go straight into ``model(batch)``."""
        return BatchLoader(self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)

    def to_frame(self, include_truth: bool = False) -> pd.DataFrame:
        """The data as a DataFrame for display: features, labels (NaN outside a task's mask),
        group ids and, if asked, the ground truth (prefixed ``truth_``)."""
        columns: dict[str, Any] = {}
        if self.dense is not None:
            columns.update(zip(self.schema.dense, self.dense.T, strict=True))
        if self.categorical is not None:
            columns.update(zip(self.schema.categorical, self.categorical.T, strict=True))
        if self.groups is not None:
            columns["group"] = self.groups
        for name, y in self.labels.items():
            columns[name] = np.where(self.masks[name], y, np.nan) if name in self.masks else y
        frame = pd.DataFrame(columns)
        if include_truth and self.truth is not None:
            frame = pd.concat([frame, self.truth.add_prefix("truth_")], axis=1)
        return frame
