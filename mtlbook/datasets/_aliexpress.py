"""Loader of AliExpress, Alibaba's search-page impressions of four countries (as in MTReclib).

It is published on Alibaba's Tianchi platform behind a login, so the registry lists it with
``manual`` sources: the reader downloads the archives as published and places them in the
cache. The loader reads inside those archives by streaming (``zipfile`` plus a forward-only
reader for the zip archives nested in the published zip), never extracts anything and never
holds a whole raw file in memory.

It builds the package's funnel layout, the one of :func:`~mtlbook.data.simulate_funnel`: a
``click`` task and a ``purchase`` task (clicked *and* bought), both binary and defined on every
impression, so that ESMM, AITM, MMoE and PLE run on it unchanged. A conversion is only observed
after a click; the purchase label is never a feature. Categorical columns are encoded as
described in :mod:`mtlbook.datasets._tianchi` (a vocabulary or hashing, never a label).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from ..data import MultiTaskData, TaskSpec
from ._loaders import check_no_leak
from ._tianchi import (
    _BLOCK,
    MISSING,
    _check_common,
    _check_part,
    _encode_categoricals,
    _lookup,
    _RowSampler,
)

__all__ = [
    "ALIEXPRESS_COLUMNS",
    "ALIEXPRESS_COUNTRIES",
    "ALIEXPRESS_FILE",
    "ALIEXPRESS_FORBIDDEN",
    "aliexpress_files",
    "load_aliexpress",
]

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
        raise ValueError(f"country must be one of {list(ALIEXPRESS_COUNTRIES)}, got {country!r}")
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
                "<HHHHHIIIHH", self._read_exact(26)
            )
            name = self._read_exact(nlen).decode("utf-8" if flags & 0x800 else "cp437")
            extra = self._read_exact(elen)
            zip64, csize = self._zip64(extra, csize)
            if flags & 0x1:
                raise ValueError(f"{where}: member {name!r} is encrypted")
            if method not in (0, 8):
                raise ValueError(
                    f"{where}: member {name!r} uses compression method "
                    f"{method}; only stored (0) and deflated (8) are supported"
                )
            if method == 0 and flags & 0x8:
                raise ValueError(
                    f"{where}: stored member {name!r} has no size in its header "
                    "and cannot be read as a stream"
                )
            if name.rsplit("/", 1)[-1].lower() == wanted.lower():
                self._method, self._left = method, csize
                self._inflate = zlib.decompressobj(-15) if method == 8 else None
                return
            self._skip(method, flags, csize, zip64)

    @staticmethod
    def _zip64(extra: bytes, csize: int) -> tuple[bool, int]:
        pos = 0
        while pos + 4 <= len(extra):
            tag, size = struct.unpack("<HH", extra[pos : pos + 4])
            if tag == 0x0001:
                values = extra[pos + 4 : pos + 4 + size]
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
            buffer[: len(data)] = data
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
                raise ValueError(
                    f"{path.name} has no member {stem}.zip; its members are {names[:10]}"
                )
            with outer.open(match[0]) as inner:
                member = _ZipMemberStream(inner, stem + ".csv", f"{path.name}/{match[0]}")
                with io.BufferedReader(member, buffer_size=1 << 20) as stream:
                    yield stream
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise ValueError(f"{path} is not a readable zip archive: {err}") from err


def _csv_chunks(
    stream: IO[bytes], n_columns: int, where: str
) -> Generator[pd.DataFrame, None, None]:
    try:
        with pd.read_csv(
            stream, header=None, dtype={0: str}, chunksize=_BLOCK, skip_blank_lines=True
        ) as reader:
            for chunk in reader:
                if chunk.shape[1] != n_columns:
                    raise ValueError(
                        f"{where}: expected {n_columns} columns without header, "
                        f"got {chunk.shape[1]}"
                    )
                yield chunk
    except pd.errors.EmptyDataError:
        return
    except pd.errors.ParserError as err:
        raise ValueError(f"{where}: not the published comma-separated layout: {err}") from err


def _numbers(chunk: pd.DataFrame, columns: Sequence[int], dtype: Any, where: str) -> np.ndarray:
    try:
        return chunk[[c - 1 for c in columns]].to_numpy(dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: non-numeric values in columns {list(columns)}: {err}") from err


def _keys(chunk: pd.DataFrame, where: str) -> np.ndarray:
    ids = chunk[0]
    if ids.isna().any():
        raise ValueError(f"{where}: empty search page id")
    return pd.util.hash_array(ids.to_numpy(dtype=object))


def _read_aliexpress_part(
    path: Path, country: str, part: str, max_rows: int | None, sampler: _RowSampler
) -> dict[str, Any]:
    where = f"{path.name}/{country.lower()}_item_{part}.csv"
    keys, cats, nums, labels = [], [], [], []
    kept = 0
    with (
        _aliexpress_csv(path, country, "item", part) as stream,
        closing(_csv_chunks(stream, _ITEM_COLUMNS, where)) as chunks,
    ):
        for chunk in chunks:
            chunk = chunk[sampler.mask(len(chunk))]
            if max_rows is not None:
                chunk = chunk.iloc[: max_rows - kept]
            label = _numbers(chunk, (_ITEM_COLUMNS,), np.float64, where)[:, 0]
            bad = ~np.isin(label, (0.0, 1.0, 2.0))
            if bad.any():
                raise ValueError(
                    f"{where}: the label (column 49) must be 0 (impression), 1 "
                    f"(click) or 2 (purchase); found {label[bad][:5].tolist()}"
                )
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
        with (
            _aliexpress_csv(path, country, "user", part) as stream,
            closing(_csv_chunks(stream, _USER_COLUMNS, where)) as chunks,
        ):
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
        if cats
        else np.zeros((0, len(_USER_CAT) + len(_ITEM_CAT))),
        "nums": np.concatenate([page_nums[pos], np.concatenate(nums)[has_user]], axis=1)
        if nums
        else np.zeros((0, len(_USER_NUM) + len(_ITEM_NUM)), np.float32),
        "label": np.concatenate(labels)[has_user] if labels else np.zeros(0, np.int8),
        "n_without_user_row": int((~has_user).sum()),
    }


def load_aliexpress(
    paths: Mapping[str, Path],
    *,
    country: str = "NL",
    part: str = "train",
    max_rows: int | None = None,
    sample_rate: float = 1.0,
    seed: int = 0,
    hash_buckets: int | Mapping[str, int] | None = None,
    vocabulary: Mapping[str, Any] | None = None,
    min_count: int = 1,
) -> MultiTaskData:
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
        raise ValueError(
            f"aliexpress country {code!r} needs the file {fname!r}, which was "
            f"not given; given: {sorted(paths)}"
        )
    cat_names = [n for n in ALIEXPRESS_COLUMNS if n.startswith("categorical_")]
    num_names = [n for n in ALIEXPRESS_COLUMNS if n.startswith("numerical_")]
    check_no_leak(cat_names + num_names, ALIEXPRESS_FORBIDDEN, "aliexpress")
    reads = [
        _read_aliexpress_part(
            Path(paths[fname]), code, p, max_rows, _RowSampler(float(sample_rate), (int(seed), k))
        )
        for k, p in enumerate(parts)
    ]
    n = sum(len(r["label"]) for r in reads)
    if not n:
        raise ValueError(
            f"aliexpress: no impression was kept (country={code!r}, "
            f"part={part!r}, sample_rate={sample_rate!r})"
        )
    cats = np.concatenate([r["cats"] for r in reads])
    whole = np.isnan(cats) | (np.floor(cats) == cats)
    if not whole.all():
        j = int(np.flatnonzero(~whole.all(axis=0))[0])
        raise ValueError(
            f"aliexpress: categorical column {cat_names[j]} "
            f"({ALIEXPRESS_COLUMNS[cat_names[j]]}) has non-integer values"
        )
    raw = np.where(np.isnan(cats), MISSING, np.nan_to_num(cats).astype(np.int64))
    codes, cards, enc = _encode_categoricals(
        cat_names, raw, hash_buckets, vocabulary, int(min_count)
    )
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
        labels={
            "click": (label >= 1).astype(np.float64),
            "purchase": (label == 2).astype(np.float64),
        },
        tasks=[TaskSpec("click", "binary"), TaskSpec("purchase", "binary")],
        dense_names=num_names,
        categorical_names=cat_names,
        cardinalities=cards,
        groups=np.concatenate(groups),
        truth=pd.DataFrame({"part": part_of}),
        meta={
            "dataset": "aliexpress",
            "country": code,
            "part": part,
            "raw_columns": dict(ALIEXPRESS_COLUMNS),
            **enc,
            "min_count": int(min_count),
            "max_rows": max_rows,
            "sample_rate": float(sample_rate),
            "seed": int(seed),
            "n_without_user_row": sum(r["n_without_user_row"] for r in reads),
            "n_missing_numerical": int(missing.sum()),
        },
    )
