"""Training: :func:`fit` trains any model with any loss weighting; :class:`FitResult` keeps the
history. Model selection and early stopping look at the validation split only."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

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
) -> FitResult:
    """Train ``model`` on ``train``, select the best epoch on ``valid``.

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

    Raises:
        FloatingPointError: when a task's loss becomes NaN or inf (names the task and step).
        ValueError: for bad arguments or data that do not match the model.
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

    dev = resolve_device(device)
    model.to(dev)
    weighting.setup(model.task_names, model)
    params = list(model.parameters()) + list(weighting.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
    loader = train.loader(batch_size, shuffle=True, seed=seed)
    rows: list[tuple] = []
    best_score, best_epoch, best_state, stale = None, 0, None, 0
    step = 0
    start = time.perf_counter()

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for cb in callbacks:
            cb.on_train_begin(model, weighting)
        bar = tqdm(range(1, epochs + 1), desc=type(model).__name__, disable=not progress,
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
            bar.set_postfix({monitor: f"{score:.4f}", "best": best_epoch})
            if early_stopping is not None and stale >= early_stopping:
                break
        bar.close()

    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history = pd.DataFrame(rows, columns=list(_COLUMNS))
    return FitResult(model=model, history=history, best_epoch=best_epoch,
                     best_score=float(best_score), monitor=monitor, epochs_run=epoch,
                     train_seconds=time.perf_counter() - start)
