"""Loaders of two public Alibaba click-and-conversion data sets: Ali-CCP and AliExpress.

Both are published on Alibaba's Tianchi platform behind a login, so the registry lists them
with ``manual`` sources: the reader downloads the archives as published and places them in
the cache. The loaders read inside those archives by streaming (``tarfile`` for Ali-CCP; for
AliExpress ``zipfile`` plus a forward-only reader for the zip archives nested in the published
zip), never extract anything and never hold a whole raw file in memory.

Both build the package's funnel layout, the one of :func:`~mtlbook.data.simulate_funnel`:
a ``click`` task and a ``purchase`` task (clicked *and* bought), both binary and defined on
every impression, so that ESMM, AITM, MMoE and PLE run on them unchanged. A conversion is only
observed after a click; the purchase label is never a feature.

Categorical encoding never looks at a label. Each categorical column is either

* vocabulary-encoded: the distinct raw ids of the rows read (those seen at least
  ``min_count`` times), sorted, get codes ``1..K``; code 0 is ``unknown`` (absent, rare or,
  with a fixed ``vocabulary=`` from an earlier load, unseen); or
* hashed (``hash_buckets=``): a fixed 64-bit mix of the raw id and the column's name, modulo
  the number of buckets, plus 1; code 0 is again ``unknown`` (absent). Hashed codes do not
  depend on the rows read, so two loads (train, test) are always compatible.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from ..data import MultiTaskData, TaskSpec
from ._loaders import check_no_leak

#: Raw id standing for "this field is absent in this row" (encoded as code 0, ``unknown``).
MISSING = np.iinfo(np.int64).min
_BLOCK = 1 << 16  # rows per parsed chunk, and uniforms per block of the row sampler
_PARTS = ("train", "test", "all")


# ============================================================================ shared helpers
def _check_common(max_rows: Any, sample_rate: Any, seed: Any, min_count: Any) -> None:
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(
            max_rows, int | np.integer) or max_rows < 1):
        raise ValueError(f"max_rows must be None or an integer >= 1, got {max_rows!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float) or not (
            0.0 < float(sample_rate) <= 1.0):
        raise ValueError(f"sample_rate must be a number in (0, 1], got {sample_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, int | np.integer) or (
            min_count < 1):
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
            out[filled:filled + take] = self._block[self._pos:self._pos + take]
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
            raise ValueError(f"hash_buckets names unknown column(s) {unknown}; the "
                             f"categorical columns are {list(names)}")
        chosen = dict(hash_buckets)
    else:
        chosen = dict.fromkeys(names, hash_buckets)
    for name, b in chosen.items():
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
            raise ValueError(f"hash_buckets must be an integer >= 1 (or a mapping column -> "
                             f"integer >= 1), got {b!r} for column {name!r}")
    return {k: int(v) for k, v in chosen.items()}


def _resolve_vocabulary(names: Sequence[str], vocabulary: Any, hashed: Mapping[str, int]
                        ) -> dict[str, np.ndarray]:
    if vocabulary is None:
        return {}
    if not isinstance(vocabulary, Mapping):
        raise ValueError("vocabulary must be a mapping column -> raw ids (for example "
                         f"data.meta['vocabulary'] of an earlier load), got "
                         f"{type(vocabulary).__name__}")
    unknown = sorted(set(vocabulary) - set(names))
    if unknown:
        raise ValueError(f"vocabulary names unknown column(s) {unknown}; the categorical "
                         f"columns are {list(names)}")
    both = sorted(set(vocabulary) & set(hashed))
    if both:
        raise ValueError(f"column(s) {both} are given both a vocabulary and hash_buckets; "
                         "choose one encoding per column")
    out = {}
    for name, ids in vocabulary.items():
        try:
            arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ValueError(f"vocabulary[{name!r}] must hold integer raw ids: {err}") from err
        out[name] = np.unique(arr)
    return out


def _encode_categoricals(names: Sequence[str], raw: np.ndarray, hash_buckets: Any,
                         vocabulary: Any, min_count: int
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
    return codes, cards, {"encoding": encoding, "vocabulary": vocab_out,
                          "hash_buckets": hashed}


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``keys`` in the sorted unique array ``sorted_keys`` and whether found."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    hit = sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == keys
    return pos, hit


# ==================================================================================== Ali-CCP
#: Feature fields of Ali-CCP: field id -> (column name, meaning), as described with the data
#: (Tianchi dataset 408) and in the ESMM paper. Fields ending in ``_14`` are multi-valued
#: behaviour lists whose entries carry counts as values.
ALICCP_FIELDS: dict[str, tuple[str, str]] = {
    "101": ("user_id", "user ID"),
    "109_14": ("user_category_history", "categories of the user's past behaviours"),
    "110_14": ("user_shop_history", "shops of the user's past behaviours"),
    "127_14": ("user_brand_history", "brands of the user's past behaviours"),
    "150_14": ("user_intention_history", "intention nodes of the user's past behaviours"),
    "121": ("user_profile", "categorical ID of the user profile"),
    "122": ("user_group", "categorical group ID of the user profile"),
    "124": ("user_gender", "gender"),
    "125": ("user_age", "age group"),
    "126": ("user_consumption_1", "consumption level, type I"),
    "127": ("user_consumption_2", "consumption level, type II"),
    "128": ("user_occupation", "occupation: working or not"),
    "129": ("user_geography", "geography"),
    "205": ("item_id", "item ID"),
    "206": ("item_category", "category ID of the item"),
    "207": ("item_shop", "shop ID of the item"),
    "210": ("item_intention", "intention node ID of the item"),
    "216": ("item_brand", "brand ID of the item"),
    "508": ("user_item_category", "combination of 109_14 and 206"),
    "509": ("user_item_shop", "combination of 110_14 and 207"),
    "702": ("user_item_brand", "combination of 127_14 and 216"),
    "853": ("user_item_intention", "combination of 150_14 and 210"),
    "301": ("position", "categorical expression of the display position"),
}
#: The 18 single-valued fields used by the public ESMM/AITM preprocessing (the default).
ALICCP_DEFAULT_FIELDS = ("101", "121", "122", "124", "125", "126", "127", "128", "129", "205",
                         "206", "207", "216", "508", "509", "702", "853", "301")
#: Labels and what reveals them: never features.
ALICCP_FORBIDDEN = frozenset({"click", "conversion", "buy", "purchase"})
ALICCP_FILES = {"train": "sample_train.tar.gz", "test": "sample_test.tar.gz"}


def ali_ccp_files(*, part: str = "train", **_: Any) -> list[str]:
    """The registry files that :func:`load_ali_ccp` reads for ``part``.

    Example:
        >>> ali_ccp_files(part="all")
        ['sample_train.tar.gz', 'sample_test.tar.gz']
    """
    return [ALICCP_FILES[p] for p in _check_part(part)]


def _check_fields(fields: Any) -> list[str]:
    if fields is None:
        return list(ALICCP_DEFAULT_FIELDS)
    if isinstance(fields, str | bytes) or not isinstance(fields, Sequence):
        raise ValueError(f"fields must be a sequence of Ali-CCP field ids such as ['101', "
                         f"'205'], got {fields!r}")
    out = [str(f) for f in fields]
    unknown = [f for f in out if f not in ALICCP_FIELDS]
    if unknown:
        raise ValueError(f"unknown Ali-CCP field id(s) {unknown}; known: {list(ALICCP_FIELDS)}")
    if len(set(out)) != len(out) or not out:
        raise ValueError(f"fields must be non-empty and without repeats, got {out}")
    return out


def _needles(field_ids: Sequence[str]) -> list[tuple[bytes, int]]:
    """Search keys of the wanted fields: ``\\x01 field \\x02`` and the column index."""
    return [(b"\x01" + f.encode() + b"\x02", j) for j, f in enumerate(field_ids)]


def _fill_first_ids(blob: bytes, needles: Sequence[tuple[bytes, int]], row: list[int],
                    where: str) -> None:
    """Write the first feature id of every wanted field of a feature list into ``row``.

    A feature list is ``field \\x02 feature_id \\x03 value`` entries joined by ``\\x01``;
    the first entry of a field is found by searching ``\\x01 field \\x02`` (a few scans in
    C per field instead of splitting the long user behaviour lists entry by entry).
    """
    if not blob:
        return
    text = b"\x01" + blob
    for needle, j in needles:
        at = text.find(needle)
        if at < 0:
            continue
        start = at + len(needle)
        stop = text.find(b"\x03", start)
        try:
            if stop < 0:
                raise ValueError("no \\x03")
            row[j] = int(text[start:stop])
        except ValueError as err:
            entry = text[at + 1:at + 41]
            raise ValueError(f"{where}: malformed feature entry {entry!r} (expected "
                             "field\\x02id\\x03value)") from err


def _read_skeleton(stream: IO[bytes], name: str, needles: Sequence[tuple[bytes, int]],
                   max_rows: int | None, sampler: _RowSampler, drop_unclicked: bool
                   ) -> dict[str, Any]:
    n_fields = len(needles)
    md5_index: dict[bytes, int] = {}
    blocks, rows = [], []
    sample_id, click, conv, md5_of = [], [], [], []
    n_kept = n_dropped = 0
    for lineno, line in enumerate(stream, 1):
        if not sampler.keep():
            continue
        parts = line.rstrip(b"\r\n").split(b",", 5)
        if len(parts) != 6:
            raise ValueError(f"{name} line {lineno}: expected 6 comma-separated columns "
                             "(sample id, click, conversion, common feature index, feature "
                             f"count, feature list), got {len(parts)}")
        c, v = parts[1], parts[2]
        if c not in (b"0", b"1") or v not in (b"0", b"1"):
            raise ValueError(f"{name} line {lineno}: click and conversion must be 0/1, got "
                             f"{c!r}, {v!r}")
        if drop_unclicked and c == b"0" and v == b"1":
            n_dropped += 1
            continue
        row = [MISSING] * n_fields
        _fill_first_ids(parts[5], needles, row, f"{name} line {lineno}")
        rows.append(row)
        try:
            sample_id.append(int(parts[0]))
        except ValueError as err:
            raise ValueError(f"{name} line {lineno}: sample id {parts[0]!r} is not an "
                             "integer") from err
        click.append(c == b"1")
        conv.append(v == b"1")
        md5_of.append(md5_index.setdefault(parts[3], len(md5_index)))
        if len(rows) == _BLOCK:
            blocks.append(np.array(rows, dtype=np.int64))
            rows = []
        n_kept += 1
        if max_rows is not None and n_kept >= max_rows:
            break
    blocks.append(np.array(rows, dtype=np.int64).reshape(-1, n_fields))
    return {"raw": np.concatenate(blocks), "sample_id": np.array(sample_id, dtype=np.int64),
            "click": np.array(click, dtype=bool), "conversion": np.array(conv, dtype=bool),
            "md5_of": np.array(md5_of, dtype=np.int64), "md5_index": md5_index,
            "n_dropped": n_dropped}


def _read_common(stream: IO[bytes], name: str, md5_index: Mapping[bytes, int],
                 needles: Sequence[tuple[bytes, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Parse only the lines whose common feature index is needed: memory is bounded by the
    number of distinct indexes among the rows read, not by the size of the table."""
    table = np.full((len(md5_index), len(needles)), MISSING, dtype=np.int64)
    found = np.zeros(len(md5_index), dtype=bool)
    left = len(md5_index)
    for lineno, line in enumerate(stream, 1):
        if not left:
            break
        comma = line.find(b",")
        k = md5_index.get(line[:comma]) if comma > 0 else None
        if k is None or found[k]:
            continue
        parts = line.rstrip(b"\r\n").split(b",", 2)
        if len(parts) != 3:
            raise ValueError(f"{name} line {lineno}: expected 3 comma-separated columns "
                             "(common feature index, feature count, feature list), got "
                             f"{len(parts)}")
        row = [MISSING] * len(needles)
        _fill_first_ids(parts[2], needles, row, f"{name} line {lineno}")
        table[k] = row
        found[k] = True
        left -= 1
    return table, found


