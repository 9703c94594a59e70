"""The training loop: :func:`fit` trains any model with any loss weighting.

One function reads top to bottom: check the arguments, set up the optimiser and the batches,
then for every epoch train on the mini-batches (:meth:`_Run.train_epoch`), score the validation
split, write the epoch's history and let the :class:`~mtlbook.training.selection.Selection`
keep the best epoch. What the loop delegates lives beside it: model selection and the history
in :mod:`~mtlbook.training.selection` (shared with :func:`~mtlbook.training.fit_population`),
checkpoints in :mod:`~mtlbook.training.checkpoint`, one process or several in
:mod:`~mtlbook.training.processes`.

Example:
    A run saved after 2 epochs and resumed to 4 ends exactly as the run of 4 epochs:

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

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data import MultiTaskData
from ..models.base import MultiTaskModel
from ..weighting import EqualWeight, Weighting
from ._optimizer import DenseAndSparseAdam, make_optimizer
from .checkpoint import RunCheckpoint, run_fingerprint
from .processes import Processes
from .selection import HISTORY_COLUMNS, Selection, check_monitor, epoch_rows
from .streaming import ParquetSource

__all__ = ["Callback", "FitResult", "fit"]


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


@dataclass
class _Run:
    """One call of :func:`fit`: the parts it trains and what changes while it trains. All of it
    goes into a checkpoint (:meth:`state`) and comes back from one (:meth:`restore`)."""

    model: MultiTaskModel
    weighting: Weighting
    optimizer: torch.optim.Optimizer | DenseAndSparseAdam
    loader: Any
    selection: Selection
    procs: Processes
    step: int = 0
    epoch: int = 0  # the last epoch completed
    stopped: bool = False
    rows: list[tuple] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    seconds_before: float = 0.0  # training time of the runs this one resumes
    started: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        """Training time so far, the resumed runs' included."""
        return self.seconds_before + time.perf_counter() - self.started

    def train_epoch(
        self, forward: torch.nn.Module, stepped: Any, callbacks: Sequence[Callback], epoch: int
    ) -> tuple[dict[str, float], float]:
        """One pass over the training batches: each task's mean loss and the mean combined
        loss."""
        model, procs, weighting, optimizer = self.model, self.procs, self.weighting, self.optimizer
        model.train()
        sums = dict.fromkeys(model.task_names, 0.0)
        total_sum, n_batches = 0.0, 0
        for batch in self.loader:
            self.step += 1
            if procs.device.type != "cpu":
                batch = batch.to(procs.device)
            optimizer.zero_grad(set_to_none=True)
            losses = model.task_losses(forward(batch), batch)
            losses, extra = procs.global_losses(
                losses, batch, model.regularization(), model.regularization_reduction
            )
            values = torch.stack([v.detach() for v in losses.values()])
            if not bool(torch.isfinite(values).all()):
                self._raise_not_finite(losses, values, epoch)
            total = weighting.backward(losses, model, extra)
            optimizer.step()
            weighting.after_step(stepped, batch)
            step_losses = dict(zip(model.task_names, values.tolist(), strict=True))
            for name, value in step_losses.items():
                sums[name] += value
            total_sum += float(total.detach())
            n_batches += 1
            for cb in callbacks if procs.main else ():
                cb.on_step_end(model, self.step, step_losses)
        return {k: v / n_batches for k, v in sums.items()}, total_sum / n_batches

    def _raise_not_finite(
        self, losses: dict[str, torch.Tensor], values: torch.Tensor, epoch: int
    ) -> NoReturn:
        bad = next(n for n, v in zip(losses, values, strict=True) if not torch.isfinite(v))
        raise FloatingPointError(
            f"the loss of task {bad!r} became {losses[bad].item()} at epoch {epoch}, "
            f"step {self.step}; lower the learning rate or check the labels' scale"
        )

    def state(
        self, fingerprint: dict[str, str], epochs: int, rngs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Everything a resumed run needs (:data:`~mtlbook.training.checkpoint.RUN_STATE_KEYS`);
        ``rngs``: every process's random state."""
        selection = self.selection
        return {
            "fingerprint": fingerprint,
            "epoch": self.epoch,
            "epochs": epochs,
            "step": self.step,
            "stopped": self.stopped,
            "history": [
                [int(e), str(sp), str(t), str(m), float(v)] for e, sp, t, m, v in self.rows
            ],
            "best_score": None if selection.best_score is None else float(selection.best_score),
            "best_epoch": selection.best_epoch,
            "best_state": self.best_state,
            "stale": selection.stale,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "weighting": self.weighting.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": rngs[0],
            **({"rng_ranks": rngs} if self.procs.active else {}),
            "train_seconds": self.seconds(),
        }

    def save(self, store: RunCheckpoint, fingerprint: dict[str, str], epochs: int) -> None:
        """Write the checkpoint. Every process calls it; rank 0 writes every process's random
        state."""
        self.procs.write(
            lambda rngs: store.write(self.state(fingerprint, epochs, rngs)),
            f"the checkpoint {str(store.save_path)!r}",
        )
        store.written = self.epoch

    def restore(self, saved: dict[str, Any]) -> None:
        """Put the run back in the state a checkpoint holds."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.weighting.load_state_dict(saved["weighting"])
        self.loader.load_state_dict(saved["loader"])
        self.rows = [tuple(row) for row in saved["history"]]
        self.step, self.epoch, self.stopped = saved["step"], saved["epoch"], saved["stopped"]
        self.best_state = saved["best_state"]
        self.seconds_before = float(saved["train_seconds"])
        selection = self.selection
        selection.best_score, selection.best_epoch = saved["best_score"], saved["best_epoch"]
        selection.stale = saved["stale"]


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
    """Train ``model`` on ``train`` with ``weighting``; select the best epoch on ``valid``.

    Every epoch trains on shuffled mini-batches (``seed`` fixes their order and the dropout),
    then scores the validation split; the epoch with the best ``monitor`` is kept and its
    weights are restored at the end. With ``checkpoint`` the run is saved after every
    ``checkpoint_every`` epochs, and ``resume`` continues it to the result of the run that was
    never interrupted (:mod:`mtlbook.training.checkpoint`). Under ``torchrun`` it trains one
    run on every process (:mod:`mtlbook.training.processes`). Appendix B of the book shows both.

    Args:
        model: any :class:`~mtlbook.models.MultiTaskModel` built for the data's schema.
        train: training data, or a :class:`~mtlbook.training.streaming.ParquetSource`.
        valid: validation data: the only data model selection and early stopping look at.
        epochs: passes over ``train`` at most.
        batch_size: mini-batch size (the global batch on several processes).
        lr, weight_decay: Adam's learning rate and (coupled) weight decay. Embedding tables
            with sparse gradients (:func:`mtlbook.models.sparse_embeddings`) are updated by
            SparseAdam, which has no weight decay.
        weighting: a :class:`~mtlbook.weighting.Weighting` (``None``: equal weights).
        seed: seed of the shuffling and the dropout (the model's own seed sets its weights).
        device, progress: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``; a progress bar.
        early_stopping: stop after this many epochs without improvement (``None``: never).
        monitor: ``"loss"`` (the sum of the validation losses) or ``"TASK:METRIC"``.
        restore_best: load the weights of the best epoch at the end.
        callbacks: :class:`Callback` objects.
        eval_batch_size: validation batch size.
        checkpoint, checkpoint_every: the file the run is saved to, every this many epochs.
        resume: ``False``, ``True`` (from ``checkpoint``) or the path of a checkpoint.
        distributed: ``None`` (every process of an initialised process group), ``True``
            (require one) or ``False`` (this process alone).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: for bad arguments, data that do not fit the model, a weighting that cannot
            train on several processes, or processes given different runs.
        FloatingPointError: when a task's loss becomes NaN or inf (names the task and step).
        mtlbook.training.checkpoint.CheckpointError: for a checkpoint that cannot be resumed
            (:class:`~mtlbook.training.checkpoint.RunCheckpoint` lists the file errors).
    """
    weighting = _check_arguments(model, train, valid, epochs, lr, early_stopping, weighting)
    selection = Selection(monitor, check_monitor(monitor, valid), early_stopping)
    store = RunCheckpoint(checkpoint, checkpoint_every, resume)
    procs = Processes(distributed, weighting, device)
    model.to(procs.device)
    fingerprint = run_fingerprint(
        model,
        train,
        valid,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        weighting=weighting,
        seed=seed,
        monitor=monitor,
        early_stopping=early_stopping,
        restore_best=restore_best,
        device=procs.device,
    )
    saved = store.open(fingerprint, epochs)
    weighting.setup(model.task_names, model)
    parameters = [*model.parameters(), *weighting.parameters()]
    optimizer = make_optimizer(model, parameters, lr, weight_decay, weighting, procs.active)
    loader = procs.loader(train, batch_size, seed)
    run = _Run(model, weighting, optimizer, loader, selection, procs)
    if saved is not None:
        run.restore(saved)
    procs.start(train, valid, fingerprint, weighting, epochs=epochs, done=run.epoch)
    forward, stepped, ddp = procs.wrap(model, weighting)
    run.started = time.perf_counter()
    with torch.random.fork_rng(devices=procs.cuda_devices), procs.scope():
        torch.manual_seed(seed + procs.rank)  # dropout: each process draws its own
        for cb in callbacks if procs.main else ():
            cb.on_train_begin(model, weighting)
        if saved is not None:
            procs.restore_rng(saved, seed)
        remaining = range(0) if run.stopped else range(run.epoch + 1, epochs + 1)
        show = progress and procs.main
        bar = tqdm(remaining, desc=type(model).__name__, leave=False, disable=not show)
        for epoch in bar:
            train_losses, total = run.train_epoch(forward, stepped, callbacks, epoch)
            weighting.epoch_end(epoch, train_losses)
            metrics = procs.evaluate(model, valid, eval_batch_size).itertuples(index=False)
            rows = epoch_rows(epoch, train_losses, total, weighting.weights, metrics)
            run.rows += rows
            for cb in callbacks if procs.main else ():
                cb.on_epoch_end(model, epoch, pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)))
            # Every process holds the same rows (the validation ones are rank 0's), so every
            # process takes the same decisions.
            if selection.update(epoch, rows) and restore_best:
                run.best_state = copy.deepcopy(model.state_dict())
            run.epoch, run.stopped = epoch, selection.stopped
            bar.set_postfix({monitor: f"{selection.score(rows):.4f}", "best": selection.best_epoch})
            if store.due(epoch, epochs, run.stopped):
                run.save(store, fingerprint, epochs)
            if run.stopped:
                break
        bar.close()
        if store.pending(run.epoch):  # resumed from another file with nothing left to train
            run.save(store, fingerprint, epochs)
    del ddp, forward  # when freed, the wrapper removes its gradient hooks from the model
    if restore_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    model.eval()
    assert selection.best_score is not None  # set by the first epoch (epochs ≥ 1)
    return FitResult(
        model=model,
        history=pd.DataFrame(run.rows, columns=list(HISTORY_COLUMNS)),
        best_epoch=selection.best_epoch,
        best_score=float(selection.best_score),
        monitor=monitor,
        epochs_run=run.epoch,
        train_seconds=procs.broadcast(run.seconds()),
    )


def _check_arguments(
    model: MultiTaskModel,
    train: Any,
    valid: Any,
    epochs: Any,
    lr: Any,
    early_stopping: Any,
    weighting: Any,
) -> Weighting:
    """The arguments of :func:`fit` checked; the weighting to train with."""
    if not isinstance(train, MultiTaskData | ParquetSource):
        raise TypeError(
            "train must be a MultiTaskData or a "
            "mtlbook.training.streaming.ParquetSource, "
            f"got {type(train).__name__}"
        )
    if not isinstance(valid, MultiTaskData):
        raise TypeError(f"valid must be a MultiTaskData, got {type(valid).__name__}")
    model._check_data(valid)
    if isinstance(train, MultiTaskData):
        model._check_data(train)
    elif train.schema != model.schema:
        raise ValueError(
            "the data's schema differs from the one the model was built with: "
            f"model {model.schema} vs data {train.schema}"
        )
    model.check_training_masks(set(train.masks))
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if early_stopping is not None and (not isinstance(early_stopping, int) or early_stopping < 1):
        raise ValueError(
            f"early_stopping must be None or a positive integer, got {early_stopping!r}"
        )
    weighting = EqualWeight() if weighting is None else weighting
    if not isinstance(weighting, Weighting):
        raise TypeError(
            f"weighting must be a mtlbook.weighting.Weighting, got {type(weighting).__name__}"
        )
    return weighting
