"""Data larger than memory: :class:`ParquetSource` streams mini-batches from Parquet shards.

A :class:`ParquetSource` reads a list of Parquet files (*shards*) with the column spec of
:meth:`MultiTaskData.from_frame <mtlbook.data.MultiTaskData.from_frame>` (dense, categorical,
tasks with masks, group) and yields the same :class:`~mtlbook.data.Batch` objects as
:meth:`MultiTaskData.loader <mtlbook.data.MultiTaskData.loader>`, holding only a bounded number
of rows in memory. The rows of the source are the rows of its shards, shard after shard in the
order given (sorted by name for a folder or a glob), each shard in its own row order: the
source over the shards of a DataFrame ``df`` describes the same data as
``MultiTaskData.from_frame(df, ...)`` with its default encoding (no ``min_count``,
``hash_buckets`` or ``standardize``, which a source does not apply), with the same
:class:`~mtlbook.data.Schema`.

**Categorical vocabularies** are fixed before any batch is produced, so that a value has the
same code in every shard and every pass. They come, per column, from (in this order) the
``categories`` argument (codes are positions in the given sequence), the metadata of shards
written by :func:`write_parquet_shards` (which stores the in-memory vocabulary, unobserved
values included), or one streaming pass over that column of every shard (codes are positions
among the sorted distinct values, missing values left out, as in ``from_frame``). As in
``from_frame``, a vocabulary of ``k`` values has the cardinality ``k + 1``: the last code,
``k``, is *unknown*, and a missing value (null, or NaN in a float column) or a value not in
the vocabulary takes it — the codes ``from_frame(df, like=train)`` gives, so a model trained
in memory reads the stream and the reverse. Shards written from data whose cardinality is
the length of the vocabulary (the built-in data sets), or written as codes (data without a
vocabulary, such as the simulators'), read back with their stored cardinality and no unknown
code: there a missing or unknown value is an error (``ParquetSource.unknown_codes`` says which
columns have one). A categorical column that holds text in a shard where its vocabulary
holds numbers, or the reverse, is an error naming the column (every value would be unknown).

**Validation** happens per row group, with the checks of ``from_frame`` (NaN or inf
features, labels other than 0/1, NaN labels inside a mask, masks that are not boolean,
missing group ids, missing columns, labels listed as features), each message naming the
shard file and the row (0-based, within the shard). By default the constructor reads every
row group once to validate it; every row group is checked again whenever it is read.

**Shuffling** (``shuffle=True``) has two modes, chosen with ``shuffle_mode``:

* ``"buffer"`` (default): each pass visits the shards in a random order and the row groups
  of each shard in a random order, and mixes the rows in a buffer of ``buffer_rows`` rows
  (when the buffer is full it is permuted, the rows for all whole batches beyond half the
  buffer are emitted and the other half stays to be mixed with the next row groups). A batch
  therefore mixes rows of neighbouring row groups only, not of the whole data set: if the
  shards are sorted (by time, by user), write them shuffled or use a large buffer. The order
  is fixed by the seed but differs from the in-memory loader's.
* ``"exact"``: each pass draws the permutation the in-memory loader draws
  (``torch.randperm(n)`` from a generator seeded the same way), so the batches are exactly
  those of ``MultiTaskData.loader`` with the same seed. The permutation is processed in
  chunks of ``buffer_rows`` rows; each chunk reads the shards once and keeps its rows.
  By default the chunk is the whole data set (one read per pass, all rows in memory — for
  data that fit); a smaller ``buffer_rows`` bounds the memory at the cost of
  ``ceil(n / buffer_rows)`` reads per pass. The permutation itself takes 8 bytes per row.

Unshuffled loaders (``shuffle=False``) read the rows in order, one row group at a time, and
give exactly the batches of the in-memory loader.

**Memory.** Besides the permutation of the exact mode, a loader holds at most about twice
``buffer_rows`` plus the rows of the largest row group, decoded to float32/int64 arrays (the
rows held and one copy of them while a buffer is mixed), and the Parquet reader decodes one
row group at a time: write shards with moderate row groups
(:func:`write_parquet_shards` uses 65,536 rows by default).

**Distributed training.** ``loader(..., shard=(rank, world_size))`` gives each process a
contiguous part of every global batch (sizes differing by at most one); every process reads
all the row groups.

Validation and test data, which :func:`~mtlbook.evaluate` scores as a whole, stay in memory:
:meth:`ParquetSource.to_data` reads a (small) source into a :class:`MultiTaskData`.

This package needs ``pyarrow`` (``pip install "mtlbook[stream]"``); it is imported only when
a source is built or shards are written.

The code lives in private modules; import the names above from this package. ``_source``
holds :class:`ParquetSource` (resolving the shards, reading their metadata, building the
vocabularies, decoding and validating row groups), ``_loader`` holds :class:`ParquetLoader`
(the shuffling modes, sharding, the resumable state), ``_write`` holds
:func:`write_parquet_shards`, and ``_common`` the ``pyarrow`` import and the metadata key
that the reader and the writer share.

Example:
    Unshuffled, the stream gives the batches of the in-memory loader:

    >>> import tempfile
    >>> import mtlbook as mb
    >>> from mtlbook.training.streaming import ParquetSource, write_parquet_shards
    >>> data = mb.simulate_funnel(600, seed=0)
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_parquet_shards(data, folder, rows_per_shard=250)
    >>> stream = ParquetSource(folder).loader(128, shuffle=False)
    >>> pairs = list(zip(stream, data.loader(128, shuffle=False), strict=True))
    >>> len(pairs), all(bool((a.dense == b.dense).all()) for a, b in pairs)
    (5, True)
"""

from . import _loader
from ._loader import ParquetLoader
from ._loader import _Block as _Block  # not exported; reachable here for the tests' spies
from ._source import ParquetSource
from ._write import write_parquet_shards

__all__ = ["SHUFFLE_MODES", "ParquetLoader", "ParquetSource", "write_parquet_shards"]

#: The shuffling modes of :meth:`ParquetSource.loader`.
SHUFFLE_MODES = _loader.SHUFFLE_MODES
