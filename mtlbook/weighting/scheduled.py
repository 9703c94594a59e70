"""Scheduled weights: the dynamic loss weight of PLE.

Tang, Liu, Zhao & Gong, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations", RecSys 2020, joint loss optimisation section.
Instead of a constant weight per task the paper lets each weight grow or decay geometrically:

    ω_{k,t} = ω_{k,0} × γ_k^t,        L_t = Σ_k ω_{k,t} · L_k,

with ω_{k,0} the initial weight of task ``k`` and γ_k its update ratio (γ_k < 1 decays,
γ_k > 1 grows, γ_k = 1 keeps the weight fixed). In the paper ``t`` is the training epoch; here
``t`` counts finished epochs by default (``t = 0`` during the first epoch), and
``per="step"`` makes it count optimiser steps instead (``t = 0`` on the first step), for
schedules that must change within an epoch. Chapter 12.4.1 of the book compares it with the
other strategies.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ._per_task import (
    add_extra,
    check_number,
    check_task_values,
    in_task_order,
    model_device,
    stack_losses,
)
from .base import Weighting

__all__ = ["ScheduledWeights"]


class ScheduledWeights(Weighting):
    """PLE's schedule ``ω_{k,t} = ω_{k,0} · γ_k^t``; ``t`` counts epochs or steps.

    Args:
        initial_weights: ``{task: ω_{k,0}}``, finite and ``≥ 0`` for every task of the model;
            ``None`` starts every task at 1.
        ratios: γ_k, one positive number for every task or ``{task: γ_k}`` for each.
        per: ``"epoch"`` (``t`` = finished epochs, as in the paper) or ``"step"``
            (``t`` = finished optimiser steps).

    :attr:`weights` are those of the latest step (of ``t = 0`` before training), so the
    history of :func:`mtlbook.fit` shows at epoch ``e`` the weights ``ω_{k,0} · γ_k^{e-1}``
    that trained epoch ``e`` (with ``per="epoch"``).

    Example:
        >>> from mtlbook.weighting import ScheduledWeights
        >>> s = ScheduledWeights({"click": 1.0, "purchase": 4.0}, ratios={"click": 1.0,
        ...                      "purchase": 0.5})
        >>> s.weights_at(2)
        {'click': 1.0, 'purchase': 1.0}
    """

    #: The current ``t``, the finished epochs and steps, and the current weights.
    state_attributes = ("_t", "_epochs", "_steps", "_vector")

    def __init__(
        self,
        initial_weights: Mapping[str, float] | None = None,
        ratios: Mapping[str, float] | float = 1.0,
        per: str = "epoch",
    ) -> None:
        if per not in ("epoch", "step"):
            raise ValueError(f"per must be 'epoch' or 'step', got {per!r}")
        self.per = per
        self._initial = (
            None
            if initial_weights is None
            else check_task_values("initial_weights", initial_weights)
        )
        if isinstance(ratios, Mapping):
            self._ratios: dict[str, float] | float = check_task_values(
                "ratios", ratios, positive=True
            )
        else:
            self._ratios = check_number("ratios", ratios, positive=True)
        self._t = 0

    def setup(self, task_names, model) -> None:
        super().setup(task_names, model)
        initial = self._in_order(self.task_names)
        if not any(w for w, _ in initial):
            raise ValueError(
                f"every initial weight is 0, so no task would be trained: {self._initial}"
            )
        self._device = model_device(model)
        self._t, self._epochs, self._steps = 0, 0, 0
        self._vector = self._weights_tensor(0)

    def _in_order(self, names) -> list[tuple[float, float]]:
        """``(ω_{k,0}, γ_k)`` of each task in ``names``."""
        initial = (
            [1.0] * len(names)
            if self._initial is None
            else in_task_order("initial_weights", self._initial, names)
        )
        ratios = (
            [self._ratios] * len(names)
            if isinstance(self._ratios, float)
            else in_task_order("ratios", self._ratios, names)
        )
        return list(zip(initial, ratios, strict=True))

    def weights_at(self, t: int) -> dict[str, float]:
        """The weights ``ω_{k,0} · γ_k^t`` at time ``t`` (finished epochs or steps)."""
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"t must be a non-negative integer, got {t!r}")
        names = getattr(self, "task_names", None)
        if names is None:
            if self._initial is None:
                raise RuntimeError(
                    "the task names are not known yet: give initial_weights "
                    "or call setup(task_names, model) first (mtlbook.fit does)"
                )
            names = tuple(self._initial)
        return {
            name: omega0 * gamma**t
            for name, (omega0, gamma) in zip(names, self._in_order(names), strict=True)
        }

    def _weights_tensor(self, t: int) -> torch.Tensor:
        return torch.tensor(
            list(self.weights_at(t).values()), dtype=torch.float64, device=self._device
        )  # [n_tasks]

    def backward(self, losses, model, extra=None):
        values = stack_losses(losses, self.task_names)  # [n_tasks]
        t = self._epochs if self.per == "epoch" else self._steps
        if t != self._t:
            self._t, self._vector = t, self._weights_tensor(t)
        self._steps += 1
        total = add_extra((self._vector.to(values.dtype) * values).sum(), extra)
        total.backward()
        return total.detach()

    def epoch_end(self, epoch, train_losses) -> None:
        self._epochs += 1

    @property
    def weights(self) -> dict[str, float]:
        return self.weights_at(self._t)
