"""Training on several processes with PyTorch's DistributedDataParallel.

Launch a script with ``torchrun`` (``python -m torch.distributed.run``), call :func:`init` at
its start and :func:`mtlbook.fit` as usual: ``fit`` sees the initialised process group, wraps
the model in :class:`torch.nn.parallel.DistributedDataParallel` and trains the same run that
one process would, faster::

    # train.py, run with: torchrun --standalone --nproc_per_node=2 train.py
    import mtlbook as mb
    from mtlbook.training import distributed

    distributed.init()                         # gloo on the CPU, NCCL on GPUs
    train, valid = mb.simulate_funnel(100_000, seed=0).split((0.9, 0.1))
    model = mb.models.MMoE(train.schema, seed=0)
    result = mb.fit(model, train, valid, batch_size=1024)   # the GLOBAL batch
    if distributed.is_main_process():
        print(result.valid_metrics())

**Same global batches.** Every process holds the whole data set and draws the same shuffled
order (the same ``seed``); each global batch of ``batch_size`` samples is cut into
``world_size`` contiguous shards (:func:`shard_bounds`) and process ``r`` trains on shard ``r``.
One process and ``k`` processes therefore see the same batches. :func:`shard_batch` and
:class:`ShardedLoader` apply the same cut to the batches of any other batch source.

**Same losses and gradients.** A task's loss is a mean over the samples of the global batch on
which the task is defined, and a shard holds a different number of them on every process.
:func:`global_losses` all-reduces the per-task sums and counts, so every process sees the
global loss values, and builds losses whose gradients, once DistributedDataParallel has
averaged them over the processes, are the gradients of the global losses (see its docstring).

**Same metrics.** :func:`predict` and :func:`evaluate` let each process score its shard of a
data set and gather the predictions, so AUC and GAUC are those of the whole set.

Outside an initialised process group every function here is a no-op for one process:
:func:`rank` is 0, :func:`world_size` is 1, :func:`shard_batch` returns the batch.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from ..data import Batch, MultiTaskData
from ..data._loader import shard_bounds
from ..metrics import evaluate as _evaluate_one
from ..metrics import score_predictions

if TYPE_CHECKING:
    from ..models.base import MultiTaskModel

__all__ = [
    "ShardedLoader",
    "evaluate",
    "global_losses",
    "init",
    "is_distributed",
    "is_main_process",
    "predict",
    "rank",
    "shard_batch",
    "shard_bounds",
    "training",
    "world_size",
]

#: The environment variables torchrun sets for every process (``LOCAL_RANK`` is optional).
_REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ---------------------------------------------------------------------- the process group
def init(backend: str | None = None, *, timeout_s: float | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun`` started; return ``(rank, world_size)``.

    Reads torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) and calls :func:`torch.distributed.init_process_group`.
    With NCCL, the process's GPU is set to ``cuda:LOCAL_RANK`` first, so ``fit(...,
    device="auto")`` trains each process on its own GPU. Calling it again, or after the script
    initialised the group itself, returns the current rank and size. End the script with
    ``torch.distributed.destroy_process_group()``.

    Args:
        backend: ``"gloo"`` (CPU), ``"nccl"`` (GPUs) or another backend torch knows;
            ``None``: NCCL when CUDA and NCCL are available, gloo otherwise.
        timeout_s: how long a collective operation may wait for the other processes
            (``None``: torch's default).

    Returns:
        This process's rank and the number of processes.

    Raises:
        RuntimeError: when torchrun's environment variables are missing (the script was not
            started by torchrun), or torch was built without distributed support.
        ValueError: for a backend that is not a string, or a non-positive timeout.

    Example:
        >>> from mtlbook.training import distributed
        >>> distributed.init()  # doctest: +SKIP
        (0, 2)
    """
    if not dist.is_available():
        raise RuntimeError(
            "this build of torch has no distributed support "
            "(torch.distributed.is_available() is False)"
        )
    if dist.is_initialized():
        return rank(), world_size()
    if backend is not None and not isinstance(backend, str):
        raise ValueError(
            f"backend must be None or a backend name such as 'gloo' or 'nccl', got {backend!r}"
        )
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be None or positive, got {timeout_s!r}")
    missing = [name for name in _REQUIRED_ENV if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"mtlbook.training.distributed.init() reads the environment that torchrun sets, but "
            f"{missing} are not set: start the script with "
            "'torchrun --standalone --nproc_per_node=N script.py' (or "
            "'python -m torch.distributed.run ...')"
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    kwargs: dict[str, Any] = {"backend": backend}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=float(timeout_s))
    dist.init_process_group(**kwargs)
    return rank(), world_size()


