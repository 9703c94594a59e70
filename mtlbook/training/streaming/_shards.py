"""The shards of a Parquet source before any row is read: their paths (a file, a folder, a glob
pattern or a list), their footers and stored specification, and the index of their row groups."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._common import _FORMAT, METADATA_KEY, _arrow
from ._loader import _RowGroup


# ---------------------------------------------------------------------- paths
def _resolve_paths(paths: Any) -> tuple[Path, ...]:
    if isinstance(paths, str | os.PathLike):
        items = [paths]
    elif isinstance(paths, Sequence) and not isinstance(paths, bytes):
        items = list(paths)
    else:
        raise TypeError(
            "paths must be a file, a folder, a glob pattern or a list of files, "
            f"got {type(paths).__name__}"
        )
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


# ---------------------------------------------------------------------- footers
def _read_footers(
    shards: Sequence[Path],
) -> tuple[list[Any], list[list[int]], list[bytes | None]]:
    """Each shard's Arrow schema, the row counts of its row groups, and the mtlbook metadata
    it stores (``None`` when it has none), reading the footers only."""
    pa, _, pq = _arrow()
    schemas, sizes, stored = [], [], []
    for path in shards:
        try:
            with pq.ParquetFile(path) as footer:
                schemas.append(footer.schema_arrow)
                sizes.append(
                    [
                        footer.metadata.row_group(g).num_rows
                        for g in range(footer.metadata.num_row_groups)
                    ]
                )
        except (OSError, pa.ArrowInvalid) as err:
            raise ValueError(f"{str(path)!r} is not a readable Parquet file: {err}") from err
        stored.append((schemas[-1].metadata or {}).get(METADATA_KEY))
    return schemas, sizes, stored


def _stored_spec(stored: Sequence[bytes | None]) -> dict[str, Any] | None:
    """The column spec stored in the shards' metadata, or ``None``; a stored spec of another
    format is an error."""
    # The stored spec counts only when every shard carries the same one.
    spec = None
    if stored[0] is not None and all(s == stored[0] for s in stored):
        spec = json.loads(stored[0])
        if spec.get("format") != _FORMAT:
            raise ValueError(
                f"the shards' mtlbook metadata has format "
                f"{spec.get('format')!r}; this version reads format {_FORMAT}"
            )
    return spec


def _spec_from_metadata(
    spec: Mapping[str, Any] | None,
    stored: Sequence[bytes | None],
    *,
    dense: Sequence[str] | None,
    categorical: Sequence[str] | None,
    group: str | None,
) -> tuple[list[str], list[str], dict[str, Any], str | None]:
    """``(dense, categorical, tasks, group)`` from the stored spec, when ``tasks`` is not
    given; giving the other column arguments without it is an error."""
    given = {"dense": dense, "categorical": categorical, "group": group}
    extra = [k for k, v in given.items() if v is not None]
    if extra:
        raise ValueError(
            f"{extra} given without tasks; give tasks too, or leave the "
            "column spec out to read it from the shards' metadata"
        )
    if spec is None:
        why = "no shard carries" if all(s is None for s in stored) else "the shards carry different"
        raise ValueError(
            f"tasks is None but {why} mtlbook metadata (written by "
            "write_parquet_shards); give dense, categorical and tasks"
        )
    tasks = {
        t["name"]: ({"kind": t["kind"], "mask": t["mask"]} if t["mask"] else t["kind"])
        for t in spec["tasks"]
    }
    return spec["dense"], spec["categorical"], tasks, spec["group"]


def _index_row_groups(sizes: Sequence[Sequence[int]]) -> tuple[list[_RowGroup], int]:
    """The non-empty row groups of the shards, in order, with where each starts in its shard
    and in the source; and the number of rows."""
    row_groups: list[_RowGroup] = []
    offset = 0
    for s, rows_of_groups in enumerate(sizes):
        start = 0
        for g, rows in enumerate(rows_of_groups):
            if rows:
                row_groups.append(_RowGroup(s, g, start, offset, rows))
            start += rows
            offset += rows
    return row_groups, offset
