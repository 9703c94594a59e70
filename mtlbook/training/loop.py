"""Training: :func:`fit` trains any model with any loss weighting; :class:`FitResult` keeps the
history. Model selection and early stopping look at the validation split only.
``fit(..., checkpoint=PATH)`` saves the run after every epoch (see
:mod:`mtlbook.training.checkpoint`) and ``fit(..., resume=True)`` continues it: the resumed run ends
exactly as the uninterrupted one would have."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..data import BatchLoader, MultiTaskData
from ..metrics import LOWER_IS_BETTER, evaluate
from ..models.base import MultiTaskModel
from ..utils import resolve_device
from ..weighting import EqualWeight, Weighting
from . import distributed as _dist
from .checkpoint import CheckpointError, describe, differences, load_checkpoint, save_checkpoint
from .streaming import ParquetSource

__all__ = ["Callback", "FitResult", "fit"]

_COLUMNS = ("epoch", "split", "task", "metric", "value")


class Callback:
    """Hooks into :func:`fit` so diagnostics need no second training loop.

    Override any of the methods; each receives the model being trained.
    """

    def on_train_begin(self, model: MultiTaskModel, weighting: Weighting) -> None:
        """Before the first step."""

    def on_step_end(self, model: MultiTaskModel, step: int, losses: dict[str, float]) -> None:
        """After each optimiser step, with the step's per-task losses."""

    def on_epoch_end(self, model: MultiTaskModel, epoch: int, history: pd.DataFrame) -> None:
        """After each epoch's validation, with the epoch's rows of the history."""


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model, holding the weights of ``best_epoch`` when ``restore_best``.
        history: tidy DataFrame with columns ``epoch, split, task, metric, value``: training
            loss and task weight per epoch (split ``train``) and every validation metric
            (split ``valid``; metric ``loss`` is log-loss or MSE; task ``all`` is the sum).
        best_epoch: epoch (1-based) with the best validation ``monitor`` value.
        best_score: that value.
        monitor: what was monitored, e.g. ``"loss"`` or ``"purchase:auc"``.
        epochs_run: epochs actually run (fewer than asked after early stopping).
        train_seconds: wall-clock training time (rank 0's on several processes).
    """

    model: MultiTaskModel
    history: pd.DataFrame
    best_epoch: int
    best_score: float
    monitor: str
    epochs_run: int
    train_seconds: float

    def valid_metrics(self, epoch: int | None = None) -> pd.DataFrame:
        """Validation metrics at ``epoch`` (default: the best epoch) as ``task × metric``."""
        epoch = self.best_epoch if epoch is None else epoch
        rows = self.history[(self.history["split"] == "valid") & (self.history["epoch"] == epoch)]
        return rows.pivot(index="task", columns="metric", values="value")


def _monitor_value(rows: list[tuple], monitor: str) -> float:
    task, metric = ("all", "loss") if monitor == "loss" else monitor.split(":")
    for _, split, row_task, row_metric, value in rows:
        if split == "valid" and row_task == task and row_metric == metric:
            return float(value)
    raise ValueError(f"monitor {monitor!r} was not computed on the validation split "
                     "(is the task defined on any validation sample?)")


def _check_monitor(monitor: str, data: MultiTaskData) -> bool:
    """Validate ``monitor`` and return whether higher is better."""
    if monitor == "loss":
        return False
    parts = monitor.split(":")
    if len(parts) != 2 or parts[0] not in data.task_names:
        raise ValueError(f"monitor must be 'loss' or 'TASK:METRIC' with TASK in "
                         f"{list(data.task_names)}, got {monitor!r}")
    kind = data.schema.task(parts[0]).kind
    allowed = {"binary": ("auc", "gauc", "logloss", "loss"),
               "regression": ("mse", "mae", "loss")}[kind]
    if parts[1] not in allowed:
        raise ValueError(f"metric {parts[1]!r} is not computed for {kind} task {parts[0]!r}; "
                         f"choose one of {allowed}")
    return parts[1] not in LOWER_IS_BETTER


def fit(
    model: MultiTaskModel,
    train: MultiTaskData | ParquetSource,
    valid: MultiTaskData,
    *,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    weighting: Weighting | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    early_stopping: int | None = None,
    monitor: str = "loss",
    restore_best: bool = True,
    callbacks: Sequence[Callback] = (),
    eval_batch_size: int = 8192,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool | str | os.PathLike = False,
    distributed: bool | None = None,
) -> FitResult:
    """Train ``model`` on ``train``, select the best epoch on ``valid``.

    **Checkpoints.** With ``checkpoint=PATH`` the run is saved to that one file after every
    ``checkpoint_every`` epochs (counted from the start of the run, resumed or not) and after
    the last epoch (also when early stopping ends the run). A checkpoint holds the model's
    weights, the optimiser's state, the weighting's state
    (:meth:`~mtlbook.weighting.Weighting.state_dict`), the loader's shuffling state, the
    random number generators' states (torch's CPU generator, and the CUDA one on CUDA), the
    epoch, the step, the history so far, the best score, epoch and weights, the
    early-stopping counter and a fingerprint of the configuration (the model's
    class, structure and parameter shapes; the schema; the sizes of ``train`` and ``valid``;
    ``batch_size``, ``lr``, ``weight_decay``, the weighting's class and arguments, ``seed``,
    ``monitor``, ``early_stopping``, ``restore_best`` and the device). Every write is atomic
    (:func:`mtlbook.training.checkpoint.save_checkpoint`): a crash while saving keeps the previous
    checkpoint.

    **Resuming.** ``resume=True`` continues from the file ``checkpoint`` names; ``resume=PATH``
    from another file (then ``checkpoint``, if given, receives the following checkpoints).
    Build ``model`` and ``weighting`` as for the first run and pass the same arguments: the
    run continues after the checkpoint's epoch, and its weights, history, best epoch and
    score are the same as those of the run that was never interrupted (bitwise on the CPU;
    the time in ``train_seconds`` adds up both parts). Since nothing in a run depends on the
    total number of epochs, ``epochs`` may also be raised to train a finished run further:
    it then ends as a run started with the larger ``epochs``. A checkpoint of a run that
    already stopped early, or that already ran ``epochs``, gives its result without training.
    ``callbacks`` are not saved: they see the resumed epochs only, and their
    ``on_train_begin`` is called again. The epoch of a checkpoint is complete: an interrupted
    epoch is run again from its start. A common pattern for jobs that may be stopped at any
    time is ``fit(..., checkpoint=path, resume=os.path.exists(path))``.

    **What is never overwritten.** If ``checkpoint`` names an existing file and the run does
    not resume from it, that file must be a checkpoint of the same configuration (the same
    run started again); any other file is refused with ``FileExistsError`` before training.

    **Several processes (torchrun).** When a :mod:`torch.distributed` process group is
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
      regulariser (which must be a mean over the batch's rows, or not depend on them).
    * Validation: each process predicts its shard of ``valid``; rank 0 scores all the
      predictions (AUC and GAUC of the whole set) and sends the metrics to the others, so
      model selection and early stopping take rank 0's decision on every process.
    * Only rank 0 shows progress, calls ``callbacks`` and writes checkpoints (holding the random
      state of every process); a resumed run reads the checkpoint on every process (it must
      be visible to all of them) and may use another number of processes (only the dropout
      draws of the extra processes then differ). Every process returns the same
      :class:`FitResult` (with rank 0's ``train_seconds``).
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

    Args:
        model: any :class:`~mtlbook.models.MultiTaskModel`.
        train: training data (its schema must be the model's): a :class:`MultiTaskData`,
            or a :class:`~mtlbook.training.streaming.ParquetSource` for data larger than memory
            (its ``shuffle_mode`` sets the order: ``"exact"`` trains exactly as on the
            same data in memory, ``"buffer"`` shuffles within a bounded buffer).
        valid: validation data; the only data used for model selection and early stopping.
        epochs: maximum number of passes over ``train``.
        batch_size: mini-batch size (the global batch on several processes).
        lr: Adam learning rate.
        weight_decay: L2 weight decay (Adam's, coupled).
        weighting: a :class:`~mtlbook.weighting.Weighting`; ``None`` means equal weights.
        seed: seed for the shuffling order and dropout; the same seed gives the same numbers
            on the CPU. (The initial weights are fixed by the model's own ``seed``.)
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        progress: show a progress bar over epochs.
        early_stopping: stop after this many epochs without improvement of ``monitor``
            (``None``: run every epoch).
        monitor: ``"loss"`` (sum over tasks of the validation log-loss/MSE) or
            ``"TASK:METRIC"``, e.g. ``"purchase:auc"``.
        restore_best: load the weights of the best epoch at the end.
        callbacks: :class:`Callback` objects.
        eval_batch_size: batch size for validation.
        checkpoint: file to save the run to (``None``: no checkpoints).
        checkpoint_every: save after every this many epochs (and after the last one).
        resume: ``False`` (start afresh), ``True`` (continue from ``checkpoint``) or the path
            of a checkpoint to continue from.
        distributed: ``None``: train on all processes of the process group when one is
            initialised, else in this process alone; ``True``: require a process group;
            ``False``: this process alone, even in a process group.

    Returns:
        A :class:`FitResult`.

    Raises:
        FloatingPointError: when a task's loss becomes NaN or inf (names the task and step).
        ValueError: for bad arguments, data that do not match the model, or training data
            with a task masked that the model must see on every row (the funnel steps of
            ESMM and AITM, :meth:`~mtlbook.models.MultiTaskModel.check_training_masks`); on several
            processes, for a weighting that cannot train there, processes given different
            runs, or a CPU device with the NCCL backend.
        FileNotFoundError: when the checkpoint to resume from does not exist.
        FileExistsError: when ``checkpoint`` names a file that is not a checkpoint of this
            configuration and the run does not resume from it.
        mtlbook.training.checkpoint.CheckpointError: when the checkpoint to resume from is
            unreadable, not an mtlbook checkpoint, of another format version, written by another
            configuration (the message lists the differences), or already past ``epochs``.

    Example:
        >>> import os, tempfile
        >>> import mtlbook as mb
        >>> from mtlbook.models import SharedBottom
        >>> train, valid = mb.make_correlated_tasks(400, 0.5, seed=0).split((0.5, 0.5))
        >>> def run(**kw):
        ...     model = SharedBottom(train.schema, bottom_units=(8,), tower_units=(4,), seed=0)
        ...     return mb.fit(model, train, valid, device="cpu", progress=False, **kw)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "run.pt")
        ...     first = run(epochs=2, checkpoint=path)  # stopped after 2 epochs
        ...     resumed = run(epochs=4, checkpoint=path, resume=True)  # epochs 3 and 4
        >>> whole = run(epochs=4)
        >>> resumed.history.equals(whole.history), resumed.epochs_run
        (True, 4)
    """
    if not isinstance(train, MultiTaskData | ParquetSource):
        raise TypeError("train must be a MultiTaskData or a "
                        "mtlbook.training.streaming.ParquetSource, "
                        f"got {type(train).__name__}")
    if not isinstance(valid, MultiTaskData):
        raise TypeError(f"valid must be a MultiTaskData, got {type(valid).__name__}")
    model._check_data(valid)
    if isinstance(train, MultiTaskData):
        model._check_data(train)
    elif train.schema != model.schema:
        raise ValueError("the data's schema differs from the one the model was built with: "
                         f"model {model.schema} vs data {train.schema}")
    model.check_training_masks(set(train.masks))
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if early_stopping is not None and (not isinstance(early_stopping, int) or early_stopping < 1):
        raise ValueError("early_stopping must be None or a positive integer, "
                         f"got {early_stopping!r}")
    higher_is_better = _check_monitor(monitor, valid)
    weighting = EqualWeight() if weighting is None else weighting
    if not isinstance(weighting, Weighting):
        raise TypeError(f"weighting must be a mtlbook.weighting.Weighting, got "
                        f"{type(weighting).__name__}")
    save_path, resume_path = _checkpoint_paths(checkpoint, checkpoint_every, resume)
    use_dist = _use_distributed(distributed, weighting)

    dev = resolve_device(device)
    rank, world = (_dist.rank(), _dist.world_size()) if use_dist else (0, 1)
    main = rank == 0
    if use_dist:
        dev = _distributed_device(dev)
    model.to(dev)
    fingerprint = None
    if save_path is not None or resume_path is not None:
        fingerprint = _fingerprint(model, train, valid, batch_size=batch_size, lr=lr,
                                   weight_decay=weight_decay, weighting=weighting, seed=seed,
                                   monitor=monitor, early_stopping=early_stopping,
                                   restore_best=restore_best, device=dev)
    saved = None
    if resume_path is not None:
        saved = _read_resumable(resume_path, fingerprint, epochs)
    if save_path is not None and save_path.exists() and not (
            resume_path is not None and _same_file(save_path, resume_path)):
        _check_overwritable(save_path, fingerprint)

    weighting.setup(model.task_names, model)
    params = list(model.parameters()) + list(weighting.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if use_dist and isinstance(train, ParquetSource):
        loader = train.loader(batch_size, shuffle=True, seed=seed, shard=(rank, world))
    elif use_dist:
        # Every process draws the same global batches and trains on its shard of each.
        loader = BatchLoader(train, batch_size, shuffle=True, seed=seed, shard=(rank, world))
    else:
        loader = train.loader(batch_size, shuffle=True, seed=seed)
    rows: list[tuple] = []
    best_score, best_epoch, best_state, stale = None, 0, None, 0
    step, done, stopped, seconds_before = 0, 0, False, 0.0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        weighting.load_state_dict(saved["weighting"])
        loader.load_state_dict(saved["loader"])
        rows = [tuple(row) for row in saved["history"]]
        best_score, best_epoch, stale = saved["best_score"], saved["best_epoch"], saved["stale"]
        best_state = saved["best_state"]
        step, done, stopped = saved["step"], saved["epoch"], saved["stopped"]
        seconds_before = float(saved["train_seconds"])
    # The epoch whose state ``save_path`` holds (when it is the file resumed from).
    written = done if saved is not None and save_path is not None and _same_file(
        save_path, resume_path) else None
    if use_dist:
        _check_same_run(train, valid, fingerprint or _fingerprint(
            model, train, valid, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            weighting=weighting, seed=seed, monitor=monitor, early_stopping=early_stopping,
            restore_best=restore_best, device=dev), epochs=epochs, done=done)
        # The strategies' state (random generators seeded with seed=None included) starts as
        # rank 0's on every process; DistributedDataParallel does the same for the model.
        box = [_to_cpu(weighting.state_dict()) if main else None]
        dist.broadcast_object_list(box, src=0)
        if not main:
            weighting.load_state_dict(box[0])
    # The module the training steps call: DistributedDataParallel averages the gradients of
    # one backward pass; strategies that differentiate the losses one by one ("manual")
    # average their gradients themselves and call the model directly.
    forward: torch.nn.Module = model
    ddp = None
    if use_dist:
        ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda"
                                      else None, **_NO_BUFFER_SYNC)
        if weighting.distributed == "ddp":
            forward = ddp
    # What the weighting's ``after_step`` calls: the model, with global losses when distributed.
    stepped = _GlobalLossView(model) if use_dist else model
    start = time.perf_counter()

    def rng_state() -> dict[str, Any]:
        return {"cpu": torch.random.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}

    def save() -> None:
        # The one place that writes a checkpoint; called inside the forked random state, which
        # it records. Called on every process: rank 0 writes (with every process's random
        # state), the others wait until the file is complete.
        rngs = [rng_state()]
        if use_dist:
            rngs = [None] * world if main else None
            dist.gather_object(rng_state(), rngs, dst=0)
        failure = None
        if main:
            try:
                save_checkpoint(save_path, {
                    "fingerprint": fingerprint,
                    "epoch": done, "epochs": epochs, "step": step, "stopped": stopped,
                    "history": [[int(e), str(sp), str(t), str(m), float(v)]
                                for e, sp, t, m, v in rows],
                    "best_score": None if best_score is None else float(best_score),
                    "best_epoch": best_epoch, "best_state": best_state, "stale": stale,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "weighting": weighting.state_dict(), "loader": loader.state_dict(),
                    "rng": rngs[0],
                    **({"rng_ranks": rngs} if use_dist else {}),
                    "train_seconds": seconds_before + time.perf_counter() - start,
                })
            except BaseException as err:
                if not use_dist:
                    raise
                failure = err
        if use_dist:
            box = [None if failure is None else f"{type(failure).__name__}: {failure}"]
            dist.broadcast_object_list(box, src=0)
            if failure is not None:
                raise failure
            if box[0] is not None:
                raise RuntimeError(f"rank 0 could not write the checkpoint {str(save_path)!r}: "
                                   f"{box[0]}")

    scope = _dist._training_scope() if use_dist else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), scope:
        # Dropout: each process draws its own random numbers (seed + rank).
        torch.manual_seed(seed + rank)
        if main:
            for cb in callbacks:
                cb.on_train_begin(model, weighting)
        if saved is not None:
            _restore_rng(saved, rank, world, seed, dev)
        remaining = range(done + 1, epochs + 1) if not stopped else range(0)
        bar = tqdm(remaining, desc=type(model).__name__, disable=not (progress and main),
                   leave=False)
        for epoch in bar:
            model.train()
            sums = dict.fromkeys(model.task_names, 0.0)
            total_sum, n_batches = 0.0, 0
            for batch in loader:
                step += 1
                if dev.type != "cpu":
                    batch = batch.to(dev)
                optimizer.zero_grad(set_to_none=True)
                losses = model.task_losses(forward(batch), batch)
                extra = model.regularization()
                if use_dist:
                    losses, extra = _dist.global_losses(
                        losses, batch, extra, model.regularization_reduction)
                values = torch.stack([v.detach() for v in losses.values()])
                if not bool(torch.isfinite(values).all()):
                    bad = [n for n, v in zip(losses, values.tolist(), strict=True)
                           if not torch.isfinite(torch.tensor(v))]
                    raise FloatingPointError(
                        f"the loss of task {bad[0]!r} became {losses[bad[0]].item()} at epoch "
                        f"{epoch}, step {step}; lower the learning rate or check the labels' scale"
                    )
                total = weighting.backward(losses, model, extra)
                optimizer.step()
                weighting.after_step(stepped, batch)
                values = values.tolist()
                for name, v in zip(model.task_names, values, strict=True):
                    sums[name] += v
                total_sum += float(total.detach())
                n_batches += 1
                if callbacks and main:
                    step_losses = dict(zip(model.task_names, values, strict=True))
                    for cb in callbacks:
                        cb.on_step_end(model, step, step_losses)

            train_losses = {k: v / n_batches for k, v in sums.items()}
            weighting.epoch_end(epoch, train_losses)
            epoch_rows = [(epoch, "train", k, "loss", v) for k, v in train_losses.items()]
            epoch_rows.append((epoch, "train", "all", "loss", total_sum / n_batches))
            epoch_rows += [(epoch, "train", k, "weight", float(w))
                           for k, w in weighting.weights.items()]
            if use_dist:  # each process scores its shard; rank 0 scores all and shares
                metrics = _dist.evaluate(model, valid, batch_size=eval_batch_size)
            else:
                metrics = evaluate(model, valid, batch_size=eval_batch_size)
            epoch_rows += [(epoch, "valid", t, m, v) for t, m, v in metrics.itertuples(index=False)]
            task_loss = metrics[metrics["metric"].isin(["logloss", "mse"])]
            epoch_rows += [(epoch, "valid", t, "loss", v)
                           for t, v in zip(task_loss["task"], task_loss["value"], strict=True)]
            epoch_rows.append((epoch, "valid", "all", "loss", float(task_loss["value"].sum())))
            rows += epoch_rows
            if callbacks and main:
                frame = pd.DataFrame(epoch_rows, columns=list(_COLUMNS))
                for cb in callbacks:
                    cb.on_epoch_end(model, epoch, frame)

            # Every process holds the same rows (the validation ones are rank 0's), so every
            # process takes the same decisions below.
            score = _monitor_value(epoch_rows, monitor)
            improved = best_score is None or (score > best_score if higher_is_better
                                              else score < best_score)
            if improved:
                best_score, best_epoch, stale = score, epoch, 0
                if restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            done = epoch
            stopped = early_stopping is not None and stale >= early_stopping
            bar.set_postfix({monitor: f"{score:.4f}", "best": best_epoch})
            if save_path is not None and (epoch % checkpoint_every == 0 or epoch == epochs
                                          or stopped):
                save()
                written = epoch
            if stopped:
                break
        bar.close()
        if save_path is not None and written != done:
            save()  # resumed from another file without anything left to train

    del ddp, forward  # when freed, the wrapper removes its gradient hooks from the model
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    seconds = seconds_before + time.perf_counter() - start
    if use_dist:  # every process returns the same result: rank 0's time
        box = [seconds]
        dist.broadcast_object_list(box, src=0)
        seconds = box[0]
    history = pd.DataFrame(rows, columns=list(_COLUMNS))
    return FitResult(model=model, history=history, best_epoch=best_epoch,
                     best_score=float(best_score), monitor=monitor, epochs_run=done,
                     train_seconds=seconds)


# ---------------------------------------------------------------------- distributed
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


# The buffers of mtlbook's models are constants: DistributedDataParallel need not broadcast
# them before every forward pass (the argument was renamed in recent torch versions).
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False} if "forward_sync_buffers"
                   in inspect.signature(DistributedDataParallel.__init__).parameters
                   else {"broadcast_buffers": False})


def _use_distributed(distributed: bool | None, weighting: Weighting) -> bool:
    """Whether ``fit`` trains on the processes of the initialised process group."""
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None (automatic), True or False, "
                        f"got {distributed!r}")
    active = _dist.is_distributed()
    if distributed and not active:
        raise ValueError("distributed=True needs an initialised process group: start the "
                         "script with torchrun and call mtlbook.training.distributed.init() first")
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


def _check_same_run(train: MultiTaskData, valid: MultiTaskData, fingerprint: dict[str, str],
                    **extra: Any) -> None:
    """Refuse to train when the processes were not given the same run: the same model,
    arguments, data (a checksum of every array) and, when resuming, the same checkpoint."""
    mine = {**fingerprint, **{k: str(v) for k, v in extra.items()},
            "train data": _checksum(train), "valid data": _checksum(valid)}
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    differ = [f"{key}: rank 0 has {everyone[0].get(key)!r:.80}, rank {r} {theirs.get(key)!r:.80}"
              for r, theirs in enumerate(everyone[1:], start=1)
              for key in sorted(set(mine) | set(theirs)) if theirs.get(key) != everyone[0].get(key)]
    if differ:
        raise ValueError("the processes of a distributed fit must train the same run (the same "
                         "model, arguments and data on every process), but they differ:\n  "
                         + "\n  ".join(differ[:10]))


def _checksum(data: MultiTaskData) -> str:
    """A digest of every array of ``data`` (features, labels, masks, groups)."""
    digest = hashlib.blake2b(digest_size=16)
    arrays = [data.dense, data.categorical, data.groups,
              *(data.labels[k] for k in sorted(data.labels)),
              *(data.masks[k] for k in sorted(data.masks))]
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
        raise ValueError(f"the process group uses {backend}, which needs the model on a GPU, "
                         f"but device={dev.type!r}; pass device='cuda' (or 'auto'), or "
                         "initialise the group with the gloo backend to train on the CPU")
    return dev


def _restore_rng(saved: dict[str, Any], rank: int, world: int, seed: int,
                 dev: torch.device) -> None:
    """Set the random state saved for this process. A checkpoint written by another number
    of processes has no state for ranks beyond its own: they are seeded from (seed, rank,
    epoch), which changes only the dropout draws of those processes."""
    states = saved.get("rng_ranks")
    if states is not None and len(states) == world:
        state = states[rank]
    elif rank == 0:
        state = saved["rng"]
    else:
        torch.manual_seed(hash((seed, rank, int(saved["epoch"]))) % 2 ** 63)
        return
    torch.random.set_rng_state(state["cpu"].cpu())
    if dev.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), dev)


# ---------------------------------------------------------------------- checkpoints
_STATE_KEYS = ("fingerprint", "epoch", "step", "stopped", "history", "best_score",
               "best_epoch", "best_state", "stale", "model", "optimizer", "weighting",
               "loader", "rng", "train_seconds")


def _checkpoint_paths(checkpoint, checkpoint_every, resume) -> tuple[Path | None, Path | None]:
    """Validate the checkpoint arguments; the file to save to and the one to resume from."""
    save_path = None
    if checkpoint is not None:
        if isinstance(checkpoint, bool) or not isinstance(checkpoint, str | os.PathLike):
            raise TypeError(f"checkpoint must be None or a file path (str or os.PathLike), "
                            f"got {checkpoint!r}")
        save_path = Path(checkpoint)
        if save_path.is_dir():
            raise IsADirectoryError(f"checkpoint={str(save_path)!r} is a folder; give a file "
                                    "path such as 'runs/model.pt'")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
            or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    if resume is False:
        return save_path, None
    if resume is True:
        if save_path is None:
            raise ValueError("resume=True continues from the file that checkpoint names, but "
                             "checkpoint is None; give checkpoint=PATH or resume=PATH")
        return save_path, save_path
    if not isinstance(resume, str | os.PathLike):
        raise TypeError(f"resume must be False, True or a checkpoint path, got {resume!r}")
    return save_path, Path(resume)


def _same_file(a: Path, b: Path | None) -> bool:
    return b is not None and os.path.abspath(a) == os.path.abspath(b)


def _fingerprint(model: MultiTaskModel, train: MultiTaskData, valid: MultiTaskData, *,
                 weighting: Weighting, device: torch.device, **settings: Any) -> dict[str, str]:
    """What must not change between a run and its resumption, as text."""
    cls = type(model)
    shapes = [(k, list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    return {
        "model": f"{cls.__module__}.{cls.__qualname__}",
        "model structure": repr(model),
        "model parameters": describe(shapes),
        "schema": repr(train.schema),
        "train samples": str(len(train)),
        "valid samples": str(len(valid)),
        **{name: describe(value) for name, value in settings.items()},
        # One entry per argument of the strategy, so that a difference names the argument.
        **{("weighting" if name == "class" else f"weighting {name}"): describe(value)
           for name, value in weighting.config().items()},
        "device": device.type,
    }


def _read_resumable(path: Path, fingerprint: dict[str, str], epochs: int) -> dict[str, Any]:
    """The checkpoint at ``path``, checked against this run's configuration."""
    try:
        state = load_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}, so there is nothing to resume; to start afresh when no "
                                "checkpoint exists yet, pass resume=os.path.exists(path)") from err
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"the checkpoint {str(path)!r} lacks {missing}; it was not "
                              "written by mtlbook.fit")
    differ = differences(state["fingerprint"], fingerprint)
    if differ:
        raise CheckpointError(
            f"the checkpoint {str(path)!r} was written by a run with another configuration, so "
            "resuming it would not continue that run:\n  " + "\n  ".join(differ)
            + "\nPass the model, data and arguments of that run (epochs may be raised)."
        )
    if state["epoch"] > epochs:
        raise CheckpointError(f"the checkpoint {str(path)!r} has already run {state['epoch']} "
                              f"epochs, more than epochs={epochs}; pass epochs >= "
                              f"{state['epoch']}")
    return state


def _check_overwritable(path: Path, fingerprint: dict[str, str]) -> None:
    """Refuse to replace a file that is not a checkpoint of this configuration."""
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise FileExistsError(f"checkpoint={str(path)!r} names an existing file that is not a "
                              f"checkpoint of this run, and it is not overwritten: {err}. "
                              "Choose another path or remove the file") from err
    differ = differences(state.get("fingerprint") or {}, fingerprint)
    if differ:
        raise FileExistsError(
            f"checkpoint={str(path)!r} holds the checkpoint of a run with another "
            "configuration, and it is not overwritten:\n  " + "\n  ".join(differ)
            + "\nChoose another path, remove the file, or resume that run with its own "
            "configuration"
        )
