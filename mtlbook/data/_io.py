"""Reading a user's table files: :func:`read_table` for CSV, TSV and Parquet.

One reader for every place that takes a file name (a saved run's ``predict`` and ``evaluate``,
the command line): the format comes from the suffix, categorical columns that hold text are
read as text (so that ``"007"`` stays ``"007"`` and a column of numeric-looking ids keeps the
type it had in training), and a missing file or column is an error that names it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["TABLE_SUFFIXES", "read_table", "table_columns"]

#: The file suffixes :func:`read_table` reads, and the format of each.
TABLE_SUFFIXES = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _format(path: Path) -> str:
    """The format of ``path`` from its suffix (``ValueError`` for an unknown one)."""
    name = path.name.lower()
    for suffix in sorted(TABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return TABLE_SUFFIXES[suffix]
    raise ValueError(
        f"cannot read {str(path)!r}: unknown file type; read_table reads files ending in "
        f"{', '.join(TABLE_SUFFIXES)}"
    )


def _existing(path: str | os.PathLike) -> Path:
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; give the path of a table file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    return path


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - pyarrow is installed with the test extra
        raise ImportError(
            "reading Parquet files needs pyarrow: pip install 'mtlbook[stream]' "
            "(or pip install pyarrow)"
        ) from err
    return pq


def table_columns(path: str | os.PathLike) -> list[str]:
    """The column names of a table file, read from its header (CSV, TSV) or schema
    (Parquet) without reading the rows.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: for a file type :func:`read_table` does not read.
    """
    path = _existing(path)
    kind = _format(path)
    if kind == "parquet":
        names = _parquet().read_schema(path).names
        return [n for n in names if not n.startswith("__index_level_")]
    sep = "\t" if kind == "tsv" else ","
    return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]


def read_table(
    path: str | os.PathLike,
    *,
    columns: Sequence[str] | None = None,
    text_columns: Sequence[str] = (),
    max_rows: int | None = None,
) -> pd.DataFrame:
    """Read a table file into a DataFrame: ``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz``,
    ``.parquet`` or ``.pq`` (Parquet needs ``pyarrow``).

    Args:
        path: the file; its suffix says the format.
        columns: read only these columns, in this order (default: all of them).
        text_columns: columns to read as text (``str``, missing values stay missing), such as
            the categorical columns that held text in training: ids like ``"007"`` keep their
            leading zeros, and a column of numeric-looking values is not turned into numbers.
        max_rows: read only the first rows of the file (``None``: all of them); the rest of a
            large file is not read.

    Returns:
        The table, with the index a Parquet file stores (a fresh ``RangeIndex`` for CSV, and
        for Parquet with ``max_rows``).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        IsADirectoryError: when ``path`` is a folder.
        ValueError: for another suffix (the message lists the supported ones), for
            ``columns`` or ``text_columns`` the file does not have (named), or for a
            ``max_rows`` that is not a positive integer.

    Example:
        >>> import tempfile
        >>> import pandas as pd
        >>> from mtlbook.data import read_table
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     pd.DataFrame({"shop": ["007", "12"], "price": [1.5, 2.0]}).to_csv(
        ...         f"{folder}/rows.csv", index=False)
        ...     read_table(f"{folder}/rows.csv", text_columns=["shop"])["shop"].tolist()
        ['007', '12']
    """
    path = _existing(path)
    kind = _format(path)
    if isinstance(columns, str) or isinstance(text_columns, str):
        raise TypeError("columns and text_columns must be lists of column names, not a string")
    present = table_columns(path)
    wanted = list(present) if columns is None else list(columns)
    missing = [c for c in dict.fromkeys([*wanted, *text_columns]) if c not in present]
    if missing:
        shown = present[:20] + (["…"] if len(present) > 20 else [])
        raise ValueError(f"column(s) {missing} not found in {str(path)!r}; it has {shown}")
    if max_rows is not None and (
        isinstance(max_rows, bool) or not isinstance(max_rows, int | np.integer) or max_rows < 1
    ):
        raise ValueError(f"max_rows must be None or an integer >= 1, got {max_rows!r}")
    text = [c for c in text_columns if c in wanted]
    if kind == "parquet":
        frame = _read_parquet(path, wanted, max_rows)
        for col in text:
            frame[col] = _as_text(frame[col])
        return frame
    return pd.read_csv(
        path,
        sep="\t" if kind == "tsv" else ",",
        usecols=wanted,
        dtype=dict.fromkeys(text, str),
        nrows=max_rows,
    )[wanted]


def _read_parquet(path: Path, columns: list[str], max_rows: int | None) -> pd.DataFrame:
    """The ``columns`` of a Parquet file; with ``max_rows``, only its first row groups."""
    pq = _parquet()
    if max_rows is None:
        return pd.read_parquet(path, columns=columns)
    import pyarrow as pa

    parts, n = [], 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=columns):
        parts.append(batch)
        n += batch.num_rows
        if n >= max_rows:
            break
    if not parts:
        return pd.read_parquet(path, columns=columns)
    return pa.Table.from_batches(parts).slice(0, max_rows).to_pandas()[columns]


def _as_text(values: pd.Series) -> pd.Series:
    """``values`` as text (object dtype, ``None`` where missing); whole floats, which a
    Parquet file gives for an integer column with missing values, lose their ``.0``."""
    missing = values.isna().to_numpy()
    present = values[~missing]
    if pd.api.types.is_float_dtype(present.dtype):
        x = present.to_numpy()
        if np.all(np.isfinite(x)) and np.all(x == np.floor(x)) and np.all(np.abs(x) < 2**53):
            present = present.astype(np.int64)
    out = np.full(len(values), None, dtype=object)
    out[~missing] = present.astype(str).to_numpy()
    return pd.Series(out, index=values.index, name=values.name, dtype=object)
