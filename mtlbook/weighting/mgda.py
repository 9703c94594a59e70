"""MGDA: multi-task learning as multi-objective optimisation (Sener & Koltun, "Multi-Task
Learning as Multi-Objective Optimization", NeurIPS 2018).

A step of the shared parameters that lowers every task's loss (or proves that none exists, a
Pareto-stationary point) is the minimum-norm point of the convex hull of the task gradients:

    α* = argmin_{α ∈ Δ_T} ‖Σ_i α_i g_i‖²,        Δ_T = {α ≥ 0, Σ_i α_i = 1}

and the shared parameters move along ``Σ_i α*_i g_i``. With ``M_ij = g_i · g_j`` the problem
only involves the ``T × T`` Gram matrix. For two tasks it has a closed form (the paper's
Algorithm 1, the weight of ``g_1``):

    α = clip( (g_2 − g_1) · g_2 / ‖g_1 − g_2‖², 0, 1 )

For more tasks the paper runs Frank–Wolfe (its Algorithm 2): pick the vertex
``t = argmin_r (Mα)_r``, find the exact line search between ``α`` and ``e_t`` with the
two-point closed form, repeat until the weights stop changing.

**MGDA-UB** (the paper's upper bound, Section 3.3) takes the gradients with respect to the shared
representation ``Z`` instead of the shared parameters: one backward pass to ``Z`` per task, not
through the whole shared network. The weights found there are applied to the losses on the
shared parameters.

Chapter 12.4.1 of the book (loss balancing) explains it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ._grads import (
    backward_split,
    global_gram,
    global_task_gradients,
    present_tasks,
    shared_and_specific,
    task_gradients,
)
from .base import Weighting

__all__ = ["MGDA", "min_norm_two", "min_norm_weights"]

_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def min_norm_two(v11: float, v12: float, v22: float, tie: float = 0.5) -> float:
    """The weight ``γ`` of ``v_1`` in ``argmin_γ ‖γ v_1 + (1 − γ) v_2‖²`` over ``[0, 1]``.

    Takes the inner products ``v11 = v_1·v_1``, ``v12 = v_1·v_2``, ``v22 = v_2·v_2`` and returns
    ``clip((v22 − v12) / (v11 + v22 − 2 v12), 0, 1)``, or ``tie`` when ``v_1 = v_2`` (then
    every ``γ`` is a solution).
    """
    denom = v11 + v22 - 2.0 * v12  # ‖v_1 − v_2‖²
    if not denom > 1e-12 * (v11 + v22):
        return tie
    return min(max((v22 - v12) / denom, 0.0), 1.0)


def min_norm_weights(gram: torch.Tensor, max_iter: int = 250, tol: float = 1e-5) -> torch.Tensor:
    """The weights ``α`` ``[T]`` (float64) of the minimum-norm point of the convex hull of ``T``
    vectors, from their Gram matrix ``gram`` ``[T, T]``.

    Closed form for ``T = 2``. For more vectors, Frank–Wolfe with the paper's exact line search,
    started, as in the official code, from the best two-vector solution (the paper's Algorithm 2
    starts from uniform weights; the pair is closer, and exact when the optimum lies on an edge
    of the simplex), and stopped after ``max_iter`` iterations or when ``α`` changes by less
    than ``tol`` (L1). The result lies in the simplex.
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(
            f"gram must be a non-empty square [T, T] matrix, got shape {tuple(gram.shape)}"
        )
    m = gram.detach().to("cpu", torch.float64).numpy()
    n = m.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    best = None
    for i, j in itertools.combinations(range(n), 2):
        a = min_norm_two(m[i, i], m[i, j], m[j, j])
        cost = a * a * m[i, i] + 2 * a * (1 - a) * m[i, j] + (1 - a) ** 2 * m[j, j]
        if best is None or cost < best[0]:
            best = (cost, i, j, a)
    assert best is not None  # n ≥ 2 here (n = 1 returned above): at least one pair
    _, i, j, a = best
    alpha = np.zeros(n)
    alpha[i], alpha[j] = a, 1.0 - a
    for _ in range(max_iter if n > 2 else 0):
        m_alpha = m @ alpha  # [T]
        t = int(np.argmin(m_alpha))
        # Line search between the current point Σ α_i g_i and the vertex g_t; ``tie=1``: the
        # vertex is the current point, nothing to gain.
        gamma = min_norm_two(float(alpha @ m_alpha), float(m_alpha[t]), float(m[t, t]), tie=1.0)
        new = gamma * alpha
        new[t] += 1.0 - gamma
        change = float(np.abs(new - alpha).sum())
        alpha = new
        if change < tol:
            break
    return torch.from_numpy(alpha)


