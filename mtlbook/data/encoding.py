"""Encoding a table once and reusing it: :class:`FrameEncoder`.

A model learns one embedding row per category code, so every frame it ever sees must be
encoded with the *training* vocabulary: a test file, tomorrow's requests, a CSV a colleague
sends. :class:`FrameEncoder` is fitted once on the training rows and applied to any later
frame:

* **categorical columns** get a vocabulary: the distinct training values seen at least
  ``min_count`` times, sorted, coded ``0 .. k-1``; the code ``k`` (the last one, so the
  cardinality is ``k + 1``) is reserved for *unknown*: a value never seen in training, a
  value rarer than ``min_count``, or a missing value. With ``hash_buckets`` a column is
  hashed instead (a fixed hash of the value, modulo the buckets; the last code is again the
  missing value): nothing is stored per value and no value is ever unseen.
* **dense columns** are used as numbers; with ``standardize=True`` the training mean and
  standard deviation turn each into ``(x - mean) / std``.
* **tasks** keep their kind and mask column, so a later labelled frame (a test file) becomes
  a :class:`~mtlbook.data.MultiTaskData` with the same schema, and an unlabelled one (requests
  to score) gives just the feature blocks (:meth:`FrameEncoder.features`).

The unknown code is an ordinary embedding row: it is trained on the training rows that map to
it (rare values with ``min_count > 1``, missing values), else it keeps its initial values.

A frame whose columns or types differ from the training frame's is refused with an error that
names the column: a missing column, a numeric column that now holds text, a categorical column
whose values were numbers in training and are text now (or the reverse).

The encoder is plain data (:meth:`FrameEncoder.to_dict` gives JSON-ready contents), so it is
saved with a trained model (:func:`mtlbook.save`) and beside an exported graph.

Example:
    >>> import pandas as pd
    >>> from mtlbook.data import FrameEncoder
    >>> train = pd.DataFrame({"price": [1.0, 2.0, 3.0], "shop": ["a", "b", "a"],
    ...                       "click": [1, 0, 1]})
    >>> enc = FrameEncoder(dense=["price"], categorical=["shop"], tasks={"click": "binary"})
    >>> enc.fit(train).cardinalities          # a, b and the unknown code
    (3,)
    >>> dense, cat = enc.features(pd.DataFrame({"price": [2.5], "shop": ["z"]}))
    >>> cat.tolist()                          # "z" was never seen in training
    [[2]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._core import TASK_KINDS, Schema, TaskSpec, parse_task_spec

__all__ = ["ENCODER_FORMAT", "FrameEncoder"]

#: Layout version of :meth:`FrameEncoder.to_dict`; another version is refused on reading.
ENCODER_FORMAT = 1
_INT_LIMIT = 2**53  # whole floats below this are exact integers


# ---------------------------------------------------------------------- column values
def _is_text_dtype(series: pd.Series) -> bool:
    """Whether a column holds text (object, string or a categorical of text)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return not pd.api.types.is_numeric_dtype(dtype.categories.dtype)
    return not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


def _numeric_keys(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, missing)`` of a numeric column: int64 keys when every value is whole (ids
    stay exact), else float64 keys; ``missing`` marks NaN/None (their keys are 0)."""
    numbers = pd.to_numeric(values, errors="raise")
    if pd.api.types.is_integer_dtype(numbers.dtype) and not numbers.isna().any():
        return numbers.to_numpy(dtype=np.int64), np.zeros(len(numbers), dtype=bool)
    floats = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = ~np.isfinite(floats)
    present = floats[~missing]
    if np.all(present == np.floor(present)) and np.all(np.abs(present) < _INT_LIMIT):
        keys = np.zeros(len(floats), dtype=np.int64)
        keys[~missing] = present.astype(np.int64)
        return keys, missing
    return np.where(missing, 0.0, floats), missing


def _text_keys(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, missing)`` of a text column: every present value as ``str``."""
    missing = values.isna().to_numpy()
    keys = np.empty(len(values), dtype=object)
    keys[:] = ""
    keys[~missing] = values[~missing].astype(str).to_numpy()
    return keys, missing


