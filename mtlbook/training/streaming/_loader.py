"""Batching: the decoded rows that batches are cut from, the shuffling modes, and
:class:`ParquetLoader`, which iterates over a :class:`ParquetSource` in row order, through a
shuffle buffer or along the permutation of the in-memory loader."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...data import Batch
from ...data._loader import restore_loader_state, shard_bounds

if TYPE_CHECKING:
    from ._source import ParquetSource

__all__ = ["SHUFFLE_MODES", "ParquetLoader"]

#: The shuffling modes of :meth:`ParquetSource.loader`.
SHUFFLE_MODES = ("buffer", "exact")

#: Rows of the shuffle buffer of ``shuffle_mode="buffer"`` when ``buffer_rows`` is not given.
DEFAULT_BUFFER_ROWS = 262_144


# ---------------------------------------------------------------------- decoded rows
@dataclass
class _Block:
    """Decoded rows, laid out as a :class:`Batch` needs them (NumPy arrays)."""

    dense: np.ndarray | None
    categorical: np.ndarray | None
    labels: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]

    def __len__(self) -> int:
        block = self.dense if self.dense is not None else self.categorical
        return 0 if block is None else len(block)

    def take(self, index: np.ndarray | slice) -> _Block:
        return _Block(
            dense=None if self.dense is None else self.dense[index],
            categorical=None if self.categorical is None else self.categorical[index],
            labels={k: v[index] for k, v in self.labels.items()},
            masks={k: v[index] for k, v in self.masks.items()},
        )

    @staticmethod
    def concat(blocks: Sequence[_Block]) -> _Block:
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        return _Block(
            dense=None if first.dense is None else np.concatenate([b.dense for b in blocks]),
            categorical=None
            if first.categorical is None
            else np.concatenate([b.categorical for b in blocks]),
            labels={k: np.concatenate([b.labels[k] for b in blocks]) for k in first.labels},
            masks={k: np.concatenate([b.masks[k] for b in blocks]) for k in first.masks},
        )

    def batch(self) -> Batch:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a))

        return Batch(
            dense=None if self.dense is None else tensor(self.dense),
            categorical=None if self.categorical is None else tensor(self.categorical),
            labels={k: tensor(v) for k, v in self.labels.items()},
            masks={k: tensor(v) for k, v in self.masks.items()},
        )


@dataclass(frozen=True)
class _RowGroup:
    shard: int  # index into ParquetSource.shards
    index: int  # row group within the shard
    start: int  # first row within the shard
    offset: int  # first row within the source
    rows: int


# ---------------------------------------------------------------------- the loader
def _check_mode(shuffle_mode: Any, buffer_rows: Any) -> None:
    if shuffle_mode not in SHUFFLE_MODES:
        raise ValueError(f"shuffle_mode must be one of {SHUFFLE_MODES}, got {shuffle_mode!r}")
    if buffer_rows is not None and (
        isinstance(buffer_rows, bool) or not isinstance(buffer_rows, int) or buffer_rows < 1
    ):
        raise ValueError(f"buffer_rows must be None or a positive integer, got {buffer_rows!r}")


class ParquetLoader:
    """Iterates over a :class:`ParquetSource` in mini-batches of :class:`~mtlbook.data.Batch`.

    Made by :meth:`ParquetSource.loader`. Like :class:`~mtlbook.data.BatchLoader`, it shuffles
    with a private ``torch.Generator`` seeded with ``seed`` and draws a new order in each pass;
    :meth:`state_dict` and :meth:`load_state_dict` save and restore that state between passes
    (what :func:`~mtlbook.fit`'s checkpoints keep). In ``"exact"`` mode the generator is used
    exactly as the in-memory loader uses it, so their states are interchangeable.

    With ``shard=(rank, world_size)`` each yielded batch is process ``rank``'s contiguous part
    of the global batch (rows ``n * rank // world_size`` to ``n * (rank + 1) // world_size``
    of a batch of ``n`` rows): loaders with the same seed on every process draw the same
    global batches and together cover each one exactly once; ``len()`` counts global
    batches. Every process reads every row group (the parts are cut from the decoded global
    batch).
    """

    def __init__(
        self,
        source: ParquetSource,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        shuffle_mode: str = "buffer",
        buffer_rows: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if shard is not None:
            ok = (
                isinstance(shard, tuple | list)
                and len(shard) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
                and shard[1] >= 1
                and 0 <= shard[0] < shard[1]
            )
            if not ok:
                raise ValueError(
                    "shard must be None or (rank, world_size) with "
                    f"0 <= rank < world_size, got {shard!r}"
                )
            shard = (int(shard[0]), int(shard[1]))
        self.shard = shard
        _check_mode(shuffle_mode, buffer_rows)
        if buffer_rows is None:
            buffer_rows = DEFAULT_BUFFER_ROWS if shuffle_mode == "buffer" else max(1, len(source))
        if shuffle and shuffle_mode == "buffer" and buffer_rows < 2 * batch_size:
            raise ValueError(
                f"buffer_rows must be at least 2 × batch_size = {2 * batch_size} "
                f"in shuffle_mode='buffer', got {buffer_rows}"
            )
        self.source = source
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.shuffle_mode = shuffle_mode
        self.buffer_rows = int(buffer_rows)
        self._generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        n = len(self.source)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The shuffling state between two passes (plain tensors and numbers)."""
        return {
            "generator": self._generator.get_state(),
            "n_samples": len(self.source),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "shuffle_mode": self.shuffle_mode,
            "buffer_rows": self.buffer_rows,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a loader with the same settings over a source of
        the same size (in ``"exact"`` mode also one of an in-memory ``BatchLoader``).

        Raises:
            ValueError: when the state is not a loader state or its settings differ.
        """
        mine = {
            "n_samples": len(self.source),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            # An in-memory loader's state is one of the exact mode.
            "shuffle_mode": self.shuffle_mode,
        }
        if not self.shuffle:
            mine.pop("shuffle_mode")
        elif self.shuffle_mode == "buffer":  # the buffer's size shapes the order too
            mine["buffer_rows"] = self.buffer_rows
        restore_loader_state(
            self._generator,
            state,
            mine,
            "a loader's state_dict()",
            defaults={"shuffle_mode": "exact", "buffer_rows": None},
        )

    def __iter__(self) -> Iterator[Batch]:
        if not self.shuffle:
            return self._sequential()
        if self.shuffle_mode == "exact":
            return self._exact()
        return self._buffered()

    # ------------------------------------------------------------------ modes
    def _batch(self, block: _Block, rows: np.ndarray | slice) -> Batch:
        """The batch of ``block``'s ``rows`` (this process's part of it when sharded)."""
        if self.shard is not None:
            if isinstance(rows, slice):
                lo, hi = shard_bounds(rows.stop - rows.start, *self.shard)
                rows = slice(rows.start + lo, rows.start + hi)
            else:
                lo, hi = shard_bounds(len(rows), *self.shard)
                rows = rows[lo:hi]
        return block.take(rows).batch()

    def _emit(self, block: _Block, final: bool) -> Iterator[Batch]:
        """Batches of ``block`` in order; the incomplete tail is kept unless ``final``."""
        bs = self.batch_size
        full = len(block) // bs * bs
        for lo in range(0, full, bs):
            yield self._batch(block, slice(lo, lo + bs))
        if final and full < len(block) and not self.drop_last:
            yield self._batch(block, slice(full, len(block)))

    def _sequential(self) -> Iterator[Batch]:
        tail: list[_Block] = []
        bs = self.batch_size
        for _, block, _ in self.source._read(self.source._row_groups):
            tail.append(block)
            if sum(len(b) for b in tail) >= bs:
                merged = _Block.concat(tail)
                yield from self._emit(merged, final=False)
                rest = len(merged) // bs * bs
                tail = [merged.take(slice(rest, len(merged)))] if rest < len(merged) else []
        if tail:
            yield from self._emit(_Block.concat(tail), final=True)

    def _exact(self) -> Iterator[Batch]:
        n, bs = len(self.source), self.batch_size
        order = torch.randperm(n, generator=self._generator).numpy()
        stop = n // bs * bs if self.drop_last else n
        chunk = max(bs, self.buffer_rows // bs * bs)
        groups = self.source._row_groups
        starts = np.array([rg.offset for rg in groups] + [n], dtype=np.int64)
        for lo in range(0, stop, chunk):
            wanted = order[lo : min(stop, lo + chunk)]
            # The wanted rows in file order, and where each one lands in that order.
            sorter = np.argsort(wanted)
            rows = wanted[sorter]
            position = np.empty_like(sorter)
            position[sorter] = np.arange(len(sorter))
            # The row groups holding some of the wanted rows, in file order.
            cuts = np.searchsorted(rows, starts)
            needed = [g for g in range(len(groups)) if cuts[g + 1] > cuts[g]]
            parts = []
            for rg, block, _ in self.source._read([groups[g] for g in needed]):
                g_rows = rows[
                    np.searchsorted(rows, rg.offset) : np.searchsorted(rows, rg.offset + rg.rows)
                ]
                parts.append(block if len(g_rows) == rg.rows else block.take(g_rows - rg.offset))
            held = _Block.concat(parts)
            for b in range(0, len(wanted), bs):
                yield self._batch(held, position[b : b + bs])

    def _buffered(self) -> Iterator[Batch]:
        source, bs, capacity = self.source, self.batch_size, self.buffer_rows
        by_shard: dict[int, list[_RowGroup]] = {}
        for rg in source._row_groups:
            by_shard.setdefault(rg.shard, []).append(rg)
        shards = sorted(by_shard)
        visit = []
        for s in torch.randperm(len(shards), generator=self._generator).tolist():
            groups = by_shard[shards[s]]
            visit += [
                groups[i] for i in torch.randperm(len(groups), generator=self._generator).tolist()
            ]
        pending: list[_Block] = []
        held = 0
        for _, block, _ in source._read(visit):
            pending.append(block)
            held += len(block)
            if held < capacity:
                continue
            merged = _Block.concat(pending)
            perm = torch.randperm(len(merged), generator=self._generator).numpy()
            out = (len(merged) - capacity // 2) // bs * bs
            for lo in range(0, out, bs):
                yield self._batch(merged, perm[lo : lo + bs])
            pending = [merged.take(perm[out:])]
            held = len(merged) - out
        if held:
            merged = _Block.concat(pending)
            perm = torch.randperm(len(merged), generator=self._generator).numpy()
            yield from self._emit(merged.take(perm), final=True)
