"""Private checks and conversions behind :class:`~mtlbook.data.MultiTaskData`.

The constructor's checks (tasks, feature blocks, cardinalities, labels and masks, groups and
truth) and the column checks and encodings of :meth:`~mtlbook.data.MultiTaskData.from_frame`.
Each raises a ``ValueError`` that names the offending column, task or argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._core import TaskSpec


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _truthy(column: pd.Series) -> pd.Series:
    """The rows where a mask column is true (``1``, ``True``); anything else counts as false."""
    return pd.to_numeric(column, errors="coerce").fillna(0).astype(bool)


def _numeric_column(
    df: pd.DataFrame, column: str, role: str, hint: str, rows: pd.Series | None = None
) -> np.ndarray:
    """Column ``column`` of ``df`` as float64 (missing values as NaN), or a ``ValueError`` that
    names the column and shows a value that is not a number (only ``rows`` are checked)."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if rows is not None:
        bad &= rows
    if bad.any():
        raise ValueError(
            f"{role} column {column!r} has non-numeric values such as "
            f"{raw[bad].iloc[0]!r} ({int(bad.sum())} of {len(raw)} rows); {hint}"
        )
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _as_2d(name: str, values: Any, dtype: Any, n_columns: int) -> np.ndarray | None:
    if values is None:
        if n_columns:
            raise ValueError(f"{name} is None but {n_columns} {name} column names were given")
        return None
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array [n_samples, n_columns], got shape {arr.shape}"
        )
    if arr.shape[1] != n_columns:
        raise ValueError(
            f"{name} has {arr.shape[1]} columns but {n_columns} column names were given"
        )
    return np.ascontiguousarray(arr, dtype=dtype)


# ---------------------------------------------------------------------- constructor checks
def _task_tuple(tasks: Sequence[TaskSpec] | Mapping[str, str]) -> tuple[TaskSpec, ...]:
    """The tasks as a tuple of :class:`TaskSpec` (a mapping is read as name → kind).

    Raises:
        ValueError: when there is no task or two tasks share a name.
    """
    if isinstance(tasks, Mapping):
        tasks = [TaskSpec(n, k) for n, k in tasks.items()]
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("at least one task is required")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    return tasks


def _feature_blocks(
    dense: Any,
    categorical: Any,
    dense_names: Sequence[str],
    categorical_names: Sequence[str],
    task_names: Sequence[str],
) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """Check and convert the two feature blocks.

    Returns:
        ``(dense, categorical, n)``: the dense block as float32 and the categorical block as
        int64 (each ``None`` when not given) and their number of rows.

    Raises:
        ValueError: for missing or misshapen blocks, blocks of different lengths, no rows,
            repeated column names, a label column among the features, or NaN/inf dense values.
    """
    dense_arr = _as_2d("dense", dense, np.float32, len(dense_names))
    cat_arr = _as_2d("categorical", categorical, np.int64, len(categorical_names))
    if dense_arr is None and cat_arr is None:
        raise ValueError("a data set needs at least one feature: give dense or categorical")
    if dense_arr is not None and cat_arr is not None and len(dense_arr) != len(cat_arr):
        raise ValueError(
            f"length mismatch: dense has {len(dense_arr)} rows, categorical has {len(cat_arr)}"
        )
    if dense_arr is not None:
        n = len(dense_arr)
    else:
        assert cat_arr is not None  # one of the two blocks is given (checked above)
        n = len(cat_arr)
    if n == 0:
        raise ValueError("the features have 0 rows; a data set needs at least one sample")
    all_columns = list(dense_names) + list(categorical_names)
    if len(set(all_columns)) != len(all_columns):
        raise ValueError(f"feature column names must be unique, got {all_columns}")
    leaked = sorted(set(task_names) & set(all_columns))
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
            raise ValueError(
                f"dense features contain NaN or inf values: {where} "
                "(column: count); impute or drop them first"
            )
    return dense_arr, cat_arr, n