def _first_text(values: pd.Series) -> Any:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    return values[bad].iloc[0] if bad.any() else None


class FrameEncoder:
    """How the columns of a table become model inputs; fitted once, applied to any frame.

    Args:
        dense: numeric feature columns.
        categorical: categorical feature columns (any values: text, integers, ids).
        tasks: label column → kind (``"binary"`` or ``"regression"``), or → ``{"kind": ...,
            "mask": column}`` for a task defined only where the boolean (or 0/1) column
            ``mask`` is true. The kinds and masks of :meth:`MultiTaskData.from_frame
            <mtlbook.data.MultiTaskData.from_frame>`.
        group: optional column of group ids (for example the user id), used for GAUC.
        min_count: a categorical value seen fewer times than this in the training frame is
            coded as unknown (its rows train the unknown embedding).
        hash_buckets: hash every categorical column into this many buckets (an int), or the
            named ones (a mapping column → buckets), instead of keeping a vocabulary.
        standardize: rescale every dense column with the training mean and standard
            deviation (``True``), or the named ones (a sequence of column names).

    Raises:
        ValueError: for a column listed twice, a label among the features, an unknown task
            kind, or a bad ``min_count``/``hash_buckets``/``standardize``.
    """

    def __init__(
        self,
        *,
        dense: Sequence[str] = (),
        categorical: Sequence[str] = (),
        tasks: Mapping[str, str | Mapping[str, str]],
        group: str | None = None,
        min_count: int = 1,
        hash_buckets: int | Mapping[str, int] | None = None,
        standardize: bool | Sequence[str] = False,
    ) -> None:
        self.dense = tuple(_names("dense", dense))
        self.categorical = tuple(_names("categorical", categorical))
        self.tasks = _task_specs(tasks)
        self.group = group
        _check_columns(self.dense, self.categorical, self.tasks, group)
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
        self.min_count = min_count
        self.hash_buckets = _buckets(self.categorical, hash_buckets)
        self.standardize = _standardized(self.dense, standardize)
        # Learned by fit:
        self.kinds: dict[str, str] = {}  # categorical column -> "number" or "text"
        self.vocabularies: dict[str, list[Any]] = {}
        self.dense_stats: dict[str, tuple[float, float]] = {}
        self.fitted = False
        self._index: dict[str, pd.Index] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, df: pd.DataFrame) -> FrameEncoder:
        """Learn the vocabularies (and dense statistics) from the training frame ``df``.

        Labels are never looked at. Returns the encoder itself.
        """
        _check_frame(df, self.feature_columns(), "the training frame")
        self.kinds, self.vocabularies, self.dense_stats = {}, {}, {}
        for col in self.categorical:
            kind = "text" if _is_text_dtype(df[col]) else "number"
            self.kinds[col] = kind
            if col in self.hash_buckets:
                continue
            keys, missing = self._keys(df[col], kind, col)
            values, counts = np.unique(keys[~missing], return_counts=True)
            kept = values[counts >= self.min_count]
            self.vocabularies[col] = [_plain(v) for v in kept]
        for col in self.standardize:
            x = _dense_column(df, col, "the training frame")
            std = float(x.std())
            self.dense_stats[col] = (float(x.mean()), std if std > 0 else 1.0)
        self.fitted = True
        self._index = {}
        return self

    # ------------------------------------------------------------------ properties
    def feature_columns(self) -> list[str]:
        """The columns :meth:`features` reads: dense, then categorical."""
        return list(self.dense) + list(self.categorical)

    def label_columns(self) -> list[str]:
        """The columns :meth:`transform` reads besides the features: labels, masks, group."""
        out = list(self.tasks)
        out += [spec["mask"] for spec in self.tasks.values() if spec.get("mask")]
        if self.group:
            out.append(self.group)
        return list(dict.fromkeys(out))

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Codes per categorical column, the unknown code included."""
        self._check_fitted()
        return tuple(self._size(col) + 1 for col in self.categorical)

    @property
    def schema(self) -> Schema:
        """The :class:`~mtlbook.data.Schema` of every frame this encoder encodes."""
        return Schema(
            dense=self.dense,
            categorical=self.categorical,
            cardinalities=self.cardinalities,
            tasks=tuple(TaskSpec(name, spec["kind"]) for name, spec in self.tasks.items()),
            encoder=self,
        )

    def unknown_code(self, column: str) -> int:
        """The code of unknown (unseen, rare or missing) values of a categorical column."""
        self._check_fitted()
        if column not in self.categorical:
            raise KeyError(f"{column!r} is not a categorical column; they are {self.categorical}")
        return self._size(column)

    def describe(self) -> pd.DataFrame:
        """One row per feature column: ``column, role, encoding, codes`` (categorical, the
        unknown code included), ``mean, std`` (standardized dense columns)."""
        self._check_fitted()
        rows = []
        for col in self.dense:
            mean, std = self.dense_stats.get(col, (math.nan, math.nan))
            encoding = "standardized" if col in self.dense_stats else "as is"
            rows.append((col, "dense", encoding, math.nan, mean, std))
        for col in self.categorical:
            if col in self.hash_buckets:
                encoding = f"hash ({self.hash_buckets[col]} buckets)"
            else:
                encoding = f"vocabulary ({self.kinds[col]})"
            rows.append((col, "categorical", encoding, self._size(col) + 1, math.nan, math.nan))
        return pd.DataFrame(rows, columns=["column", "role", "encoding", "codes", "mean", "std"])

    # ------------------------------------------------------------------ applying
    def features(
        self, df: pd.DataFrame, *, where: str = "the frame"
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The feature blocks of ``df``: dense ``[n, n_dense]`` float32 (or ``None``) and
        categorical codes ``[n, n_categorical]`` int64 (or ``None``). Labels are not needed.

        Raises:
            ValueError: when a feature column is missing, a dense column holds text, NaN or
                inf, or a categorical column's values changed type since training.
        """
        self._check_fitted()
        _check_frame(df, self.feature_columns(), where)
        dense = None
        if self.dense:
            blocks = []
            for col in self.dense:
                x = _dense_column(df, col, where)
                if col in self.dense_stats:
                    mean, std = self.dense_stats[col]
                    x = (x - mean) / std
                blocks.append(x)
            dense = np.stack(blocks, axis=1).astype(np.float32)
        categorical = None
        if self.categorical:
            categorical = np.stack(
                [self._codes(df[col], col, where) for col in self.categorical], 1
            )
        return dense, categorical

    def unknown_counts(self, df: pd.DataFrame) -> dict[str, int]:
        """Rows of ``df`` whose value is coded unknown (unseen, rare or missing), per
        categorical column."""
        _, categorical = self.features(df)
        if categorical is None:
            return {}
        return {
            col: int((categorical[:, j] == self.unknown_code(col)).sum())
            for j, col in enumerate(self.categorical)
        }

    def transform(self, df: pd.DataFrame, *, truth: Sequence[str] = ()) -> Any:
        """``df`` as a :class:`~mtlbook.data.MultiTaskData` with this encoder's schema.

        The labels (and mask and group columns) must be in ``df``; to score rows without
        labels use :meth:`features`. ``truth`` names ground-truth columns kept apart.
        """
        from ._multitask import MultiTaskData  # the container imports this module

        self._check_fitted()
        return MultiTaskData._from_encoded(df, self, truth=truth)

    def fit_transform(self, df: pd.DataFrame, *, truth: Sequence[str] = ()) -> Any:
        """:meth:`fit` on ``df``, then :meth:`transform` it."""
        return self.fit(df).transform(df, truth=truth)

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        """Everything the encoder knows, as JSON-ready plain data (see :meth:`from_dict`)."""
        self._check_fitted()
        return {
            "format": ENCODER_FORMAT,
            "dense": list(self.dense),
            "categorical": list(self.categorical),
            "tasks": {name: dict(spec) for name, spec in self.tasks.items()},
            "group": self.group,
            "min_count": self.min_count,
            "hash_buckets": dict(self.hash_buckets),
            "standardize": list(self.standardize),
            "kinds": dict(self.kinds),
            "vocabularies": {k: list(v) for k, v in self.vocabularies.items()},
            "dense_stats": {k: list(v) for k, v in self.dense_stats.items()},
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> FrameEncoder:
        """An encoder from :meth:`to_dict`'s contents (for example read back from JSON).

        Raises:
            ValueError: for contents of another format version or with missing entries.
        """
        if not isinstance(state, Mapping):
            raise ValueError(
                f"encoder contents must be a mapping (from FrameEncoder.to_dict), got "
                f"{type(state).__name__}"
            )
        if state.get("format") != ENCODER_FORMAT:
            found = state.get("format")
            raise ValueError(
                f"encoder contents of format {found!r}; this mtlbook reads format "
                f"{ENCODER_FORMAT} (save the encoder again with this version)"
            )
        try:
            enc = cls(
                dense=state["dense"],
                categorical=state["categorical"],
                tasks=state["tasks"],
                group=state["group"],
                min_count=state["min_count"],
                hash_buckets=state["hash_buckets"] or None,
                standardize=state["standardize"],
            )
            enc.kinds = dict(state["kinds"])
            enc.vocabularies = {k: list(v) for k, v in state["vocabularies"].items()}
            enc.dense_stats = {
                k: (float(m), float(s)) for k, (m, s) in state["dense_stats"].items()
            }
        except KeyError as err:
            raise ValueError(f"encoder contents lack the entry {err.args[0]!r}") from None
        missing = [c for c in enc.categorical if c not in enc.kinds]
        missing += [
            c for c in enc.categorical if c not in enc.hash_buckets and c not in enc.vocabularies
        ]
        if missing:
            raise ValueError(f"encoder contents lack the vocabulary of column(s) {missing}")
        enc.fitted = True
        return enc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameEncoder):
            return NotImplemented
        if not (self.fitted and other.fitted):
            return self is other
        return self.to_dict() == other.to_dict()

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        state = "fitted" if self.fitted else "not fitted"
        return (
            f"FrameEncoder(dense={len(self.dense)}, categorical={len(self.categorical)}, "
            f"tasks={list(self.tasks)}, {state})"
        )

    # ------------------------------------------------------------------ internals
    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ValueError("the encoder is not fitted yet; call encoder.fit(train_frame) first")

    def _size(self, col: str) -> int:
        if col in self.hash_buckets:
            return self.hash_buckets[col]
        return len(self.vocabularies[col])

    def _keys(self, values: pd.Series, kind: str, col: str, where: str = "the training frame"):
        if kind == "text":
            if not _is_text_dtype(values) and values.notna().any():
                raise ValueError(
                    f"categorical column {col!r} held text in the training frame but holds "
                    f"numbers ({values.dtype}) in {where}; read it as text (for example "
                    f"pd.read_csv(..., dtype={{{col!r}: str}}))"
                )
            return _text_keys(values)
        try:
            return _numeric_keys(values)
        except (TypeError, ValueError):
            raise ValueError(
                f"categorical column {col!r} held numbers in the training frame but holds "
                f"text such as {_first_text(values)!r} in {where}; give it the values it "
                "had in training"
            ) from None

    def _lookup_index(self, col: str) -> pd.Index:
        if col not in self._index:
            vocab = self.vocabularies[col]
            if self.kinds[col] == "text":
                self._index[col] = pd.Index(np.asarray(vocab, dtype=object))
            else:
                self._index[col] = pd.Index(np.asarray(vocab))
        return self._index[col]

    def _codes(self, values: pd.Series, col: str, where: str) -> np.ndarray:
        keys, missing = self._keys(values, self.kinds[col], col, where)
        unknown = self._size(col)
        if col in self.hash_buckets:
            hashed = pd.util.hash_array(keys) % np.uint64(self.hash_buckets[col])
            return np.where(missing, unknown, hashed.astype(np.int64))
        index = self._lookup_index(col)
        if index.dtype.kind == "i" and keys.dtype.kind == "f":
            keys = keys.astype(np.float64)  # a non-whole number is never in an integer vocabulary
            codes = index.astype(np.float64).get_indexer(keys)
        elif index.dtype.kind == "f" and keys.dtype.kind == "i":
            codes = index.get_indexer(keys.astype(np.float64))
        else:
            codes = index.get_indexer(keys) if len(index) else np.full(len(keys), -1)
        codes = np.asarray(codes, dtype=np.int64)
        codes[(codes < 0) | missing] = unknown
        return codes