class MGDA(Weighting):
    """The min-norm combination of the task gradients on the shared parameters.

    The shared parameters get ``Σ_i α_i g_i`` with ``α`` from :func:`min_norm_weights`; the
    task-specific parameters (towers) get the ordinary gradient of ``Σ_i L_i``, as in the paper's
    Algorithm 2 and in LibMTL (the regulariser ``extra`` is added unweighted to both).

    **Normalisation** (``normalization``, the official code's ``normalization_type``): before
    solving, each task gradient is divided by ``1`` (``"none"``, the paper's algorithm and the
    default), by its L2 norm (``"l2"``), by the task's loss (``"loss"``) or by both
    (``"loss+"``). As in the official code, the weights found on the normalised gradients are
    then applied to the raw gradients (LibMTL applies them to the normalised ones).

    **MGDA-UB** (``upper_bound=True``) needs the shared representation of the forward pass: the
    model's :meth:`~mtlbook.models.MultiTaskModel.shared_representation`, which
    :class:`~mtlbook.models.SharedBottom` records (its bottom's output); models that have no
    single shared representation (mixtures of experts, cross-stitch, ...) raise a
    ``ValueError``. The weights then multiply the losses in one more backward pass through the
    shared parameters.

    :attr:`weights` are the last step's ``α`` (non-negative, summing to 1).

    **Tasks without a gradient.** A task whose gradient is exactly zero in a step (a masked
    task with no labelled row in the batch) is left out of that step's problem and gets
    ``α = 0``; left in, it would make the minimum-norm point the zero vector.

    Args:
        normalization: ``"none"``, ``"l2"``, ``"loss"`` or ``"loss+"``.
        upper_bound: solve on the gradients of the shared representation (MGDA-UB).
        max_iter: Frank–Wolfe iterations at most (more than two tasks).
        tol: Frank–Wolfe stopping tolerance on the change of ``α``.

    Raises:
        ValueError: for a model without shared parameters (:meth:`setup`) or, with
            ``upper_bound=True``, without a shared representation (first step).
    """

    #: Averages the task gradients (or their Gram matrix) over the processes itself.
    distributed = "manual"
    sparse_gradients = False  # it flattens per-task gradients of the shared parameters

    #: The latest step's weights α.
    state_attributes = ("_alpha",)

    def __init__(
        self,
        normalization: str = "none",
        upper_bound: bool = False,
        max_iter: int = 250,
        tol: float = 1e-5,
    ) -> None:
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"MGDA: normalization must be one of {_NORMALIZATIONS}, got {normalization!r}"
            )
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"MGDA: max_iter must be a positive integer, got {max_iter!r}")
        self.normalization = normalization
        self.upper_bound = bool(upper_bound)
        self.max_iter = max_iter
        self.tol = float(tol)

    @property
    def name(self) -> str:
        return "MGDA-UB" if self.upper_bound else "MGDA"

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        self._shared, self._specific = shared_and_specific(model, self.name)
        n = len(self.task_names)
        self._alpha = torch.full((n,), 1.0 / n, dtype=torch.float64)

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        values = torch.stack(list(losses.values()))  # [T]
        if self.upper_bound:
            grads = self._representation_gradients(values, model)  # [T, batch·units]
            gram = global_gram(grads)  # [T, T]
        else:
            grads = global_task_gradients(list(values), self._shared)  # [T, P]
            gram = grads @ grads.T  # [T, T]
        gram = gram.detach().to("cpu", torch.float64)
        present = present_tasks(gram)  # [T]; tasks without a gradient sit the step out
        self._alpha = torch.zeros(len(values), dtype=torch.float64)
        if bool(present.any()):
            sub = gram[present][:, present]
            scale = self._normalizers(sub, values[present.to(values.device)])
            self._alpha[present] = min_norm_weights(
                sub / torch.outer(scale, scale), self.max_iter, self.tol
            )
        alpha = self._alpha.to(grads.device, grads.dtype)
        if self.upper_bound:
            return backward_split(values, self._shared, self._specific, extra, shared_weights=alpha)
        return backward_split(
            values, self._shared, self._specific, extra, shared_grad=alpha @ grads
        )

    def _normalizers(self, gram: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        norms = gram.diagonal().clamp_min(0).sqrt()  # ‖g_i‖, [T]
        loss = values.detach().to("cpu", torch.float64)
        scale = {"none": torch.ones_like(norms), "l2": norms, "loss": loss, "loss+": loss * norms}[
            self.normalization
        ]
        return scale.clamp_min(torch.finfo(torch.float64).tiny)

    def _representation_gradients(self, values: torch.Tensor, model: nn.Module) -> torch.Tensor:
        getter = getattr(model, "shared_representation", None)
        rep = getter() if callable(getter) else None
        if rep is None or not rep.requires_grad:
            raise ValueError(
                f"MGDA-UB needs the shared representation of the forward pass, and "
                f"{type(model).__name__} records none (model.shared_representation() is "
                f"{'None' if rep is None else 'a tensor without gradient'}). Only models with "
                "one representation that every task reads have it (SharedBottom); use "
                "MGDA(upper_bound=False) with this model"
            )
        try:
            return task_gradients(list(values), [rep], allow_unused=False)  # [T, batch·units]
        except RuntimeError as err:
            raise ValueError(
                f"MGDA-UB: the representation {type(model).__name__} recorded is not part of "
                "this step's losses; the model must record it in every forward pass"
            ) from err

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self._alpha.tolist(), strict=True))
