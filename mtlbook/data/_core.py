"""Core types: :class:`TaskSpec`, :class:`Schema`, :class:`Batch` and :func:`parse_task_spec`.

A :class:`TaskSpec` names one prediction task and its kind, a :class:`Schema` is what a model
needs to know about a data set's columns and tasks, and a :class:`Batch` is a mini-batch of
tensors as models consume it (:class:`~mtlbook.data.MultiTaskData` holds the data themselves).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["TASK_KINDS", "Batch", "Schema", "TaskSpec"]

TASK_KINDS = ("binary", "regression")


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task.

    Args:
        name: the task's name, used as the key of labels, outputs and metrics.
        kind: ``"binary"`` (0/1 labels, log-loss) or ``"regression"`` (real labels, MSE).

    Whether a task is defined only on a subspace is a property of the data (``data.masks``),
    not of the task: a model built for one schema serves data with or without masks.
    """

    name: str
    kind: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"task name must be a non-empty string, got {self.name!r}")
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"task {self.name!r} has unknown kind {self.kind!r}; expected one of {TASK_KINDS}"
            )


@dataclass(frozen=True)
class Schema:
    """What a model needs to know about the inputs and outputs of a data set.

    Attributes:
        dense: names of the dense (float) feature columns, in order.
        categorical: names of the categorical feature columns, in order.
        cardinalities: number of distinct values of each categorical column (indices are
            ``0 .. cardinality - 1``).
        tasks: the task specifications, in order.
        encoder: the :class:`~mtlbook.data.FrameEncoder` that turns raw frames into these
            inputs (set for data built from a DataFrame; ``None`` otherwise). It travels with
            a model built on the schema, so :func:`mtlbook.save` stores it; it takes no part
            in comparing two schemas.
    """

    dense: tuple[str, ...]
    categorical: tuple[str, ...]
    cardinalities: tuple[int, ...]
    tasks: tuple[TaskSpec, ...]
    encoder: Any = field(default=None, compare=False, repr=False)

    @property
    def n_dense(self) -> int:
        return len(self.dense)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task named {name!r}; tasks are {list(self.task_names)}")


@dataclass
class Batch:
    """A mini-batch as models consume it.

    ``dense`` is ``[batch, n_dense]`` float32 (or ``None``), ``categorical`` is
    ``[batch, n_categorical]`` int64 (or ``None``); ``labels`` and ``masks`` map task names to
    ``[batch]`` tensors (a task without a mask has no entry in ``masks``).
    """

    dense: torch.Tensor | None
    categorical: torch.Tensor | None
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        block = self.dense if self.dense is not None else self.categorical
        return 0 if block is None else int(block.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """Return the batch with every tensor moved to ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            dense=move(self.dense),
            categorical=move(self.categorical),
            labels={k: v.to(device, non_blocking=True) for k, v in self.labels.items()},
            masks={k: v.to(device, non_blocking=True) for k, v in self.masks.items()},
        )


def parse_task_spec(name: str, spec: Any) -> tuple[str, str | None]:
    """``(kind, mask column or None)`` of one entry of a ``tasks=`` mapping: a kind string, or
    ``{"kind": ..., "mask": column}``.

    Example:
        >>> from mtlbook.data._core import parse_task_spec
        >>> parse_task_spec("buy", {"kind": "binary", "mask": "click"})
        ('binary', 'click')
    """
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, Mapping):
        if set(spec) - {"kind", "mask"} or "kind" not in spec:
            raise ValueError(
                f"task {name!r}: expected {{'kind': ..., 'mask': ...}}, got {dict(spec)!r}"
            )
        return spec["kind"], spec.get("mask")
    raise ValueError(f"task {name!r}: expected a kind string or a dict, got {spec!r}")