def _member_base(member: tarfile.TarInfo) -> str:
    return member.name.rsplit("/", 1)[-1]


def _read_aliccp_part(path: Path, part: str, needles: Sequence[tuple[bytes, int]],
                      max_rows: int | None, sampler: _RowSampler, drop_unclicked: bool
                      ) -> dict[str, Any]:
    skeleton_name = f"sample_skeleton_{part}.csv"
    common_name = f"common_features_{part}.csv"
    sk = common = None
    seen: list[str] = []
    try:
        # One streaming pass when the skeleton precedes the common table in the archive (its
        # needed indexes are then known when the table arrives); a second pass otherwise.
        with tarfile.open(path, mode="r|*") as tf:
            for member in tf:
                seen.append(member.name)
                if not member.isfile():
                    continue
                base = _member_base(member)
                if base == skeleton_name and sk is None:
                    sk = _read_skeleton(tf.extractfile(member), skeleton_name, needles,
                                        max_rows, sampler, drop_unclicked)
                elif base == common_name and sk is not None:
                    common = _read_common(tf.extractfile(member), common_name,
                                          sk["md5_index"], needles)
                    break
        if sk is None:
            raise ValueError(f"{path.name} has no member {skeleton_name}; its members are "
                             f"{seen[:10]}")
        if common is None:
            with tarfile.open(path, mode="r|*") as tf:
                for member in tf:
                    if member.isfile() and _member_base(member) == common_name:
                        common = _read_common(tf.extractfile(member), common_name,
                                              sk["md5_index"], needles)
                        break
        if common is None:
            raise ValueError(f"{path.name} has no member {common_name}; its members are "
                             f"{seen[:10]}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path} is not a readable tar archive: {err}") from err
    table, found = common
    user_raw = table[sk["md5_of"]]
    raw = np.where(sk["raw"] != MISSING, sk["raw"], user_raw)
    sk.update(raw=raw, n_missing_common=int((~found).sum()))
    return sk


