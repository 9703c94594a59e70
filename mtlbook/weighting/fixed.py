"""Fixed weights: a hand-chosen constant per task.

The combined loss is the weighted sum (linear scalarisation)

    L = Σ_k w_k · L_k,    w_k ≥ 0 fixed for the whole training,

so the gradient of every task is scaled by its weight. This is what many production systems
do: the weights come from a grid search on the validation set or from business priorities
(a purchase may be worth ten clicks). :class:`~mtlbook.weighting.EqualWeight` is the special
case ``w_k = 1``. Chapter 12.4.1 of the book uses it as the baseline of loss balancing.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ._per_task import add_extra, check_task_values, in_task_order, model_device, stack_losses
from .base import Weighting

__all__ = ["FixedWeights"]


class FixedWeights(Weighting):
    """Constant, hand-chosen weights: ``L = Σ_k w_k L_k``.

    Args:
        weights: ``{task name: weight}`` with a finite weight ``≥ 0`` for every task of the
            model (checked when training starts); at least one weight must be positive.

    Example:
        >>> from mtlbook.weighting import FixedWeights
        >>> FixedWeights({"click": 1.0, "purchase": 10.0}).weights
        {'click': 1.0, 'purchase': 10.0}
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        self._given = check_task_values("weights", weights)

    def setup(self, task_names, model) -> None:
        super().setup(task_names, model)
        values = in_task_order("weights", self._given, self.task_names)
        if not any(values):
            raise ValueError(f"every weight is 0, so no task would be trained: {self._given}")
        self._vector = torch.tensor(values, device=model_device(model))  # [n_tasks]

    def backward(self, losses, model, extra=None):
        values = stack_losses(losses, self.task_names)  # [n_tasks]
        total = add_extra((self._vector.to(values.dtype) * values).sum(), extra)
        total.backward()
        return total.detach()

    @property
    def weights(self) -> dict[str, float]:
        names = getattr(self, "task_names", tuple(self._given))
        return {name: self._given[name] for name in names}