def is_distributed() -> bool:
    """Whether a process group is initialised (the process is one of several, or one of one).

    Example:
        >>> from mtlbook.training import distributed
        >>> distributed.is_distributed()  # in a plain Python process
        False
    """
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group).

    Example:
        >>> from mtlbook.training import distributed
        >>> distributed.rank(), distributed.world_size()
        (0, 1)
    """
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this process has rank 0: the one that logs and writes files."""
    return rank() == 0


def _resolve(rank_: int | None, world: int | None) -> tuple[int, int]:
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return rank_, world


# ---------------------------------------------------------------------- sharding
def shard_batch(batch: Batch, rank: int | None = None, world_size: int | None = None) -> Batch:
    """The shard of a global ``batch`` that process ``rank`` trains on.

    The rows from ``lo`` to ``hi`` of :func:`shard_bounds` ``(len(batch), rank, world_size)``:
    contiguous, in order, sizes differing by at most one; concatenating the shards of all
    ranks gives the batch back. A global batch with fewer rows than processes leaves some
    shards empty (:func:`mtlbook.fit` handles that).

    Args:
        batch: a global mini-batch.
        rank, world_size: ``None``: those of the current process group (0 and 1 outside one).

    Example:
        >>> import torch
        >>> from mtlbook.data import Batch
        >>> from mtlbook.training.distributed import shard_batch
        >>> batch = Batch(dense=torch.arange(5.0).unsqueeze(1), categorical=None,
        ...               labels={"y": torch.arange(5.0)})
        >>> [shard_batch(batch, r, 2).labels["y"].tolist() for r in (0, 1)]
        [[0.0, 1.0], [2.0, 3.0, 4.0]]
    """
    rank_, world = _resolve(rank, world_size)
    if not isinstance(batch, Batch):
        raise TypeError(f"batch must be a mtlbook.data.Batch, got {type(batch).__name__}")
    if world == 1:
        return batch
    lo, hi = shard_bounds(len(batch), rank_, world)

    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[lo:hi]

    return Batch(
        dense=cut(batch.dense),
        categorical=cut(batch.categorical),
        labels={k: v[lo:hi] for k, v in batch.labels.items()},
        masks={k: v[lo:hi] for k, v in batch.masks.items()},
    )


class ShardedLoader:
    """Iterate over any source of global batches, yielding this process's shard of each.

    Wrap a batch source that every process iterates in the same order (the same data, the
    same seed): each process then trains on its own rows of the same global batches, as
    :func:`mtlbook.fit` does with a :class:`~mtlbook.data.BatchLoader`. ``len()`` and
    ``state_dict()`` / ``load_state_dict()`` are those of the wrapped source (when it has
    them): the number of global batches and the shuffling state are the same on every process.

    Args:
        loader: an iterable of :class:`~mtlbook.data.Batch`, e.g. ``data.loader(1024)``.
        rank, world_size: ``None``: those of the current process group.

    Example:
        >>> from mtlbook.data import make_correlated_tasks
        >>> from mtlbook.training.distributed import ShardedLoader
        >>> data = make_correlated_tasks(10, 0.5, seed=0)
        >>> shards = [ShardedLoader(data.loader(4, shuffle=False), r, 2) for r in (0, 1)]
        >>> [[len(b) for b in s] for s in shards]
        [[2, 2, 1], [2, 2, 1]]
    """

    def __init__(
        self, loader: Iterable[Batch], rank: int | None = None, world_size: int | None = None
    ) -> None:
        rank_, world = _resolve(rank, world_size)
        shard_bounds(0, rank_, world)  # validates
        self.loader = loader
        self.rank, self.world_size = rank_, world

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield shard_batch(batch, self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, Any]:
        """The wrapped source's state (it must have ``state_dict``)."""
        return self.loader.state_dict()  # type: ignore[attr-defined]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the wrapped source's state."""
        self.loader.load_state_dict(state)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- losses
