"""Shared parts of the loaders of the Alibaba data sets published on Tianchi (Ali-CCP and
AliExpress): option checks, a seeded row sampler and the encoding of categorical columns.

Categorical encoding never looks at a label. Each categorical column is either

* vocabulary-encoded: the distinct raw ids of the rows read (those seen at least
  ``min_count`` times), sorted, get codes ``1..K``; code 0 is ``unknown`` (absent, rare or,
  with a fixed ``vocabulary=`` from an earlier load, unseen); or
* hashed (``hash_buckets=``): a fixed 64-bit mix of the raw id and the column's name, modulo
  the number of buckets, plus 1; code 0 is again ``unknown`` (absent). Hashed codes do not
  depend on the rows read, so two loads (train, test) are always compatible.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["MISSING"]

#: Raw id standing for "this field is absent in this row" (encoded as code 0, ``unknown``).
MISSING = np.iinfo(np.int64).min
_BLOCK = 1 << 16  # rows per parsed chunk, and uniforms per block of the row sampler
_PARTS = ("train", "test", "all")


def _check_common(max_rows: Any, sample_rate: Any, seed: Any, min_count: Any) -> None:
    if max_rows is not None and (
        isinstance(max_rows, bool) or not isinstance(max_rows, int | np.integer) or max_rows < 1
    ):
        raise ValueError(f"max_rows must be None or an integer >= 1, got {max_rows!r}")
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int | float)
        or not (0.0 < float(sample_rate) <= 1.0)
    ):
        raise ValueError(f"sample_rate must be a number in (0, 1], got {sample_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if (
        isinstance(min_count, bool)
        or not isinstance(min_count, int | np.integer)
        or (min_count < 1)
    ):
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")


def _check_part(part: Any) -> list[str]:
    if part not in _PARTS:
        raise ValueError(f"part must be one of {list(_PARTS)}, got {part!r}")
    return ["train", "test"] if part == "all" else [part]


class _RowSampler:
    """Keep each row with probability ``rate``: row ``i`` of a file is kept iff the ``i``-th
    uniform of ``default_rng(seed)`` is below ``rate``, however the rows are chunked."""

    def __init__(self, rate: float, seed: Sequence[int]) -> None:
        self._rng = None if rate >= 1.0 else np.random.default_rng(list(seed))
        self._rate = rate
        self._block = np.ones(0, dtype=bool)
        self._pos = 0

    def mask(self, n: int) -> np.ndarray:
        if self._rng is None:
            return np.ones(n, dtype=bool)
        out = np.empty(n, dtype=bool)
        filled = 0
        while filled < n:
            if self._pos == len(self._block):
                self._block = self._rng.random(_BLOCK) < self._rate
                self._pos = 0
            take = min(n - filled, len(self._block) - self._pos)
            out[filled : filled + take] = self._block[self._pos : self._pos + take]
            filled += take
            self._pos += take
        return out

    def keep(self) -> bool:
        if self._rng is None:
            return True
        if self._pos == len(self._block):
            self._block = self._rng.random(_BLOCK) < self._rate
            self._pos = 0
        self._pos += 1
        return bool(self._block[self._pos - 1])


def _hash_codes(values: np.ndarray, column: str, buckets: int) -> np.ndarray:
    """``1 + mix(value, column) % buckets`` with a fixed 64-bit mix (splitmix64's finaliser)."""
    salt = np.uint64(zlib.crc32(column.encode()) * 0x9E3779B97F4A7C15 % (1 << 64))
    x = values.astype(np.int64).view(np.uint64) ^ salt
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(buckets)).astype(np.int64) + 1


def _resolve_buckets(names: Sequence[str], hash_buckets: Any) -> dict[str, int]:
    if hash_buckets is None:
        return {}
    if isinstance(hash_buckets, Mapping):
        unknown = sorted(set(hash_buckets) - set(names))
        if unknown:
            raise ValueError(
                f"hash_buckets names unknown column(s) {unknown}; the "
                f"categorical columns are {list(names)}"
            )
        chosen = dict(hash_buckets)
    else:
        chosen = dict.fromkeys(names, hash_buckets)
    for name, b in chosen.items():
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
            raise ValueError(
                f"hash_buckets must be an integer >= 1 (or a mapping column -> "
                f"integer >= 1), got {b!r} for column {name!r}"
            )
    return {k: int(v) for k, v in chosen.items()}


def _resolve_vocabulary(
    names: Sequence[str], vocabulary: Any, hashed: Mapping[str, int]
) -> dict[str, np.ndarray]:
    if vocabulary is None:
        return {}
    if not isinstance(vocabulary, Mapping):
        raise ValueError(
            "vocabulary must be a mapping column -> raw ids (for example "
            f"data.meta['vocabulary'] of an earlier load), got "
            f"{type(vocabulary).__name__}"
        )
    unknown = sorted(set(vocabulary) - set(names))
    if unknown:
        raise ValueError(
            f"vocabulary names unknown column(s) {unknown}; the categorical "
            f"columns are {list(names)}"
        )
    both = sorted(set(vocabulary) & set(hashed))
    if both:
        raise ValueError(
            f"column(s) {both} are given both a vocabulary and hash_buckets; "
            "choose one encoding per column"
        )
    out = {}
    for name, ids in vocabulary.items():
        try:
            arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ValueError(f"vocabulary[{name!r}] must hold integer raw ids: {err}") from err
        out[name] = np.unique(arr)
    return out


def _encode_categoricals(
    names: Sequence[str], raw: np.ndarray, hash_buckets: Any, vocabulary: Any, min_count: int
) -> tuple[np.ndarray, list[int], dict[str, Any]]:
    """Codes ``[n, len(names)]`` from raw ids (``MISSING`` = absent), never looking at labels."""
    hashed = _resolve_buckets(names, hash_buckets)
    fixed = _resolve_vocabulary(names, vocabulary, hashed)
    codes = np.zeros(raw.shape, dtype=np.int64)
    cards, encoding, vocab_out = [], {}, {}
    for j, name in enumerate(names):
        col = raw[:, j]
        present = col != MISSING
        if name in hashed:
            codes[present, j] = _hash_codes(col[present], name, hashed[name])
            cards.append(hashed[name] + 1)
            encoding[name] = f"hash({hashed[name]})"
            continue
        if name in fixed:
            vocab = fixed[name]
            encoding[name] = "fixed vocabulary"
        else:
            values, counts = np.unique(col[present], return_counts=True)
            vocab = values[counts >= min_count]
            encoding[name] = "vocabulary"
        pos, hit = _lookup(vocab, col)
        hit &= present
        codes[hit, j] = pos[hit] + 1
        vocab_out[name] = vocab
        cards.append(len(vocab) + 1)
    return codes, cards, {"encoding": encoding, "vocabulary": vocab_out, "hash_buckets": hashed}


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``keys`` in the sorted unique array ``sorted_keys`` and whether found."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    hit = sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == keys
    return pos, hit
