"""What the reader and the writer of the shards share: the lazy import of ``pyarrow`` and the
key and version of the metadata that :func:`write_parquet_shards` stores in each shard."""

from __future__ import annotations

from typing import Any

__all__ = ["METADATA_KEY"]

#: Key of the schema metadata that :func:`write_parquet_shards` stores in each shard.
METADATA_KEY = b"mtlbook"
_FORMAT = 1


def _arrow() -> tuple[Any, Any, Any]:
    """``(pyarrow, pyarrow.compute, pyarrow.parquet)``, with a clear error when missing."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mtlbook.training.streaming needs pyarrow: pip install 'mtlbook[stream]' "
            "(or pip install pyarrow)"
        ) from err
    return pa, pc, pq
