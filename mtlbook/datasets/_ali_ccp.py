"""Loader of Ali-CCP, Alibaba's click-and-conversion data set (the data of the ESMM paper).

It is published on Alibaba's Tianchi platform behind a login, so the registry lists it with
``manual`` sources: the reader downloads the archives as published and places them in the
cache. The loader reads inside those archives by streaming (``tarfile``), never extracts
anything and never holds a whole raw file in memory.

It builds the package's funnel layout, the one of :func:`~mtlbook.data.simulate_funnel`: a
``click`` task and a ``purchase`` task (clicked *and* bought), both binary and defined on every
impression, so that ESMM, AITM, MMoE and PLE run on it unchanged. A conversion is only observed
after a click; the purchase label is never a feature. Categorical columns are encoded as
described in :mod:`mtlbook.datasets._tianchi` (a vocabulary or hashing, never a label).
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Mapping, Sequence
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
    _RowSampler,
)

__all__ = [
    "ALICCP_DEFAULT_FIELDS",
    "ALICCP_FIELDS",
    "ALICCP_FILES",
    "ALICCP_FORBIDDEN",
    "ali_ccp_files",
    "load_ali_ccp",
]

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
ALICCP_DEFAULT_FIELDS = (
    "101",
    "121",
    "122",
    "124",
    "125",
    "126",
    "127",
    "128",
    "129",
    "205",
    "206",
    "207",
    "216",
    "508",
    "509",
    "702",
    "853",
    "301",
)
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
        raise ValueError(
            f"fields must be a sequence of Ali-CCP field ids such as ['101', '205'], got {fields!r}"
        )
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


def _fill_first_ids(
    blob: bytes, needles: Sequence[tuple[bytes, int]], row: list[int], where: str
) -> None:
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
            entry = text[at + 1 : at + 41]
            raise ValueError(
                f"{where}: malformed feature entry {entry!r} (expected field\\x02id\\x03value)"
            ) from err


def _read_skeleton(
    stream: IO[bytes],
    name: str,
    needles: Sequence[tuple[bytes, int]],
    max_rows: int | None,
    sampler: _RowSampler,
    drop_unclicked: bool,
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
            raise ValueError(
                f"{name} line {lineno}: expected 6 comma-separated columns "
                "(sample id, click, conversion, common feature index, feature "
                f"count, feature list), got {len(parts)}"
            )
        c, v = parts[1], parts[2]
        if c not in (b"0", b"1") or v not in (b"0", b"1"):
            raise ValueError(
                f"{name} line {lineno}: click and conversion must be 0/1, got {c!r}, {v!r}"
            )
        if drop_unclicked and c == b"0" and v == b"1":
            n_dropped += 1
            continue
        row = [MISSING] * n_fields
        _fill_first_ids(parts[5], needles, row, f"{name} line {lineno}")
        rows.append(row)
        try:
            sample_id.append(int(parts[0]))
        except ValueError as err:
            raise ValueError(
                f"{name} line {lineno}: sample id {parts[0]!r} is not an integer"
            ) from err
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
    return {
        "raw": np.concatenate(blocks),
        "sample_id": np.array(sample_id, dtype=np.int64),
        "click": np.array(click, dtype=bool),
        "conversion": np.array(conv, dtype=bool),
        "md5_of": np.array(md5_of, dtype=np.int64),
        "md5_index": md5_index,
        "n_dropped": n_dropped,
    }


def _read_common(
    stream: IO[bytes],
    name: str,
    md5_index: Mapping[bytes, int],
    needles: Sequence[tuple[bytes, int]],
) -> tuple[np.ndarray, np.ndarray]:
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
            raise ValueError(
                f"{name} line {lineno}: expected 3 comma-separated columns "
                "(common feature index, feature count, feature list), got "
                f"{len(parts)}"
            )
        row = [MISSING] * len(needles)
        _fill_first_ids(parts[2], needles, row, f"{name} line {lineno}")
        table[k] = row
        found[k] = True
        left -= 1
    return table, found


def _member_base(member: tarfile.TarInfo) -> str:
    return member.name.rsplit("/", 1)[-1]


def _read_aliccp_part(
    path: Path,
    part: str,
    needles: Sequence[tuple[bytes, int]],
    max_rows: int | None,
    sampler: _RowSampler,
    drop_unclicked: bool,
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
                    stream = tf.extractfile(member)
                    assert stream is not None  # a regular file (checked above)
                    sk = _read_skeleton(
                        stream, skeleton_name, needles, max_rows, sampler, drop_unclicked
                    )
                elif base == common_name and sk is not None:
                    stream = tf.extractfile(member)
                    assert stream is not None  # a regular file (checked above)
                    common = _read_common(stream, common_name, sk["md5_index"], needles)
                    break
        if sk is None:
            raise ValueError(
                f"{path.name} has no member {skeleton_name}; its members are {seen[:10]}"
            )
        if common is None:
            with tarfile.open(path, mode="r|*") as tf:
                for member in tf:
                    if member.isfile() and _member_base(member) == common_name:
                        stream = tf.extractfile(member)
                        assert stream is not None  # a regular file
                        common = _read_common(stream, common_name, sk["md5_index"], needles)
                        break
        if common is None:
            raise ValueError(
                f"{path.name} has no member {common_name}; its members are {seen[:10]}"
            )
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path} is not a readable tar archive: {err}") from err
    table, found = common
    user_raw = table[sk["md5_of"]]
    raw = np.where(sk["raw"] != MISSING, sk["raw"], user_raw)
    sk.update(raw=raw, n_missing_common=int((~found).sum()))
    return sk


def load_ali_ccp(
    paths: Mapping[str, Path],
    *,
    part: str = "train",
    max_rows: int | None = None,
    sample_rate: float = 1.0,
    seed: int = 0,
    fields: Sequence[str] | None = None,
    hash_buckets: int | Mapping[str, int] | None = None,
    vocabulary: Mapping[str, Any] | None = None,
    min_count: int = 1,
    drop_unclicked_conversions: bool = True,
) -> MultiTaskData:
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
        raise ValueError(
            f"drop_unclicked_conversions must be True or False, got {drop_unclicked_conversions!r}"
        )
    names = [ALICCP_FIELDS[f][0] for f in field_ids]
    check_no_leak(names, ALICCP_FORBIDDEN, "ali-ccp")
    parse_ids = field_ids + ([] if "101" in field_ids else ["101"])
    needles = _needles(parse_ids)
    reads = []
    for k, p in enumerate(parts):
        fname = ALICCP_FILES[p]
        if fname not in paths:
            raise ValueError(
                f"ali-ccp part {p!r} needs the file {fname!r}, which was not "
                f"given; given: {sorted(paths)}"
            )
        reads.append(
            _read_aliccp_part(
                Path(paths[fname]),
                p,
                needles,
                max_rows,
                _RowSampler(float(sample_rate), (int(seed), k)),
                drop_unclicked_conversions,
            )
        )
    raw = np.concatenate([r["raw"] for r in reads])
    if not len(raw):
        raise ValueError(
            f"ali-ccp: no impression was kept (part={part!r}, sample_rate={sample_rate!r})"
        )
    codes, cards, enc = _encode_categoricals(
        names, raw[:, : len(names)], hash_buckets, vocabulary, int(min_count)
    )
    click = np.concatenate([r["click"] for r in reads])
    conversion = np.concatenate([r["conversion"] for r in reads])
    user = raw[:, parse_ids.index("101")]
    return MultiTaskData(
        categorical=codes,
        labels={
            "click": click.astype(np.float64),
            "purchase": (click & conversion).astype(np.float64),
        },
        tasks=[TaskSpec("click", "binary"), TaskSpec("purchase", "binary")],
        categorical_names=names,
        cardinalities=cards,
        groups=np.where(user == MISSING, -1, user),
        truth=pd.DataFrame(
            {
                "part": np.repeat(parts, [len(r["raw"]) for r in reads]),
                "sample_id": np.concatenate([r["sample_id"] for r in reads]),
            }
        ),
        meta={
            "dataset": "ali-ccp",
            "part": part,
            "fields": dict(zip(names, field_ids, strict=True)),
            **enc,
            "min_count": int(min_count),
            "max_rows": max_rows,
            "sample_rate": float(sample_rate),
            "seed": int(seed),
            "drop_unclicked_conversions": drop_unclicked_conversions,
            "n_dropped_unclicked_conversions": sum(r["n_dropped"] for r in reads),
            "n_missing_common": sum(r["n_missing_common"] for r in reads),
        },
    )
