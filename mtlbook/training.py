"""Training: :func:`fit` trains any model with any loss weighting; :class:`FitResult` keeps the
history. Model selection and early stopping look at the validation split only.
``fit(..., checkpoint=PATH)`` saves the run after every epoch (see :mod:`mtlbook.checkpoint`)
and ``fit(..., resume=True)`` continues it: the resumed run ends exactly as the
uninterrupted one would have."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    describe,
    differences,
    load_checkpoint,
    save_checkpoint,
)
from .data import MultiTaskData
from .metrics import LOWER_IS_BETTER, evaluate
from .models.base import MultiTaskModel
from .utils import resolve_device
from .weighting import EqualWeight, Weighting

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
        train_seconds: wall-clock training time.
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
    train: MultiTaskData,
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
    (:func:`mtlbook.checkpoint.save_checkpoint`): a crash while saving keeps the previous
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

    Args:
        model: any :class:`~mtlbook.models.MultiTaskModel`.
        train: training data (its schema must be the model's).
        valid: validation data; the only data used for model selection and early stopping.
        epochs: maximum number of passes over ``train``.
        batch_size: mini-batch size.
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

    Returns:
        A :class:`FitResult`.

    Raises:
        FloatingPointError: when a task's loss becomes NaN or inf (names the task and step).
        ValueError: for bad arguments or data that do not match the model.
        FileNotFoundError: when the checkpoint to resume from does not exist.
        FileExistsError: when ``checkpoint`` names a file that is not a checkpoint of this
            configuration and the run does not resume from it.
        mtlbook.checkpoint.CheckpointError: when the checkpoint to resume from is unreadable,
            not an mtlbook checkpoint, of another format version, written by another
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
    for name, part in (("train", train), ("valid", valid)):
        if not isinstance(part, MultiTaskData):
            raise TypeError(f"{name} must be a MultiTaskData, got {type(part).__name__}")
        model._check_data(part)
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

    dev = resolve_device(device)
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
    start = time.perf_counter()

    def save() -> None:
        # The one place that writes a checkpoint (a distributed run would let one process
        # write); called inside the forked random state, which it records.
        save_checkpoint(save_path, {
            "fingerprint": fingerprint,
            "epoch": done, "epochs": epochs, "step": step, "stopped": stopped,
            "history": [[int(e), str(sp), str(t), str(m), float(v)] for e, sp, t, m, v in rows],
            "best_score": None if best_score is None else float(best_score),
            "best_epoch": best_epoch, "best_state": best_state, "stale": stale,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "weighting": weighting.state_dict(), "loader": loader.state_dict(),
            "rng": {"cpu": torch.random.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None},
            "train_seconds": seconds_before + time.perf_counter() - start,
        })

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for cb in callbacks:
            cb.on_train_begin(model, weighting)
        if saved is not None:
            torch.random.set_rng_state(saved["rng"]["cpu"].cpu())
            if dev.type == "cuda" and saved["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(saved["rng"]["cuda"].cpu(), dev)
        remaining = range(done + 1, epochs + 1) if not stopped else range(0)
        bar = tqdm(remaining, desc=type(model).__name__, disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            sums = dict.fromkeys(model.task_names, 0.0)
            total_sum, n_batches = 0.0, 0
            for batch in loader:
                step += 1
                if dev.type != "cpu":
                    batch = batch.to(dev)
                optimizer.zero_grad(set_to_none=True)
                losses = model.task_losses(model(batch), batch)
                extra = model.regularization()
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
                weighting.after_step(model, batch)
                values = values.tolist()
                for name, v in zip(model.task_names, values, strict=True):
                    sums[name] += v
                total_sum += float(total.detach())
                n_batches += 1
                if callbacks:
                    step_losses = dict(zip(model.task_names, values, strict=True))
                    for cb in callbacks:
                        cb.on_step_end(model, step, step_losses)

            train_losses = {k: v / n_batches for k, v in sums.items()}
            weighting.epoch_end(epoch, train_losses)
            epoch_rows = [(epoch, "train", k, "loss", v) for k, v in train_losses.items()]
            epoch_rows.append((epoch, "train", "all", "loss", total_sum / n_batches))
            epoch_rows += [(epoch, "train", k, "weight", float(w))
                           for k, w in weighting.weights.items()]
            metrics = evaluate(model, valid, batch_size=eval_batch_size)
            epoch_rows += [(epoch, "valid", t, m, v) for t, m, v in metrics.itertuples(index=False)]
            task_loss = metrics[metrics["metric"].isin(["logloss", "mse"])]
            epoch_rows += [(epoch, "valid", t, "loss", v)
                           for t, v in zip(task_loss["task"], task_loss["value"], strict=True)]
            epoch_rows.append((epoch, "valid", "all", "loss", float(task_loss["value"].sum())))
            rows += epoch_rows
            if callbacks:
                frame = pd.DataFrame(epoch_rows, columns=list(_COLUMNS))
                for cb in callbacks:
                    cb.on_epoch_end(model, epoch, frame)

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

    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history = pd.DataFrame(rows, columns=list(_COLUMNS))
    return FitResult(model=model, history=history, best_epoch=best_epoch,
                     best_score=float(best_score), monitor=monitor, epochs_run=done,
                     train_seconds=seconds_before + time.perf_counter() - start)


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