# ---------------------------------------------------------------------- checks
def _names(argument: str, names: Any) -> list[str]:
    if isinstance(names, str):
        raise ValueError(f"{argument} must be a list of column names, got the string {names!r}")
    names = list(names)
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise ValueError(f"{argument} column names must be non-empty strings, got {bad}")
    return names


def _task_specs(tasks: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(
            f"tasks must be a non-empty mapping of label column -> kind, got {tasks!r}"
        )
    out = {}
    for name, spec in tasks.items():
        kind, mask = parse_task_spec(name, spec)
        if kind not in TASK_KINDS:
            raise ValueError(
                f"task {name!r} has unknown kind {kind!r}; expected one of {TASK_KINDS}"
            )
        out[name] = {"kind": kind} if mask is None else {"kind": kind, "mask": mask}
    return out


def _check_columns(
    dense: tuple[str, ...], categorical: tuple[str, ...], tasks: Mapping[str, Any], group: Any
) -> None:
    features = list(dense) + list(categorical)
    if not features:
        raise ValueError("an encoder needs at least one feature: give dense or categorical")
    repeated = sorted({c for c in features if features.count(c) > 1})
    if repeated:
        raise ValueError(f"column(s) {repeated} are listed more than once among the features")
    leaked = [c for c in tasks if c in features]
    if leaked:
        raise ValueError(
            f"label column(s) {leaked} are also listed as features; a model would see its "
            "own target (label leak). Remove them from `dense`/`categorical`."
        )
    if group is not None and (not isinstance(group, str) or not group):
        raise ValueError(f"group must be a column name, got {group!r}")


def _buckets(categorical: tuple[str, ...], hash_buckets: Any) -> dict[str, int]:
    if hash_buckets is None:
        return {}
    if isinstance(hash_buckets, Mapping):
        unknown = sorted(set(hash_buckets) - set(categorical))
        if unknown:
            raise ValueError(
                f"hash_buckets names column(s) {unknown} that are not categorical; "
                f"the categorical columns are {list(categorical)}"
            )
        chosen = dict(hash_buckets)
    else:
        chosen = dict.fromkeys(categorical, hash_buckets)
    for col, b in chosen.items():
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
            raise ValueError(f"hash_buckets of column {col!r} must be an integer >= 1, got {b!r}")
    return {k: int(v) for k, v in chosen.items()}


def _standardized(dense: tuple[str, ...], standardize: Any) -> tuple[str, ...]:
    if isinstance(standardize, bool):
        return dense if standardize else ()
    names = _names("standardize", standardize)
    unknown = [c for c in names if c not in dense]
    if unknown:
        raise ValueError(
            f"standardize names column(s) {unknown} that are not dense; the dense columns "
            f"are {list(dense)}"
        )
    return tuple(names)


def _check_frame(df: Any, columns: Sequence[str], where: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        shown = list(df.columns)
        more = f" … ({len(shown)} columns)" if len(shown) > 20 else ""
        raise ValueError(f"column(s) {missing} not found in {where}; it has {shown[:20]}{more}")


def _dense_column(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        raise ValueError(
            f"dense column {col!r} holds text such as {raw[bad].iloc[0]!r} in {where} "
            f"({int(bad.sum())} of {len(raw)} rows); dense features must be numbers "
            "(declare the column as categorical instead)"
        )
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    n_bad = int((~np.isfinite(x)).sum())
    if n_bad:
        raise ValueError(
            f"dense column {col!r} has {n_bad} NaN or inf values in {where}; "
            "impute or drop them first"
        )
    return x


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python int, float or str that JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value
