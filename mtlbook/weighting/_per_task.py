"""Helpers shared by the loss-based strategies: per-task arguments and per-task losses."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch

from ..utils import model_device as model_device


def check_number(argument: str, value: float, *, positive: bool = False) -> float:
    """``value`` as a float, which must be finite and ``≥ 0`` (``> 0`` when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(
            f"{argument} must be finite and {'> 0' if positive else '>= 0'}, got {value}"
        )
    return value


def check_task_values(
    argument: str, values: Mapping[str, float], *, positive: bool = False
) -> dict[str, float]:
    """Validate a ``{task name: number}`` argument with :func:`check_number`. Task names are
    checked against the model in :func:`in_task_order`, once the model is known."""
    if not isinstance(values, Mapping) or not values:
        raise TypeError(
            f"{argument} must be a non-empty mapping {{task name: number}}, got {values!r}"
        )
    checked = {}
    for task, value in values.items():
        if not isinstance(task, str):
            raise TypeError(f"{argument} must be keyed by task name (str), got key {task!r}")
        checked[task] = check_number(f"{argument}[{task!r}]", value, positive=positive)
    return checked


def in_task_order(
    argument: str, values: Mapping[str, float], task_names: Sequence[str]
) -> list[float]:
    """The values of ``values`` in the model's task order; every task must be named, and
    only the model's tasks."""
    missing = [t for t in task_names if t not in values]
    unknown = [t for t in values if t not in task_names]
    if missing or unknown:
        problems = ([f"gives no value for task(s) {missing}"] if missing else []) + (
            [f"names task(s) {unknown} that the model does not have"] if unknown else []
        )
        raise ValueError(
            f"{argument} {' and '.join(problems)}; the model's tasks are {list(task_names)}"
        )
    return [values[t] for t in task_names]


def stack_losses(losses: Mapping[str, torch.Tensor], task_names: Sequence[str]) -> torch.Tensor:
    """The per-task losses as one ``[n_tasks]`` tensor in the model's task order."""
    if len(losses) != len(task_names) or any(t not in losses for t in task_names):
        raise ValueError(
            f"expected one loss for each task {list(task_names)}, got losses for {list(losses)}"
        )
    return torch.stack([losses[t] for t in task_names])  # [n_tasks]


def add_extra(total: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """``total + extra`` (the model's regulariser, unweighted), or ``total`` without one."""
    return total if extra is None else total + extra