def _cardinalities(
    cat_arr: np.ndarray | None,
    categorical_names: Sequence[str],
    cardinalities: Sequence[int] | None,
) -> tuple[int, ...]:
    """The cardinality of each categorical column (default: max index + 1; ``()`` without
    categorical features).

    Raises:
        ValueError: when their number differs from the columns' or an index is out of range.
    """
    if cat_arr is None:
        return ()
    if cardinalities is None:
        cardinalities = [int(c.max()) + 1 if len(c) else 1 for c in cat_arr.T]
    cardinalities = tuple(int(c) for c in cardinalities)
    if len(cardinalities) != cat_arr.shape[1]:
        raise ValueError(
            f"{len(cardinalities)} cardinalities given for {cat_arr.shape[1]} categorical columns"
        )
    for j, (col, card) in enumerate(zip(categorical_names, cardinalities, strict=True)):
        column = cat_arr[:, j]
        if len(column) and (column.min() < 0 or column.max() >= card):
            raise ValueError(
                f"categorical column {col!r} has indices outside 0..{card - 1} "
                f"(min {column.min()}, max {column.max()})"
            )
    return cardinalities


def _label_vector(task: TaskSpec, values: Any, n: int) -> np.ndarray:
    """The labels of ``task`` as a float64 vector of ``n`` entries.

    Raises:
        ValueError: for non-numeric labels or a length other than ``n``.
    """
    y = np.asarray(values).reshape(-1)
    try:
        y = y.astype(np.float64)
    except (TypeError, ValueError):
        example = next(v for v in y.tolist() if not _is_number(v))
        raise ValueError(
            f"task {task.name!r} has non-numeric labels such as "
            f"{example!r}; labels must be numbers (0/1 for a binary "
            "task)"
        ) from None
    if len(y) != n:
        raise ValueError(
            f"length mismatch: task {task.name!r} has {len(y)} labels "
            f"but the features have {n} rows"
        )
    return y


def _mask_vector(task: TaskSpec, values: Any, n: int) -> np.ndarray | None:
    """The mask of ``task`` as a boolean vector of ``n`` entries (``None`` if it has none).

    Raises:
        ValueError: for a length other than ``n`` or values other than booleans and 0/1.
    """
    if values is None:
        return None
    mask = np.asarray(values).reshape(-1)
    if len(mask) != n:
        raise ValueError(
            f"length mismatch: mask of task {task.name!r} has "
            f"{len(mask)} entries but the features have {n} rows"
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"mask of task {task.name!r} must be boolean or 0/1")
        mask = mask.astype(bool)
    return mask


