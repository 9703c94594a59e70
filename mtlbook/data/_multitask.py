"""The data container :class:`MultiTaskData`.

A :class:`MultiTaskData` holds one table of impressions (or samples): a dense float block, a
block of categorical indices, one label vector per task, an optional per-task mask for tasks
that are only defined on a subspace (conversion is only observed on clicked impressions), optional
group ids (users, for GAUC) and optional ground truth that is never fed to a model.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._core import Schema, TaskSpec, parse_task_spec
from ._loader import BatchLoader
from ._validation import (
    _cardinalities,
    _feature_blocks,
    _frame_columns,
    _group_ids,
    _labels_and_masks,
    _numeric_column,
    _task_tuple,
    _truth_frame,
    _truthy,
)

__all__ = ["MultiTaskData"]


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
        tasks = _task_tuple(tasks)
        dense_arr, cat_arr, n = _feature_blocks(
            dense, categorical, dense_names, categorical_names, [t.name for t in tasks]
        )
        cardinalities = _cardinalities(cat_arr, categorical_names, cardinalities)
        clean_labels, clean_masks = _labels_and_masks(tasks, labels, masks, n)
        groups = _group_ids(groups, n)
        truth = _truth_frame(truth, n)

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
        tasks: Mapping[str, str | Mapping[str, str]] | None = None,
        group: str | None = None,
        truth: Sequence[str] = (),
        min_count: int = 1,
        hash_buckets: int | Mapping[str, int] | None = None,
        standardize: bool | Sequence[str] = False,
        like: Any = None,
    ) -> MultiTaskData:
        """Build a data set from a pandas DataFrame — the way to bring your own data.

        The first call, on the training rows, fits a :class:`~mtlbook.data.FrameEncoder`
        (kept as ``data.encoder`` and in ``data.schema``); every later frame — validation,
        test, new requests — is encoded with it: ``from_frame(test_df, like=train)`` (or
        ``train.encode(test_df)``). Categories seen in training keep their codes; unseen,
        rare (``min_count``) and missing values get the column's unknown code.

        Args:
            df: one row per sample (impression).
            dense: numeric feature columns (float32; rescaled only with ``standardize``).
            categorical: categorical feature columns; the distinct training values, sorted,
                are coded ``0 .. k-1`` and ``k`` is the unknown code (cardinality ``k + 1``;
                ``data.meta["categories"]`` keeps the values).
            tasks: label column → kind (``"binary"`` or ``"regression"``), or → a dict
                ``{"kind": ..., "mask": column}`` for a task defined only where the boolean
                (or 0/1) column ``mask`` is true, e.g. ``{"kind": "binary", "mask": "click"}``
                for conversion given click. Labels outside the mask may be NaN.
            group: optional column of group ids (for example the user id), used for GAUC.
            truth: optional ground-truth columns kept in ``data.truth``, never as features.
            min_count, hash_buckets, standardize: encoding options of
                :class:`~mtlbook.data.FrameEncoder`.
            like: a data set built by ``from_frame`` (or a fitted
                :class:`~mtlbook.data.FrameEncoder`, or a loaded run) whose encoder and
                columns to reuse; then give no column or encoding arguments (``truth`` may
                still be given).

        Raises:
            ValueError: for a missing column, a label among the features, text in a dense or
                label column, NaN or inf features, labels other than 0/1 for a binary task,
                or (with ``like``) a column whose type differs from the training frame's.

        Example:
            >>> import pandas as pd
            >>> df = pd.DataFrame({"price": [1.0, 2.5, 0.5, 3.0], "user": ["a", "b", "a", "c"],
            ...                    "item": [7, 7, 9, 8], "click": [1, 0, 1, 0],
            ...                    "buy": [1, 0, 0, 0]})
            >>> train = MultiTaskData.from_frame(df, dense=["price"], categorical=["user", "item"],
            ...                                  tasks={"click": "binary", "buy": "binary"})
            >>> train.task_names, train.schema.cardinalities
            (('click', 'buy'), (4, 4))
            >>> new = df.assign(user=["a", "z", "c", "b"])      # "z" was never seen
            >>> test = MultiTaskData.from_frame(new, like=train)
            >>> test.categorical[:, 0].tolist()                 # a=0, b=1, c=2, unknown=3
            [0, 3, 2, 1]
        """
        from .encoding import FrameEncoder

        if like is not None:
            given = {
                "dense": bool(dense),
                "categorical": bool(categorical),
                "tasks": tasks is not None,
                "group": group is not None,
                "min_count": min_count != 1,
                "hash_buckets": hash_buckets is not None,
                "standardize": standardize is not False,
            }
            extra = [name for name, on in given.items() if on]
            if extra:
                raise ValueError(
                    f"from_frame(..., like=...) reuses the columns and encoding of `like`; "
                    f"do not also give {extra}"
                )
            encoder = like if isinstance(like, FrameEncoder) else getattr(like, "encoder", None)
            if not isinstance(encoder, FrameEncoder):
                raise ValueError(
                    "like must be a data set built by MultiTaskData.from_frame, a fitted "
                    f"FrameEncoder or a loaded run; got {type(like).__name__} without an encoder"
                )
            return cls._from_encoded(df, encoder, truth=truth, where="the frame")
        if tasks is None:
            raise ValueError("from_frame needs tasks= (label column -> kind), or like=")
        _frame_columns(df, dense, categorical, tasks, group, truth)
        encoder = FrameEncoder(
            dense=dense,
            categorical=categorical,
            tasks=tasks,
            group=group,
            min_count=min_count,
            hash_buckets=hash_buckets,
            standardize=standardize,
        ).fit(df)
        return cls._from_encoded(df, encoder, truth=truth, where="the training frame")

    @classmethod
    def _from_encoded(
        cls, df: pd.DataFrame, encoder: Any, *, truth: Sequence[str] = (), where: str = "the frame"
    ) -> MultiTaskData:
        """The rows of ``df`` encoded by the fitted ``encoder`` (labels read from ``df``)."""
        truth = _frame_columns(
            df, encoder.dense, encoder.categorical, encoder.tasks, encoder.group, truth
        )[2]
        dense_arr, cat_arr = encoder.features(df, where=where)
        specs, labels, masks = [], {}, {}
        for name, spec in encoder.tasks.items():
            kind, mask_col = parse_task_spec(name, spec)
            specs.append(TaskSpec(name, kind))
            # Outside a mask the labels are ignored (NaN or anything else).
            inside = None if mask_col is None else _truthy(df[mask_col])
            hint = "binary labels must be 0/1" if kind == "binary" else "labels must be numbers"
            labels[name] = _numeric_column(df, name, "label", hint, rows=inside)
            if mask_col is not None:
                masks[name] = df[mask_col].to_numpy()
        categories = {col: pd.Index(vocab) for col, vocab in encoder.vocabularies.items()}
        out = cls(
            dense=dense_arr,
            categorical=cat_arr,
            labels=labels,
            tasks=specs,
            dense_names=encoder.dense,
            categorical_names=encoder.categorical,
            cardinalities=encoder.cardinalities,
            masks=masks,
            groups=None if encoder.group is None else df[encoder.group].to_numpy(),
            truth=df[truth].reset_index(drop=True) if truth else None,
            meta={"categories": categories},
        )
        out.schema = dataclasses.replace(out.schema, encoder=encoder)
        return out

    @property
    def encoder(self) -> Any:
        """The :class:`~mtlbook.data.FrameEncoder` of a data set built by :meth:`from_frame`
        (``None`` for other data sets)."""
        return self.schema.encoder

    def encode(self, df: pd.DataFrame, *, truth: Sequence[str] = ()) -> MultiTaskData:
        """``df`` encoded like this data set: ``MultiTaskData.from_frame(df, like=self)``."""
        return MultiTaskData.from_frame(df, truth=truth, like=self)

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        tasks = ", ".join(
            f"{t.name}:{t.kind}{'(masked)' if t.name in self.masks else ''}"
            for t in self.schema.tasks
        )
        return (
            f"MultiTaskData(n={self._n}, dense={self.schema.n_dense}, "
            f"categorical={len(self.schema.categorical)}, tasks=[{tasks}])"
        )

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.schema.task_names

    @property
    def weights(self) -> np.ndarray:
        """The generator's task weight vectors ``[n_tasks, n_features]`` (synthetic data only)."""
        if "weights" not in self.meta:
            raise AttributeError(
                "this data set has no generator weights (only data made by "
                "make_correlated_tasks have them)"
            )
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

    def split(
        self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
    ) -> tuple[MultiTaskData, ...]:
        """Randomly split into parts of the given fractions (e.g. train, valid, test).

        Fractions must be positive and sum to 1; the split is fixed by ``seed``.
        """
        fractions = [float(f) for f in fractions]
        if len(fractions) < 2 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(
                f"fractions must be ≥ 2 positive numbers summing to 1, got {fractions}"
            )
        order = np.random.default_rng(seed).permutation(self._n)
        bounds = np.round(np.cumsum(fractions) * self._n).astype(int)
        bounds[-1] = self._n
        parts, start = [], 0
        for stop in bounds:
            if stop <= start:
                raise ValueError(
                    f"split fractions {fractions} leave an empty part for {self._n} samples"
                )
            parts.append(self.subset(np.sort(order[start:stop])))
            start = stop
        return tuple(parts)

    def without_groups(self) -> MultiTaskData:
        """The same rows without group ids (the arrays are shared, not copied), so that
        :func:`~mtlbook.metrics.evaluate` skips GAUC: per-group AUC is the slowest metric of a
        validation pass, and a comparison that reports AUC does not need it.

        Example:
            >>> import mtlbook as mb
            >>> data = mb.simulate_funnel(500, seed=0).without_groups()
            >>> data.groups is None, len(data)
            (True, 500)
        """
        out = copy.copy(self)
        out.groups = None
        return out

    def select_tasks(self, tasks: Sequence[str]) -> MultiTaskData:
        """A copy with only the given tasks (features, groups and truth unchanged)."""
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        if not tasks:
            raise ValueError("select_tasks needs at least one task name")
        specs = tuple(self.schema.task(name) for name in tasks)
        out = self.subset(np.arange(self._n))
        out.labels = {name: self.labels[name] for name in tasks}
        out.masks = {name: self.masks[name] for name in tasks if name in self.masks}
        out.schema = dataclasses.replace(self.schema, tasks=specs)
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

    def loader(
        self, batch_size: int = 256, shuffle: bool = True, seed: int = 0, drop_last: bool = False
    ) -> BatchLoader:
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
