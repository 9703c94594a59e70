"""CAGrad: conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu, "Conflict-Averse
Gradient Descent for Multi-task Learning", NeurIPS 2021).

Plain gradient descent follows the average gradient ``g_0 = (1/T) Σ_i g_i`` and may raise some
task's loss. CAGrad looks, within a ball around ``g_0``, for the update ``d`` that maximises the
worst task's improvement:

    max_d min_i g_i · d      subject to  ‖d − g_0‖ ≤ c ‖g_0‖

Its dual is a ``T``-dimensional problem over the simplex, with ``g_w = Σ_i w_i g_i`` and
``φ = c² ‖g_0‖²``:

    w* = argmin_{w ∈ Δ_T}  g_wᵀ g_0 + √φ ‖g_w‖,          d = g_0 + (√φ / ‖g_w*‖) g_w*

``c = 0`` gives back the average gradient; larger ``c`` moves towards the min-norm (MGDA)
direction. As in the official code, ``d`` is divided by ``1 + c²``.

Chapter 12.4.1 of the book (loss balancing) explains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn

from ._grads import backward_split, global_task_gradients, present_tasks, shared_and_specific
from .base import Weighting

__all__ = ["CAGrad", "cagrad_direction"]


def _dual_weights(gram: np.ndarray, c: float) -> np.ndarray:
    """``w*`` of the dual, by SLSQP on the simplex from the uniform weights (the official code's
    solver). The Gram matrix is divided by its mean diagonal first: both terms of the objective
    scale alike, so the minimiser is the same and the solver's tolerances stay meaningful
    whatever the gradients' scale."""
    n = gram.shape[0]
    scale = float(np.mean(np.diag(gram)))
    if not scale > 0:
        return np.full(n, 1.0 / n)
    a = gram / scale
    b = np.full(n, 1.0 / n)  # g_0 = G^T b
    ab = a @ b  # [T]
    sqrt_phi = c * float(np.sqrt(max(b @ ab, 0.0)))  # c ‖g_0‖

    def objective(w: np.ndarray) -> float:
        return float(w @ ab + sqrt_phi * np.sqrt(w @ a @ w + 1e-8))

    def jacobian(w: np.ndarray) -> np.ndarray:
        return ab + sqrt_phi * (a @ w) / np.sqrt(w @ a @ w + 1e-8)

    result = minimize(
        objective,
        b.copy(),
        jac=jacobian,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=({"type": "eq", "fun": lambda w: 1.0 - w.sum()},),
    )
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()


def cagrad_direction(grads: torch.Tensor, c: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """The CAGrad update ``d / (1 + c²)`` ``[P]`` for the task gradients ``grads`` ``[T, P]``,
    and the coefficients ``[T]`` of the task gradients in it (``d / (1 + c²) = Σ_i coef_i g_i``).

    With ``c = 0`` the update is the average gradient ``g_0``.
    """
    n = grads.shape[0]
    uniform = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if c == 0:
        coef = uniform
    else:
        gram = (grads @ grads.T).detach().to("cpu", torch.float64)  # [T, T]
        w = torch.from_numpy(_dual_weights(gram.numpy(), c))  # [T]
        g0_norm = float(uniform @ gram @ uniform) ** 0.5  # ‖g_0‖
        gw_norm = max(float(w @ gram @ w), 0.0) ** 0.5  # ‖g_w‖
        lam = c * g0_norm / (gw_norm + 1e-8)  # √φ / ‖g_w‖
        coef = (uniform + lam * w) / (1.0 + c * c)
    coef = coef.to(grads.device, grads.dtype)
    return coef @ grads, coef


class CAGrad(Weighting):
    """Conflict-averse combination of the task gradients on the shared parameters.

    The shared parameters get ``T · d / (1 + c²)``: the official code multiplies the update by
    the number of tasks "to match the sum loss", so that with ``c = 0`` CAGrad is exactly equal
    weighting (the sum of the task gradients). The task-specific parameters (towers) get the
    ordinary gradient of ``Σ_i L_i``, as in the official code (the regulariser ``extra`` is
    added unweighted to both).

    The dual's ``T``-dimensional problem is solved by scipy's SLSQP on the simplex from the
    uniform weights, like the official ``scipy.optimize.minimize`` call (here with the exact
    gradient of the objective).

    :attr:`weights` are the coefficients of the task gradients in the shared update of the last
    step, ``(1 + T·λ·w_i) / (1 + c²)`` with ``λ = √φ / ‖g_w‖`` (all 1 when ``c = 0``).

    **Tasks without a gradient.** A task whose gradient is exactly zero in a step (a masked
    task with no labelled row in the batch) is left out of that step: ``g_0``, the ball and
    the scaling by ``T`` use the other tasks only, and its weight is 0.

    Args:
        c: radius of the ball around the average gradient, relative to its norm (0.4, the
            value of the official NYU-v2 runs).

    Raises:
        ValueError: in :meth:`setup`, for a model without shared parameters.
    """

    #: Averages the task gradients over the processes itself (see Weighting.distributed).
    distributed = "manual"
    sparse_gradients = False  # it flattens per-task gradients of the shared parameters

    #: The latest step's coefficients.
    state_attributes = ("_coef",)

    def __init__(self, c: float = 0.4) -> None:
        if not c >= 0:
            raise ValueError(f"CAGrad: c must be ≥ 0, got {c!r}")
        self.c = float(c)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        self._shared, self._specific = shared_and_specific(model, "CAGrad")
        self._coef = torch.ones(len(self.task_names))

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        values = torch.stack(list(losses.values()))  # [T]
        grads = global_task_gradients(list(values), self._shared)  # [T, P]
        present = present_tasks(grads @ grads.T)  # [T]; the others sit the step out
        n = int(present.sum())
        self._coef = torch.zeros(len(values), device=grads.device, dtype=grads.dtype)
        direction = torch.zeros_like(grads[0])  # [P]
        if n:
            direction, coef = cagrad_direction(grads[present], self.c)  # [P], [n]
            self._coef[present] = (n * coef).detach()
        return backward_split(
            values, self._shared, self._specific, extra, shared_grad=n * direction
        )

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self._coef.cpu().tolist(), strict=True))