def load_ali_ccp(paths: Mapping[str, Path], *, part: str = "train",
                 max_rows: int | None = None, sample_rate: float = 1.0, seed: int = 0,
                 fields: Sequence[str] | None = None,
                 hash_buckets: int | Mapping[str, int] | None = None,
                 vocabulary: Mapping[str, Any] | None = None, min_count: int = 1,
                 drop_unclicked_conversions: bool = True) -> MultiTaskData:
    """Build click/purchase impressions from the published Ali-CCP archives.

    ``sample_train.tar.gz`` and ``sample_test.tar.gz`` each hold two comma-separated files
    without header. ``sample_skeleton_{part}.csv``: one impression per line, ``sample id,
    click, conversion, common feature index, feature count, feature list``.
    ``common_features_{part}.csv``: ``common feature index, feature count, feature list``,
    the features shared by the impressions with that index (the user's). A feature list is
    ``field \\x02 feature id \\x03 value`` entries joined by ``\\x01``.

    Construction: every impression is joined with its common features; each chosen field
    becomes one categorical column holding the field's *first* feature id in the
    impression's own list, else in its common list, else ``unknown`` (feature values are
    not used). Tasks: ``click`` (all impressions) and ``purchase`` = click and conversion (all
    impressions), the funnel layout of ESMM. Impressions with conversion 1 but click 0
    (impossible in a funnel) are dropped, as the public ESMM/AITM preprocessing does, unless
    ``drop_unclicked_conversions=False`` (they then count as not purchased). ``groups`` are
    the raw user ids (field 101; -1 where absent). ``truth`` has the official ``part`` and
    the raw ``sample_id``.

    Reading streams the tar members line by line. The skeleton is read first (up to
    ``max_rows`` kept rows); the common-feature table is then scanned and only the lines of
    the common feature indexes met among those rows are parsed, so memory grows with the
    rows kept (about ``8 x (fields + 1)`` bytes per impression plus one row per distinct
    index), not with the archive. The full training part has about 42 million impressions
    and the parsing is pure Python (of the order of ten thousand impressions per second on
    one core), so ``max_rows`` or ``sample_rate`` is the usual way to start.

    Args:
        paths: file name -> path, as :func:`mtlbook.datasets.fetch` returns.
        part: ``"train"``, ``"test"`` or ``"all"`` (both, train first).
        max_rows: keep at most this many impressions per part, the first ones kept in file
            order (``None``: all).
        sample_rate: keep each skeleton line with this probability (seeded; applied before
            ``max_rows``).
        seed: seed of the row sampler.
        fields: Ali-CCP field ids to use as features (see :data:`ALICCP_FIELDS`); default
            the 18 single-valued fields of :data:`ALICCP_DEFAULT_FIELDS`.
        hash_buckets: hash every field (an int) or the named columns (a mapping column name
            -> buckets) instead of building a vocabulary.
        vocabulary: fixed vocabularies, column name -> raw ids (``meta["vocabulary"]`` of an
            earlier load, e.g. of the train part); unseen ids become ``unknown``.
        min_count: in vocabularies built from the rows read, ids seen fewer times become
            ``unknown``.
        drop_unclicked_conversions: drop impressions with conversion 1 and click 0.

    Returns:
        The data; ``meta`` records the options, the per-column encoding, the vocabularies
        (code ``i`` is ``vocabulary[column][i - 1]``, code 0 is ``unknown``), the field id
        of each column and the counts of dropped rows and of missing common features.

    Example:
        >>> from mtlbook import datasets
        >>> data = datasets.load("ali-ccp", max_rows=100_000)   # doctest: +SKIP
        >>> data.task_names                                       # doctest: +SKIP
        ('click', 'purchase')
    """
    parts = _check_part(part)
    _check_common(max_rows, sample_rate, seed, min_count)
    field_ids = _check_fields(fields)
    if not isinstance(drop_unclicked_conversions, bool):
        raise ValueError(f"drop_unclicked_conversions must be True or False, got "
                         f"{drop_unclicked_conversions!r}")
    names = [ALICCP_FIELDS[f][0] for f in field_ids]
    check_no_leak(names, ALICCP_FORBIDDEN, "ali-ccp")
    parse_ids = field_ids + ([] if "101" in field_ids else ["101"])
    needles = _needles(parse_ids)
    reads = []
    for k, p in enumerate(parts):
        fname = ALICCP_FILES[p]
        if fname not in paths:
            raise ValueError(f"ali-ccp part {p!r} needs the file {fname!r}, which was not "
                             f"given; given: {sorted(paths)}")
        reads.append(_read_aliccp_part(Path(paths[fname]), p, needles, max_rows,
                                       _RowSampler(float(sample_rate), (int(seed), k)),
                                       drop_unclicked_conversions))
    raw = np.concatenate([r["raw"] for r in reads])
    if not len(raw):
        raise ValueError(f"ali-ccp: no impression was kept (part={part!r}, "
                         f"sample_rate={sample_rate!r})")
    codes, cards, enc = _encode_categoricals(names, raw[:, :len(names)], hash_buckets,
                                             vocabulary, int(min_count))
    click = np.concatenate([r["click"] for r in reads])
    conversion = np.concatenate([r["conversion"] for r in reads])
    user = raw[:, parse_ids.index("101")]
    return MultiTaskData(
        categorical=codes,
        labels={"click": click.astype(np.float64),
                "purchase": (click & conversion).astype(np.float64)},
        tasks=[TaskSpec("click", "binary"), TaskSpec("purchase", "binary")],
        categorical_names=names,
        cardinalities=cards,
        groups=np.where(user == MISSING, -1, user),
        truth=pd.DataFrame({
            "part": np.repeat(parts, [len(r["raw"]) for r in reads]),
            "sample_id": np.concatenate([r["sample_id"] for r in reads])}),
        meta={"dataset": "ali-ccp", "part": part, "fields": dict(zip(names, field_ids,
                                                                      strict=True)),
              **enc, "min_count": int(min_count), "max_rows": max_rows,
              "sample_rate": float(sample_rate), "seed": int(seed),
              "drop_unclicked_conversions": drop_unclicked_conversions,
              "n_dropped_unclicked_conversions": sum(r["n_dropped"] for r in reads),
              "n_missing_common": sum(r["n_missing_common"] for r in reads)},
    )