def _labels_and_masks(
    tasks: tuple[TaskSpec, ...], labels: Mapping[str, Any], masks: dict[str, Any], n: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Check and convert the labels (float32, 0 outside a mask) and masks (bool) per task.

    Raises:
        ValueError: when labels are not given for exactly the tasks, masks are given for an
            unknown task, or a task's labels or mask are invalid (see :func:`_label_vector`,
            :func:`_mask_vector`), NaN/inf inside its mask, or not 0/1 for a binary task.
    """
    names = [t.name for t in tasks]
    unknown = sorted(set(labels) ^ set(names))
    if unknown:
        raise ValueError(f"labels are given for {sorted(labels)} but tasks are {names}")
    unknown_masks = sorted(set(masks) - set(names))
    if unknown_masks:
        raise ValueError(f"masks given for unknown task(s) {unknown_masks}; tasks are {names}")

    clean_labels: dict[str, np.ndarray] = {}
    clean_masks: dict[str, np.ndarray] = {}
    for task in tasks:
        y = _label_vector(task, labels[task.name], n)
        mask = _mask_vector(task, masks.get(task.name), n)
        inside = y if mask is None else y[mask]
        bad = int((~np.isfinite(inside)).sum())
        if bad:
            where = "" if mask is None else " inside its mask"
            raise ValueError(
                f"task {task.name!r} has {bad} NaN or inf labels{where}; "
                "drop those rows or give the task a mask"
            )
        if task.kind == "binary":
            values = np.unique(inside)
            if not np.isin(values, (0.0, 1.0)).all():
                shown = values[~np.isin(values, (0.0, 1.0))][:5].tolist()
                raise ValueError(
                    f"binary task {task.name!r} must have labels 0/1, found "
                    f"other values such as {shown}"
                )
        if mask is not None:
            y = np.where(mask, y, 0.0)
            clean_masks[task.name] = mask
        clean_labels[task.name] = y.astype(np.float32)
    return clean_labels, clean_masks


def _group_ids(groups: Any, n: int) -> np.ndarray | None:
    """The group ids as an int64 vector of ``n`` entries (other values are factorized).

    Raises:
        ValueError: for missing values or a length other than ``n``.
    """
    if groups is None:
        return None
    groups = np.asarray(groups).reshape(-1)
    n_missing = int(pd.isna(groups).sum())
    if n_missing:
        raise ValueError(
            f"groups has {n_missing} missing values; every sample needs "
            "a group id (for example its user id)"
        )
    if len(groups) != n:
        raise ValueError(
            f"length mismatch: groups has {len(groups)} entries but the features have {n} rows"
        )
    if not np.issubdtype(groups.dtype, np.integer):
        groups = pd.factorize(groups)[0]
    return groups.astype(np.int64)


def _truth_frame(truth: pd.DataFrame | None, n: int) -> pd.DataFrame | None:
    """The ground truth with a fresh index, checked to have ``n`` rows.

    Raises:
        ValueError: when it is not a DataFrame or has another number of rows.
    """
    if truth is None:
        return None
    if not isinstance(truth, pd.DataFrame):
        raise ValueError(f"truth must be a pandas DataFrame, got {type(truth).__name__}")
    if len(truth) != n:
        raise ValueError(
            f"length mismatch: truth has {len(truth)} rows but the features have {n} rows"
        )
    return truth.reset_index(drop=True)


# ---------------------------------------------------------------------- from_frame helpers
def _frame_columns(
    df: pd.DataFrame,
    dense: Sequence[str],
    categorical: Sequence[str],
    tasks: Mapping[str, Any],
    group: str | None,
    truth: Sequence[str],
) -> tuple[list[str], list[str], list[str]]:
    """Check the arguments of :meth:`~mtlbook.data.MultiTaskData.from_frame` against the DataFrame.

    Returns:
        ``(dense, categorical, truth)`` as lists.

    Raises:
        ValueError: when ``df`` is not a DataFrame or has no rows, ``tasks`` is not a
            non-empty mapping, a column is missing, or a label or truth column is also a
            feature.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError(
            f"df has no rows (columns {list(df.columns)}); a data set needs at least one sample"
        )
    dense, categorical, truth = list(dense), list(categorical), list(truth)
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(
            f"tasks must be a non-empty mapping of label column -> kind, got {tasks!r}"
        )
    wanted = dense + categorical + list(tasks) + truth + ([group] if group else [])
    missing = [c for c in wanted if c not in df.columns]
    for spec in tasks.values():
        if isinstance(spec, Mapping) and spec.get("mask") and spec["mask"] not in df.columns:
            missing.append(spec["mask"])
    missing = list(dict.fromkeys(missing))
    if missing:
        raise ValueError(
            f"column(s) {missing} not found in the DataFrame; it has {list(df.columns)}"
        )
    leaked = [c for c in tasks if c in dense or c in categorical]
    if leaked:
        raise ValueError(
            f"label column(s) {leaked} are also listed as features; a model would see its "
            "own target (label leak). Remove them from `dense`/`categorical`."
        )
    leaked_truth = [c for c in truth if c in dense or c in categorical]
    if leaked_truth:
        raise ValueError(
            f"truth column(s) {leaked_truth} are also listed as features; "
            "ground truth must never be fed to a model"
        )
    return dense, categorical, truth
