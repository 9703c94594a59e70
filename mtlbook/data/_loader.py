"""Mini-batch iteration: :class:`BatchLoader` and :func:`shard_bounds`.

A :class:`BatchLoader` walks a :class:`~mtlbook.data.MultiTaskData` in mini-batches of
:class:`~mtlbook.data.Batch`, optionally shuffled by a private generator and optionally
sharded across the processes of a distributed run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._core import Batch

if TYPE_CHECKING:
    from ._multitask import MultiTaskData

__all__ = ["BatchLoader"]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``lo:hi`` of a global batch of ``n`` rows that process ``rank`` of ``world_size``
    takes: contiguous shards in rank order whose sizes differ by at most one.

    Example:
        >>> from mtlbook.data._loader import shard_bounds
        >>> [shard_bounds(5, r, 2) for r in range(2)]
        [(0, 2), (2, 5)]
    """
    for name, value in (("n", n), ("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(
            f"need n >= 0, world_size >= 1 and 0 <= rank < world_size, got "
            f"n={n}, rank={rank}, world_size={world_size}"
        )
    return int(n * rank // world_size), int(n * (rank + 1) // world_size)


#: What every loader's ``state_dict`` holds: its random generator and the settings that shape
#: the order of its batches.
LOADER_STATE_KEYS = ("generator", "n_samples", "batch_size", "shuffle", "drop_last")


def restore_loader_state(
    generator: torch.Generator,
    state: Any,
    mine: Mapping[str, Any],
    what: str,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Check a saved loader ``state`` against the loader's own settings ``mine`` and set
    ``generator`` to the saved one. ``what`` names the state expected in the error;
    ``defaults`` fills settings that states of other loaders do not hold.

    Raises:
        ValueError: when the state is not a loader state or its settings differ.
    """
    if not isinstance(state, Mapping) or any(k not in state for k in LOADER_STATE_KEYS):
        raise ValueError(f"state must be {what} with keys {LOADER_STATE_KEYS}, got {state!r:.200}")
    theirs = {**(defaults or {}), **state}
    differ = [f"{k}: state {theirs[k]!r}, loader {v!r}" for k, v in mine.items() if theirs[k] != v]
    if differ:
        raise ValueError("the loader state was saved with other settings: " + "; ".join(differ))
    generator.set_state(state["generator"].cpu())


class BatchLoader:
    """Iterates over a :class:`MultiTaskData` in mini-batches of :class:`Batch`.

    Shuffling uses a private ``torch.Generator`` seeded with ``seed``, so the order does not
    depend on (or disturb) the global random state. Each pass draws a new order; the sequence
    of orders is fixed by the seed. :meth:`state_dict` and :meth:`load_state_dict` save and
    restore the shuffling state between passes, so a resumed training run draws the orders
    the uninterrupted one would have drawn.

    With ``shard=(rank, world_size)`` each yielded batch is process ``rank``'s shard of the
    global batch of ``batch_size`` rows (:func:`shard_bounds`): loaders with the same seed on
    every process draw the same global batches and together cover each one exactly once
    (what :func:`mtlbook.fit` does under ``torchrun``). ``len()`` counts global batches.
    """

    def __init__(
        self,
        data: MultiTaskData,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if shard is not None:
            if not isinstance(shard, tuple | list) or len(shard) != 2:
                raise ValueError(f"shard must be None or (rank, world_size), got {shard!r}")
            shard_bounds(0, *shard)  # validates
            shard = (int(shard[0]), int(shard[1]))
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.shard = shard
        self._generator = torch.Generator().manual_seed(int(seed))
        self._tensors = data.tensors()

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The shuffling state between two passes: the generator's state and the settings
        it must be restored with (plain tensors and numbers, ``torch.save``-able).

        Example:
            >>> from mtlbook.data import make_correlated_tasks
            >>> data = make_correlated_tasks(50, 0.5, seed=0)
            >>> a, b = data.loader(8, seed=1), data.loader(8, seed=2)
            >>> _ = list(a)  # one pass
            >>> b.load_state_dict(a.state_dict())
            >>> bool((next(iter(a)).dense == next(iter(b)).dense).all())
            True
        """
        return {
            "generator": self._generator.get_state(),
            "n_samples": len(self.data),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a loader over data of the same size with the same
        batch size and settings; the next pass draws the order the saved loader's would.

        Raises:
            ValueError: when the state is not a loader state or its settings differ.
        """
        mine = {
            "n_samples": len(self.data),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }
        restore_loader_state(self._generator, state, mine, "a BatchLoader.state_dict()")

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.data)
        order = torch.randperm(n, generator=self._generator) if self.shuffle else None
        dense, categorical, labels, masks = self._tensors
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            if self.shard is not None:
                first, last = shard_bounds(hi - lo, *self.shard)
                lo, hi = lo + first, lo + last
            if order is None:
                idx: slice | torch.Tensor = slice(lo, hi)
            else:
                idx = order[lo:hi]
            yield Batch(
                dense=None if dense is None else dense[idx],
                categorical=None if categorical is None else categorical[idx],
                labels={k: v[idx] for k, v in labels.items()},
                masks={k: v[idx] for k, v in masks.items()},
            )