# ================================================================================= AliExpress
ALIEXPRESS_COUNTRIES = ("NL", "ES", "FR", "US")
ALIEXPRESS_FILE = "aliexpress_{country}_datasets.zip"
#: Raw layout (1-based column numbers, as in MTReclib's preprocessing): the user file has 33
#: columns (1 = search page id, then 32 user/query features), the item file 49 (1 = search
#: page id, 2..48 item features, 49 = label: 0 impression, 1 click, 2 purchase).
_USER_COLUMNS, _ITEM_COLUMNS = 33, 49
_USER_CAT = (2, 3, 4, 5, 6, 7, 8, 32, 33)
_USER_NUM = tuple(range(9, 32))
_ITEM_CAT = (19, 34, 35, 36, 40, 41, 42)
_ITEM_NUM = tuple(c for c in range(2, 49) if c not in _ITEM_CAT)
#: Feature name -> raw column, in MTReclib's order (16 categorical, then 63 numerical).
ALIEXPRESS_COLUMNS: dict[str, str] = {
    **{f"categorical_{i}": f"user_{c}" for i, c in enumerate(_USER_CAT, 1)},
    **{f"categorical_{i}": f"item_{c}" for i, c in enumerate(_ITEM_CAT, len(_USER_CAT) + 1)},
    **{f"numerical_{i}": f"user_{c}" for i, c in enumerate(_USER_NUM, 1)},
    **{f"numerical_{i}": f"item_{c}" for i, c in enumerate(_ITEM_NUM, len(_USER_NUM) + 1)},
}
#: Labels and what reveals them: never features.
ALIEXPRESS_FORBIDDEN = frozenset({"click", "conversion", "purchase", "label", "item_49"})


