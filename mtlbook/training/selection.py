"""Model selection, early stopping and the history: one component for every training loop.

After every epoch a run writes its rows of the history (:func:`epoch_rows`) and a
:class:`Selection` reads the validation score it monitors from them, keeps the best epoch and
counts the epochs without improvement. :func:`~mtlbook.training.fit` uses one per run,
:func:`~mtlbook.training.fit_population` one per member: both select, stop and record alike.
Only the validation split is ever looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..data import MultiTaskData
from ..metrics import LOWER_IS_BETTER

__all__ = ["HISTORY_COLUMNS", "Selection", "check_monitor", "epoch_rows"]

#: The columns of a run's history.
HISTORY_COLUMNS = ("epoch", "split", "task", "metric", "value")


def check_monitor(monitor: str, data: MultiTaskData) -> bool:
    """Validate ``monitor`` (``"loss"`` or ``"TASK:METRIC"``) for ``data``; whether a higher
    value is better.

    Example:
        >>> import mtlbook as mb
        >>> data = mb.simulate_funnel(200, seed=0)
        >>> check_monitor("purchase:auc", data), check_monitor("loss", data)
        (True, False)
    """
    if monitor == "loss":
        return False
    parts = monitor.split(":")
    if len(parts) != 2 or parts[0] not in data.task_names:
        raise ValueError(
            f"monitor must be 'loss' or 'TASK:METRIC' with TASK in "
            f"{list(data.task_names)}, got {monitor!r}"
        )
    kind = data.schema.task(parts[0]).kind
    allowed = {"binary": ("auc", "gauc", "logloss", "loss"), "regression": ("mse", "mae", "loss")}[
        kind
    ]
    if parts[1] not in allowed:
        raise ValueError(
            f"metric {parts[1]!r} is not computed for {kind} task {parts[0]!r}; "
            f"choose one of {allowed}"
        )
    return parts[1] not in LOWER_IS_BETTER


def epoch_rows(
    epoch: int,
    train_losses: Mapping[str, float],
    train_total: float,
    weights: Mapping[str, float],
    valid_metrics: Iterable[tuple[str, str, float]],
) -> list[tuple[Any, ...]]:
    """The history rows ``(epoch, split, task, metric, value)`` of one epoch.

    Split ``train``: each task's mean training loss, the combined loss (task ``all``) and each
    task's weight. Split ``valid``: every metric of ``valid_metrics`` (``(task, metric, value)``,
    as :func:`~mtlbook.metrics.evaluate` gives them), then each task's validation loss (its
    log-loss or MSE, metric ``loss``) and their sum (task ``all``).
    """
    rows: list[tuple[Any, ...]] = [(epoch, "train", t, "loss", v) for t, v in train_losses.items()]
    rows.append((epoch, "train", "all", "loss", train_total))
    rows += [(epoch, "train", t, "weight", float(w)) for t, w in weights.items()]
    metrics = list(valid_metrics)
    rows += [(epoch, "valid", t, m, v) for t, m, v in metrics]
    task_losses = [(t, v) for t, m, v in metrics if m in ("logloss", "mse")]
    rows += [(epoch, "valid", t, "loss", v) for t, v in task_losses]
    rows.append((epoch, "valid", "all", "loss", float(np.sum([v for _, v in task_losses]))))
    return rows


class Selection:
    """The best epoch so far by one validation score, and when to stop.

    Args:
        monitor: ``"loss"`` (the sum of the validation losses) or ``"TASK:METRIC"``.
        higher_is_better: whether a larger score is better (:func:`check_monitor`).
        early_stopping: stop after this many epochs without improvement (``None``: never).

    Example:
        >>> selection = Selection("loss", higher_is_better=False, early_stopping=2)
        >>> [selection.update(epoch, [(epoch, "valid", "all", "loss", score)])
        ...  for epoch, score in [(1, 0.9), (2, 0.7), (3, 0.8), (4, 0.75)]]
        [True, True, False, False]
        >>> selection.best_epoch, selection.best_score, selection.stopped
        (2, 0.7, True)
    """

    def __init__(
        self, monitor: str, higher_is_better: bool, early_stopping: int | None = None
    ) -> None:
        self.monitor = monitor
        self.higher_is_better = higher_is_better
        self.early_stopping = early_stopping
        self.task, self.metric = ("all", "loss") if monitor == "loss" else monitor.split(":")
        self.best_score: float | None = None
        self.best_epoch = 0
        self.stale = 0

    def score(self, rows: Iterable[tuple[Any, ...]]) -> float:
        """The monitored value among an epoch's history rows."""
        for _, split, task, metric, value in rows:
            if split == "valid" and task == self.task and metric == self.metric:
                return float(value)
        raise ValueError(
            f"monitor {self.monitor!r} was not computed on the validation split "
            "(is the task defined on any validation sample?)"
        )

    def update(self, epoch: int, rows: Iterable[tuple[Any, ...]]) -> bool:
        """Take the epoch's rows into account; whether the epoch is the best so far."""
        score = self.score(rows)
        improved = self.best_score is None or (
            score > self.best_score if self.higher_is_better else score < self.best_score
        )
        if improved:
            self.best_score, self.best_epoch, self.stale = score, epoch, 0
        else:
            self.stale += 1
        return improved

    @property
    def stopped(self) -> bool:
        """Whether early stopping ends the run."""
        return self.early_stopping is not None and self.stale >= self.early_stopping