def global_losses(
    losses: Mapping[str, torch.Tensor],
    batch: Batch,
    extra: torch.Tensor | None = None,
    extra_reduction: str = "mean",
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The losses of the global batch, from each process's losses on its shard.

    ``losses`` are one process's per-task means over its shard (masked tasks over the rows
    where their mask is true, as :meth:`~mtlbook.models.MultiTaskModel.task_losses` computes
    them); ``extra`` is the model's regulariser on the shard, a mean over its rows or
    independent of them (``extra_reduction="mean"``) or a sum over its rows (``"sum"``, see
    :attr:`~mtlbook.models.MultiTaskModel.regularization_reduction`). One all-reduce gives
    every process the global per-task sums and counts, and the returned loss of task ``k`` on
    process ``r`` is

        L̂_k = L_k + (W · m_kr / M_k) · ℓ_kr − stop_gradient((W · m_kr / M_k) · ℓ_kr)

    with ``ℓ_kr`` the shard loss, ``m_kr`` its count, ``M_k = Σ_r m_kr`` and ``W`` the number
    of processes: its value is exactly the global mean ``L_k`` (the same number on every
    process), and its gradient is ``W · Σ_{i in shard} ∇l_ik / M_k``, whose average over the
    processes (DistributedDataParallel averages) is ``∇L_k``. Any function of the losses a
    weighting builds (weights computed from the global values) therefore gets the gradient of
    one process training on the global batch. The regulariser is combined alike, weighted by
    the shard's share of the global batch (a sum over rows: added up over the processes, each
    shard's gradient scaled by ``W``). A shard without rows for a task contributes zero.

    Outside a process group the arguments are returned unchanged.

    Args:
        losses: ``{task: scalar}``, this process's shard losses.
        batch: this process's shard (for the counts: masks, number of rows).
        extra: the regulariser on the shard, or ``None``.

    Returns:
        ``(losses, extra)`` of the global batch (``extra`` is ``None`` when it was).

    Example:
        >>> import torch
        >>> from mtlbook.data import Batch
        >>> from mtlbook.training.distributed import global_losses
        >>> batch = Batch(dense=torch.zeros(3, 1), categorical=None,
        ...               labels={"y": torch.zeros(3)})
        >>> global_losses({"y": torch.tensor(0.5)}, batch)[0]  # one process: unchanged
        {'y': tensor(0.5000)}
    """
    if extra_reduction not in ("mean", "sum"):
        raise ValueError(f"extra_reduction must be 'mean' or 'sum', got {extra_reduction!r}")
    if not is_distributed():
        return dict(losses), extra
    names = list(losses)
    world = world_size()
    local = torch.stack([losses[k] for k in names])  # [T]
    n_rows = len(batch)
    device = local.device
    rows = torch.tensor(float(n_rows), dtype=torch.float64, device=device)
    counts = torch.stack(
        [batch.masks[k].sum(dtype=torch.float64) if k in batch.masks else rows for k in names]
        + [rows]
    )  # [T + 1]: per-task counts, rows
    present = counts[:-1] > 0  # [T]
    # A shard without rows for a task has a NaN (empty mean) or 0 loss: it contributes 0.
    local = torch.where(present, local, torch.zeros_like(local))
    extra_local = (
        torch.where(rows > 0, extra, torch.zeros_like(extra)) if extra is not None else None
    )
    summed = extra_reduction == "sum"
    packed = torch.cat(
        [
            counts,
            local.detach().double() * counts[:-1],
            (
                extra_local.detach().double().reshape(1) * (1 if summed else n_rows)
                if extra_local is not None
                else counts.new_zeros(1)
            ),
        ]
    )  # [2T + 2]
    dist.all_reduce(packed)  # sums over the processes
    total_counts, total_rows = packed[: len(names)], packed[len(names)]
    sums = packed[len(names) + 1 : 2 * len(names) + 1]
    values = (sums / total_counts.clamp_min(1.0)).to(local.dtype)  # L_k, [T]
    scale = (world * counts[:-1] / total_counts.clamp_min(1.0)).to(local.dtype)  # [T]
    scaled = scale * local  # [T]
    out = values + (scaled - scaled.detach())
    result = dict(zip(names, out.unbind(0), strict=True))
    if extra is None or extra_local is None:  # both or neither
        return result, None
    if summed:  # the global sum; each process's gradient W times its own
        share, value = torch.tensor(float(world)), packed[-1]
    else:  # the global mean; each process weighted by its share of the rows
        share = world * rows / total_rows.clamp_min(1.0)
        value = packed[-1] / total_rows.clamp_min(1.0)
    scaled_extra = share.to(extra.dtype) * extra_local
    return result, value.to(extra.dtype) + (scaled_extra - scaled_extra.detach())


# ---------------------------------------------------------------------- evaluation
def _shard_of(data: MultiTaskData) -> MultiTaskData:
    lo, hi = shard_bounds(len(data), rank(), world_size())
    return data.subset(np.arange(lo, hi))


def predict(model: MultiTaskModel, data: MultiTaskData, batch_size: int = 8192) -> pd.DataFrame:
    """``model.predict(data)``, computed by all processes together.

    Each process predicts its contiguous shard of ``data`` (:func:`shard_bounds`); the shards
    are gathered, so every process returns the predictions for every sample, in order. Call it
    on every process. Outside a process group it is ``model.predict(data, batch_size)``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.training import distributed
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.make_correlated_tasks(20, 0.5, seed=0)
        >>> model = SharedBottom(data.schema, seed=0)
        >>> distributed.predict(model, data).equals(model.predict(data))
        True
    """
    if not is_distributed():
        return model.predict(data, batch_size=batch_size)
    mine = model.predict(_shard_of(data), batch_size=batch_size)
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, _frame_payload(mine))
    return _join_frames(parts)


def evaluate(model: MultiTaskModel, data: MultiTaskData, batch_size: int = 8192) -> pd.DataFrame:
    """:func:`mtlbook.evaluate` computed by all processes together.

    Each process predicts its shard of ``data``; rank 0 gathers the predictions, scores the
    whole set (AUC, GAUC and log-loss are those of one process scoring everything) and sends
    the metrics to the others, so every process returns the same table. Call it on every
    process. Outside a process group it is :func:`mtlbook.evaluate`.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.training import distributed
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.make_correlated_tasks(50, 0.5, seed=0)
        >>> model = SharedBottom(data.schema, seed=0)
        >>> distributed.evaluate(model, data).equals(mb.evaluate(model, data))
        True
    """
    if not is_distributed():
        return _evaluate_one(model, data, batch_size=batch_size)
    mine = _frame_payload(model.predict(_shard_of(data), batch_size=batch_size))
    parts: list[Any] | None = [None] * world_size() if is_main_process() else None
    dist.gather_object(mine, parts, dst=0)
    box: list[Any] = [None]
    if is_main_process():
        assert parts is not None  # rank 0 gathered every shard
        box[0] = score_predictions(_join_frames(parts), data)
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _frame_payload(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: frame[name].to_numpy() for name in frame.columns}


def _join_frames(parts: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """Concatenate gathered prediction columns in rank order; empty shards are skipped (a
    model may report extra columns only when it sees rows)."""
    filled = [p for p in parts if p and len(next(iter(p.values()))) > 0] or parts[:1]
    columns = list(filled[0])
    return pd.DataFrame({name: np.concatenate([p[name] for p in filled]) for name in columns})


# ---------------------------------------------------------------------- training support
class _Training:
    """What :func:`mtlbook.fit` shares with the weighting strategies while it trains with
    several processes: the strategies that combine per-task gradients average them here."""

    def __init__(self) -> None:
        self.world = world_size()

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` averaged over the processes (a new tensor)."""
        out = tensor.detach().clone()
        dist.all_reduce(out)
        return out / self.world

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes (a new tensor)."""
        out = tensor.detach().clone()
        dist.all_reduce(out)
        return out

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each ``.grad`` by its average over the processes (one all-reduce)."""
        with_grad = [(p, p.grad) for p in params if p.grad is not None]
        if not with_grad:
            return
        flat = torch.cat([g.reshape(-1) for _, g in with_grad])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in with_grad:
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).clone()
            offset += n


_ACTIVE: _Training | None = None


def training() -> _Training | None:
    """The state of the distributed training :func:`mtlbook.fit` is running in this process,
    or ``None`` (one process). Gradient-based weighting strategies reduce their per-task
    gradients through it."""
    return _ACTIVE


@contextlib.contextmanager
def _training_scope() -> Iterator[_Training]:
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, _Training()
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = previous