def aliexpress_files(*, country: str = "NL", **_: Any) -> list[str]:
    """The registry file that :func:`load_aliexpress` reads for ``country``.

    Example:
        >>> aliexpress_files(country="es")
        ['aliexpress_ES_datasets.zip']
    """
    return [ALIEXPRESS_FILE.format(country=_check_country(country))]


def _check_country(country: Any) -> str:
    code = country.upper() if isinstance(country, str) else country
    if code not in ALIEXPRESS_COUNTRIES:
        raise ValueError(f"country must be one of {list(ALIEXPRESS_COUNTRIES)}, got "
                         f"{country!r}")
    return code


class _ZipMemberStream(io.RawIOBase):
    """One member of a zip archive read from a forward-only stream (no seeking).

    The published AliExpress archive holds zip archives; opening those with ``zipfile``
    needs seeks, which inside a compressed member mean decompressing again from the start.
    This reader walks the local file headers instead and inflates the wanted member once.
    Stored and deflated members are supported, zip64 sizes and data descriptors included.
    """

    def __init__(self, source: IO[bytes], wanted: str, where: str) -> None:
        super().__init__()
        self._src, self._where, self._pending = source, where, b""
        self._out = memoryview(b"")
        while True:
            signature = self._read_exact(4, eof_ok=True)
            if signature != b"PK\x03\x04":
                raise ValueError(f"{where}: no member {wanted!r} in the nested zip archive")
            (_, flags, method, _, _, _, csize, _, nlen, elen) = struct.unpack(
                "<HHHHHIIIHH", self._read_exact(26))
            name = self._read_exact(nlen).decode("utf-8" if flags & 0x800 else "cp437")
            extra = self._read_exact(elen)
            zip64, csize = self._zip64(extra, csize)
            if flags & 0x1:
                raise ValueError(f"{where}: member {name!r} is encrypted")
            if method not in (0, 8):
                raise ValueError(f"{where}: member {name!r} uses compression method "
                                 f"{method}; only stored (0) and deflated (8) are supported")
            if method == 0 and flags & 0x8:
                raise ValueError(f"{where}: stored member {name!r} has no size in its header "
                                 "and cannot be read as a stream")
            if name.rsplit("/", 1)[-1].lower() == wanted.lower():
                self._method, self._left = method, csize
                self._inflate = zlib.decompressobj(-15) if method == 8 else None
                return
            self._skip(method, flags, csize, zip64)

    @staticmethod
    def _zip64(extra: bytes, csize: int) -> tuple[bool, int]:
        pos = 0
        while pos + 4 <= len(extra):
            tag, size = struct.unpack("<HH", extra[pos:pos + 4])
            if tag == 0x0001:
                values = extra[pos + 4:pos + 4 + size]
                # order: uncompressed size, compressed size (each only if 0xFFFFFFFF in
                # the fixed header); the local header of a large member carries both.
                if csize == 0xFFFFFFFF and len(values) >= 16:
                    csize = struct.unpack("<Q", values[8:16])[0]
                return True, csize
            pos += 4 + size
        return False, csize

    def _read_some(self, n: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        return self._src.read(n)

    def _read_exact(self, n: int, eof_ok: bool = False) -> bytes:
        chunks, got = [], 0
        while got < n:
            data = self._read_some(n - got)
            if not data:
                if eof_ok and not got:
                    return b""
                raise ValueError(f"{self._where}: the nested zip archive is truncated")
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def _skip(self, method: int, flags: int, csize: int, zip64: bool) -> None:
        if not flags & 0x8:
            while csize:
                data = self._read_some(min(csize, 1 << 20))
                if not data:
                    raise ValueError(f"{self._where}: the nested zip archive is truncated")
                csize -= len(data)
            return
        inflate = zlib.decompressobj(-15)  # size unknown: inflate to the end of the stream
        while not inflate.eof:
            data = inflate.unconsumed_tail or self._read_some(1 << 16)
            if not data:
                raise ValueError(f"{self._where}: the nested zip archive is truncated")
            inflate.decompress(data, 1 << 20)
        self._pending = inflate.unused_data + self._pending
        head = self._read_exact(4)  # data descriptor: [signature] crc32 csize usize
        if head == b"PK\x07\x08":
            self._read_exact(4)
        self._read_exact(16 if zip64 else 8)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        if self._inflate is None:
            if not self._left:
                return 0
            data = self._read_some(min(size, self._left))
            if not data:
                raise ValueError(f"{self._where}: the nested zip archive is truncated")
            self._left -= len(data)
            buffer[:len(data)] = data
            return len(data)
        while not len(self._out):
            if self._inflate.eof:
                return 0
            data = self._inflate.unconsumed_tail or self._read_some(1 << 16)
            if not data:
                raise ValueError(f"{self._where}: the nested zip archive is truncated")
            self._out = memoryview(self._inflate.decompress(data, max(size, 1 << 16)))
        n = min(size, len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


@contextmanager
def _aliexpress_csv(path: Path, country: str, kind: str, part: str) -> Iterator[IO[bytes]]:
    """The raw ``{cc}_{kind}_{part}.csv`` inside ``{cc}_{kind}_{part}.zip`` inside ``path``."""
    stem = f"{country.lower()}_{kind}_{part}"
    try:
        with zipfile.ZipFile(path) as outer:
            names = outer.namelist()
            match = [n for n in names if n.rsplit("/", 1)[-1].lower() == stem + ".zip"]
            if not match:
                raise ValueError(f"{path.name} has no member {stem}.zip; its members are "
                                 f"{names[:10]}")
            with outer.open(match[0]) as inner:
                member = _ZipMemberStream(inner, stem + ".csv", f"{path.name}/{match[0]}")
                with io.BufferedReader(member, buffer_size=1 << 20) as stream:
                    yield stream
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise ValueError(f"{path} is not a readable zip archive: {err}") from err


def _csv_chunks(stream: IO[bytes], n_columns: int, where: str) -> Iterator[pd.DataFrame]:
    try:
        with pd.read_csv(stream, header=None, dtype={0: str}, chunksize=_BLOCK,
                         skip_blank_lines=True) as reader:
            for chunk in reader:
                if chunk.shape[1] != n_columns:
                    raise ValueError(f"{where}: expected {n_columns} columns without header, "
                                     f"got {chunk.shape[1]}")
                yield chunk
    except pd.errors.EmptyDataError:
        return
    except pd.errors.ParserError as err:
        raise ValueError(f"{where}: not the published comma-separated layout: {err}") from err


def _numbers(chunk: pd.DataFrame, columns: Sequence[int], dtype: Any, where: str) -> np.ndarray:
    try:
        return chunk[[c - 1 for c in columns]].to_numpy(dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: non-numeric values in columns {list(columns)}: "
                         f"{err}") from err


def _keys(chunk: pd.DataFrame, where: str) -> np.ndarray:
    ids = chunk[0]
    if ids.isna().any():
        raise ValueError(f"{where}: empty search page id")
    return pd.util.hash_array(ids.to_numpy(dtype=object))


def _read_aliexpress_part(path: Path, country: str, part: str, max_rows: int | None,
                          sampler: _RowSampler) -> dict[str, Any]:
    where = f"{path.name}/{country.lower()}_item_{part}.csv"
    keys, cats, nums, labels = [], [], [], []
    kept = 0
    with (_aliexpress_csv(path, country, "item", part) as stream,
          closing(_csv_chunks(stream, _ITEM_COLUMNS, where)) as chunks):
        for chunk in chunks:
            chunk = chunk[sampler.mask(len(chunk))]
            if max_rows is not None:
                chunk = chunk.iloc[:max_rows - kept]
            label = _numbers(chunk, (_ITEM_COLUMNS,), np.float64, where)[:, 0]
            bad = ~np.isin(label, (0.0, 1.0, 2.0))
            if bad.any():
                raise ValueError(f"{where}: the label (column 49) must be 0 (impression), 1 "
                                 f"(click) or 2 (purchase); found {label[bad][:5].tolist()}")
            keys.append(_keys(chunk, where))
            cats.append(_numbers(chunk, _ITEM_CAT, np.float64, where))
            nums.append(_numbers(chunk, _ITEM_NUM, np.float32, where))
            labels.append(label.astype(np.int8))
            kept += len(chunk)
            if max_rows is not None and kept >= max_rows:
                break
    item_keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    needed = np.unique(item_keys)
    found = np.zeros(len(needed), dtype=bool)
    u_keys, u_cats, u_nums = [], [], []
    where = f"{path.name}/{country.lower()}_user_{part}.csv"
    if len(needed):
        with (_aliexpress_csv(path, country, "user", part) as stream,
              closing(_csv_chunks(stream, _USER_COLUMNS, where)) as chunks):
            for chunk in chunks:
                k = _keys(chunk, where)
                sel = np.isin(k, needed)
                if not sel.any():
                    continue
                chunk = chunk[sel]
                u_keys.append(k[sel])
                u_cats.append(_numbers(chunk, _USER_CAT, np.float64, where))
                u_nums.append(_numbers(chunk, _USER_NUM, np.float32, where))
                found[np.searchsorted(needed, k[sel])] = True
                if found.all():
                    break
    if u_keys:
        all_keys = np.concatenate(u_keys)
        page_keys, first = np.unique(all_keys, return_index=True)  # first row of each page
        page_cats, page_nums = np.concatenate(u_cats)[first], np.concatenate(u_nums)[first]
    else:
        page_keys = np.zeros(0, np.uint64)
        page_cats = np.zeros((0, len(_USER_CAT)))
        page_nums = np.zeros((0, len(_USER_NUM)), np.float32)
    pos, has_user = _lookup(page_keys, item_keys)
    pos = pos[has_user]
    return {
        "keys": item_keys[has_user],
        "cats": np.concatenate([page_cats[pos], np.concatenate(cats)[has_user]], axis=1)
        if cats else np.zeros((0, len(_USER_CAT) + len(_ITEM_CAT))),
        "nums": np.concatenate([page_nums[pos], np.concatenate(nums)[has_user]], axis=1)
        if nums else np.zeros((0, len(_USER_NUM) + len(_ITEM_NUM)), np.float32),
        "label": np.concatenate(labels)[has_user] if labels else np.zeros(0, np.int8),
        "n_without_user_row": int((~has_user).sum()),
    }


def load_aliexpress(paths: Mapping[str, Path], *, country: str = "NL", part: str = "train",
                    max_rows: int | None = None, sample_rate: float = 1.0, seed: int = 0,
                    hash_buckets: int | Mapping[str, int] | None = None,
                    vocabulary: Mapping[str, Any] | None = None,
                    min_count: int = 1) -> MultiTaskData:
    """Build click/purchase impressions of one AliExpress country, as MTReclib does.

    The published ``aliexpress_{CC}_datasets.zip`` holds four zip archives
    ``{cc}_user_{train,test}.zip`` and ``{cc}_item_{train,test}.zip``, each with one
    comma-separated file of the same name without header. A user row is one search result
    page: its id, then 32 user and query features. An item row is one shown product: the id
    of its page, 47 item features and the label (0 impression, 1 click, 2 purchase).

    Construction (MTReclib's ``preprocess.py``): each item row is joined with its page's
    user row (item rows whose page has no user row are dropped, as by MTReclib's inner
    join; their number is in ``meta``). Features: 16 categorical columns (user columns 2-8,
    32, 33 and item columns 19, 34, 35, 36, 40, 41, 42) and 63 numerical ones (user columns
    9-31, item columns 2-48 except the categorical ones), named ``categorical_1..16`` and
    ``numerical_1..63`` as in MTReclib (``meta["raw_columns"]`` maps them to the raw
    columns). The numerical values are used as published (missing ones become 0 and are
    counted in ``meta``). Tasks: ``click`` (label >= 1) and ``purchase`` (label 2), both on
    every impression. ``groups`` are the search pages. The page id and the label are never
    features.

    Reading: the item file is streamed first (up to ``max_rows`` kept rows), then the user
    file, keeping only the pages met, so memory grows with the rows kept. Rows keep the order
    of the item file.

    Args:
        paths: file name -> path, as :func:`mtlbook.datasets.fetch` returns.
        country: ``"NL"``, ``"ES"``, ``"FR"`` or ``"US"``.
        part: ``"train"``, ``"test"`` or ``"all"`` (both, train first).
        max_rows: keep at most this many item rows per part, the first ones kept in file
            order (``None``: all).
        sample_rate: keep each item row with this probability (seeded; before ``max_rows``).
        seed: seed of the row sampler.
        hash_buckets: hash every categorical column (an int) or the named ones (a mapping)
            instead of building a vocabulary.
        vocabulary: fixed vocabularies, column -> raw values (``meta["vocabulary"]`` of an
            earlier load); unseen values become ``unknown`` (code 0).
        min_count: in vocabularies built from the rows read, values seen fewer times become
            ``unknown``.

    Example:
        >>> from mtlbook import datasets
        >>> data = datasets.load("aliexpress", country="ES", max_rows=200_000)  # doctest: +SKIP
        >>> data.task_names                                                     # doctest: +SKIP
        ('click', 'purchase')
    """
    code = _check_country(country)
    parts = _check_part(part)
    _check_common(max_rows, sample_rate, seed, min_count)
    fname = ALIEXPRESS_FILE.format(country=code)
    if fname not in paths:
        raise ValueError(f"aliexpress country {code!r} needs the file {fname!r}, which was "
                         f"not given; given: {sorted(paths)}")
    cat_names = [n for n in ALIEXPRESS_COLUMNS if n.startswith("categorical_")]
    num_names = [n for n in ALIEXPRESS_COLUMNS if n.startswith("numerical_")]
    check_no_leak(cat_names + num_names, ALIEXPRESS_FORBIDDEN, "aliexpress")
    reads = [_read_aliexpress_part(Path(paths[fname]), code, p, max_rows,
                                   _RowSampler(float(sample_rate), (int(seed), k)))
             for k, p in enumerate(parts)]
    n = sum(len(r["label"]) for r in reads)
    if not n:
        raise ValueError(f"aliexpress: no impression was kept (country={code!r}, "
                         f"part={part!r}, sample_rate={sample_rate!r})")
    cats = np.concatenate([r["cats"] for r in reads])
    whole = np.isnan(cats) | (np.floor(cats) == cats)
    if not whole.all():
        j = int(np.flatnonzero(~whole.all(axis=0))[0])
        raise ValueError(f"aliexpress: categorical column {cat_names[j]} "
                         f"({ALIEXPRESS_COLUMNS[cat_names[j]]}) has non-integer values")
    raw = np.where(np.isnan(cats), MISSING, np.nan_to_num(cats).astype(np.int64))
    codes, cards, enc = _encode_categoricals(cat_names, raw, hash_buckets, vocabulary,
                                             int(min_count))
    dense = np.concatenate([r["nums"] for r in reads])
    missing = ~np.isfinite(dense)
    dense[missing] = 0.0
    label = np.concatenate([r["label"] for r in reads])
    groups, n_groups = [], 0
    for r in reads:  # search pages, numbered in order of appearance, never shared by parts
        ids = pd.factorize(r["keys"])[0].astype(np.int64)
        groups.append(ids + n_groups)
        n_groups += int(ids.max()) + 1 if len(ids) else 0
    part_of = np.repeat(parts, [len(r["label"]) for r in reads])
    return MultiTaskData(
        dense=dense,
        categorical=codes,
        labels={"click": (label >= 1).astype(np.float64),
                "purchase": (label == 2).astype(np.float64)},
        tasks=[TaskSpec("click", "binary"), TaskSpec("purchase", "binary")],
        dense_names=num_names,
        categorical_names=cat_names,
        cardinalities=cards,
        groups=np.concatenate(groups),
        truth=pd.DataFrame({"part": part_of}),
        meta={"dataset": "aliexpress", "country": code, "part": part,
              "raw_columns": dict(ALIEXPRESS_COLUMNS), **enc, "min_count": int(min_count),
              "max_rows": max_rows, "sample_rate": float(sample_rate), "seed": int(seed),
              "n_without_user_row": sum(r["n_without_user_row"] for r in reads),
              "n_missing_numerical": int(missing.sum())},
    )
