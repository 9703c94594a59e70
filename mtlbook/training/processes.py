"""One process or several: what :func:`~mtlbook.training.fit` does differently under ``torchrun``.

:class:`Processes` is the one place where the training loop asks "am I one of several
processes?". On one process every method is the plain operation (the loader of the data, the
model itself, :func:`~mtlbook.metrics.evaluate`); in an initialised process group
(:mod:`mtlbook.training.distributed`) each process trains on its shard of every global batch, the
model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (for the weightings that
let it average the gradients), the losses are those of the global batch, validation scores the
whole set, and only rank 0 writes. Appendix B of the book shows it at work.

**What it guarantees.** When a :mod:`torch.distributed` process group is
initialised (a script started by ``torchrun`` that called
:func:`mtlbook.training.distributed.init`), ``fit`` trains one run on all its processes with
:class:`torch.nn.parallel.DistributedDataParallel` (gloo on the CPU, NCCL on GPUs; each
process on its own GPU), and gives the result of one process training on the same global
batches, up to floating-point rounding:

* ``batch_size`` is the *global* batch. Every process holds the whole data, draws the same
  shuffled order (``seed``) and trains on its contiguous shard of each global batch
  (:func:`mtlbook.training.distributed.shard_bounds`; a shard may be empty).
* The losses the weighting sees are those of the global batch, with the same value on every
  process: :func:`mtlbook.training.distributed.global_losses` all-reduces each task's sum and
  count (a masked task's count differs between shards) and builds losses whose gradients,
  averaged over the processes, are the global ones. So are the per-epoch training losses
  in the history and in :meth:`~mtlbook.weighting.Weighting.epoch_end`, and the model's
  regulariser (a mean over the batch's rows or a sum over them, as the model's
  :attr:`~mtlbook.models.MultiTaskModel.regularization_reduction` says, or independent of
  them).
* Validation: each process predicts its shard of ``valid``; rank 0 scores all the
  predictions (AUC and GAUC of the whole set) and sends the metrics to the others, so
  model selection and early stopping take rank 0's decision on every process.
* Only rank 0 shows progress, calls ``callbacks`` and writes checkpoints (holding the random
  state of every process); a resumed run reads the checkpoint on every process (it must
  be visible to all of them) and may use another number of processes (only the dropout
  draws of the extra processes then differ). Every process returns the same
  :class:`~mtlbook.training.loop.FitResult` (with rank 0's ``train_seconds``).
* Dropout: each process draws its own masks (seed ``seed + rank``), so a model with
  dropout trains equivalently but not identically to one process.
* Before training, the processes check that they were given the same run (model,
  arguments, a checksum of the data), and refuse it otherwise.

Weighting strategies (the class attribute
:attr:`~mtlbook.weighting.Weighting.distributed`): ``EqualWeight``, ``FixedWeights``,
``ScheduledWeights``, ``DWA``, ``RLW``, ``UncertaintyWeighting`` and ``FAMO`` combine the
global losses into one scalar whose gradients DistributedDataParallel averages; their
weights come from global losses (DWA's epoch losses, FAMO's losses after the step,
uncertainty's learned variances, whose gradients only involve global loss values) or from
generators seeded alike on every process (RLW), so they are the same everywhere.
``GradNorm`` also trains through DistributedDataParallel and averages its per-task
gradients on the measured layer over the processes before taking their norms. ``PCGrad``,
``MGDA`` (also MGDA-UB, through the sum of the processes' Gram matrices), ``CAGrad`` and
``IMTL`` average the ``[tasks, shared parameters]`` matrix of per-task gradients over the
processes before combining it (identically on every process), and the task-specific
gradients after; they bypass DistributedDataParallel's hooks and send ``tasks`` times
more data per step. A custom strategy trains through DistributedDataParallel unless its
class sets ``distributed = "manual"`` (it averages its gradients itself, see
:mod:`mtlbook.weighting._grads`) or ``None``, which ``fit`` refuses with a ``ValueError``
naming the strategy, before training. ``distributed=False`` trains one separate run per
process instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import Batch, BatchLoader, MultiTaskData
from ..metrics import evaluate
from ..models.base import MultiTaskModel
from ..utils import resolve_device
from ..weighting import Weighting
from . import distributed as _dist
from .streaming import ParquetSource

__all__ = ["Processes"]

# The buffers of mtlbook's models are constants: DistributedDataParallel need not broadcast
# them before every forward pass (the argument was renamed in recent torch versions).
_NO_BUFFER_SYNC: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


class Processes:
    """How :func:`~mtlbook.training.fit` trains here: on one process, or on every process of
    the initialised process group.

    Args:
        distributed: ``None`` (several processes when a process group is initialised),
            ``True`` (require one) or ``False`` (train one separate run per process).
        weighting: the run's weighting (it decides how the gradients are averaged).
        device: the device argument of ``fit``.
    """

    def __init__(self, distributed: bool | None, weighting: Weighting, device: str) -> None:
        self.active = _use_distributed(distributed, weighting)
        self.rank, self.world = (_dist.rank(), _dist.world_size()) if self.active else (0, 1)
        self.main = self.rank == 0
        self.device = resolve_device(device)
        if self.active:
            self.device = _distributed_device(self.device)
        self.cuda_devices = [self.device] if self.device.type == "cuda" else []

    # ------------------------------------------------------------------ setting up
    def loader(self, train: MultiTaskData | ParquetSource, batch_size: int, seed: int) -> Any:
        """The training batches: every process draws the same global batches and takes its
        shard of each."""
        if not self.active:
            return train.loader(batch_size, shuffle=True, seed=seed)
        shard = (self.rank, self.world)
        if isinstance(train, ParquetSource):
            return train.loader(batch_size, shuffle=True, seed=seed, shard=shard)
        return BatchLoader(train, batch_size, shuffle=True, seed=seed, shard=shard)

    def start(
        self,
        train: Any,
        valid: MultiTaskData,
        fingerprint: dict[str, str],
        weighting: Weighting,
        **run: Any,
    ) -> None:
        """Refuse processes given different runs; start the weighting's state as rank 0's."""
        if not self.active:
            return
        _check_same_run(train, valid, fingerprint, **run)
        # The strategies' state (random generators seeded with seed=None included) starts as
        # rank 0's on every process; DistributedDataParallel does the same for the model.
        state = self.broadcast(_to_cpu(weighting.state_dict()) if self.main else None)
        if not self.main:
            weighting.load_state_dict(state)

    def wrap(
        self, model: MultiTaskModel, weighting: Weighting
    ) -> tuple[nn.Module, Any, DistributedDataParallel | None]:
        """``(forward, stepped, ddp)``: the module the training steps call, the model as the
        weighting's ``after_step`` sees it, and the DDP wrapper (``None`` on one process)."""
        if not self.active:
            return model, model, None
        ddp = DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            **_NO_BUFFER_SYNC,
        )
        # DistributedDataParallel averages the gradients of one backward pass; strategies that
        # differentiate the losses one by one ("manual") average theirs themselves.
        forward = ddp if weighting.distributed == "ddp" else model
        return forward, _GlobalLossView(model), ddp

    def scope(self) -> contextlib.AbstractContextManager:
        """The context the weightings find the process group in while the run trains."""
        return _dist._training_scope() if self.active else contextlib.nullcontext()

    # ------------------------------------------------------------------ every step and epoch
    def global_losses(
        self,
        losses: dict[str, torch.Tensor],
        batch: Batch,
        extra: torch.Tensor | None,
        reduction: str,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The losses of the global batch (:func:`mtlbook.training.distributed.global_losses`)."""
        if not self.active:
            return losses, extra
        return _dist.global_losses(losses, batch, extra, reduction)

    def evaluate(
        self, model: MultiTaskModel, valid: MultiTaskData, batch_size: int
    ) -> pd.DataFrame:
        """Validation metrics of the whole set (each process scores its shard, rank 0 all)."""
        if self.active:
            return _dist.evaluate(model, valid, batch_size=batch_size)
        return evaluate(model, valid, batch_size=batch_size)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # ------------------------------------------------------------------ random state, writing
    def rng_state(self) -> dict[str, Any]:
        """This process's random state (torch's CPU generator, and the CUDA one on CUDA)."""
        cuda = self.device.type == "cuda"
        return {
            "cpu": torch.random.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
        }

    def restore_rng(self, saved: dict[str, Any], seed: int) -> None:
        """Set the random state a checkpoint saved for this process. A checkpoint written by
        another number of processes has no state for ranks beyond its own: they are seeded
        from (seed, rank, epoch), which changes only the dropout draws of those processes."""
        states = saved.get("rng_ranks")
        if states is not None and len(states) == self.world:
            state = states[self.rank]
        elif self.rank == 0:
            state = saved["rng"]
        else:
            torch.manual_seed(hash((seed, self.rank, int(saved["epoch"]))) % 2**63)
            return
        torch.random.set_rng_state(state["cpu"].cpu())
        if self.device.type == "cuda" and state["cuda"] is not None:
            torch.cuda.set_rng_state(state["cuda"].cpu(), self.device)

    def write(self, save: Callable[[list[dict[str, Any]]], None], what: str) -> None:
        """Rank 0 calls ``save`` with every process's random state; the others wait until it
        has, and every process raises if it failed."""
        rngs: list[Any] | None = [self.rng_state()]
        if self.active:
            rngs = [None] * self.world if self.main else None
            dist.gather_object(self.rng_state(), rngs, dst=0)
        failure = None
        if self.main:
            assert rngs is not None  # rank 0 holds every process's state
            try:
                save(rngs)
            except BaseException as err:
                if not self.active:
                    raise
                failure = err
        if self.active:
            message = self.broadcast(
                None if failure is None else f"{type(failure).__name__}: {failure}"
            )
            if failure is not None:
                raise failure
            if message is not None:
                raise RuntimeError(f"rank 0 could not write {what}: {message}")


class _GlobalLossView:
    """The model as a weighting's ``after_step`` sees it in a distributed run: calling it and
    every attribute are the model's, but :meth:`task_losses` gives the global batch's losses
    (FAMO measures the decrease of the losses with it)."""

    def __init__(self, model: MultiTaskModel) -> None:
        self._model = model

    def __call__(self, batch):
        return self._model(batch)

    def task_losses(self, outputs, batch):
        return _dist.global_losses(self._model.task_losses(outputs, batch), batch)[0]

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _use_distributed(distributed: bool | None, weighting: Weighting) -> bool:
    """Whether ``fit`` trains on the processes of the initialised process group."""
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None (automatic), True or False, got {distributed!r}")
    active = _dist.is_distributed()
    if distributed and not active:
        raise ValueError(
            "distributed=True needs an initialised process group: start the "
            "script with torchrun and call mtlbook.training.distributed.init() "
            "first"
        )
    if not (active if distributed is None else distributed):
        return False
    mode = getattr(weighting, "distributed", "ddp")
    name = type(weighting).__name__
    if mode is None:
        raise ValueError(
            f"the weighting {name} cannot train on several processes ({_dist.world_size()} "
            f"in this process group): {name}.distributed is None, so it does not average "
            "what it computes over the processes and would train each one differently. Use "
            "another weighting, or pass distributed=False to train one separate run per "
            "process"
        )
    if mode not in ("ddp", "manual"):
        raise ValueError(f"{name}.distributed must be 'ddp', 'manual' or None, got {mode!r}")
    return True


def _check_same_run(
    train: MultiTaskData, valid: MultiTaskData, fingerprint: dict[str, str], **extra: Any
) -> None:
    """Refuse to train when the processes were not given the same run: the same model,
    arguments, data (a checksum of every array) and, when resuming, the same checkpoint."""
    mine = {
        **fingerprint,
        **{k: str(v) for k, v in extra.items()},
        "train data": _checksum(train),
        "valid data": _checksum(valid),
    }
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    differ = [
        f"{key}: rank 0 has {everyone[0].get(key)!r:.80}, rank {r} {theirs.get(key)!r:.80}"
        for r, theirs in enumerate(everyone[1:], start=1)
        for key in sorted(set(mine) | set(theirs))
        if theirs.get(key) != everyone[0].get(key)
    ]
    if differ:
        raise ValueError(
            "the processes of a distributed fit must train the same run (the same "
            "model, arguments and data on every process), but they differ:\n  "
            + "\n  ".join(differ[:10])
        )


def _checksum(data: MultiTaskData) -> str:
    """A digest of every array of ``data`` (features, labels, masks, groups)."""
    digest = hashlib.blake2b(digest_size=16)
    arrays = [
        data.dense,
        data.categorical,
        data.groups,
        *(data.labels[k] for k in sorted(data.labels)),
        *(data.masks[k] for k in sorted(data.masks)),
    ]
    for array in arrays:
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _to_cpu(value: Any) -> Any:
    """``value`` with every tensor in it moved to the CPU (to send it to other processes)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _distributed_device(dev: torch.device) -> torch.device:
    """The device of this process, checked against the process group's backend."""
    backend = str(dist.get_backend()).lower()
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    elif "nccl" in backend:
        raise ValueError(
            f"the process group uses {backend}, which needs the model on a GPU, "
            f"but device={dev.type!r}; pass device='cuda' (or 'auto'), or "
            "initialise the group with the gloo backend to train on the CPU"
        )
    return dev
