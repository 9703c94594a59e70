"""IMTL: impartial multi-task learning (Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards
Impartial Multi-task Learning", ICLR 2021).

The method has two parts, which the paper combines (its "hybrid" IMTL):

**IMTL-L, the loss part.** Every task ``t`` gets a learnable log-scale ``s_t`` (initially 0) and
its loss is replaced by

    L̂_t = e^{s_t} L_t − s_t.

``s_t`` is trained with the model; its gradient ``e^{s_t} L_t − 1`` vanishes when the scaled loss
``e^{s_t} L_t`` is 1, so every task's scaled loss is driven to the same value, whatever the scale
of its raw loss. The model's parameters see ``e^{s_t} ∇L_t``.

**IMTL-G, the gradient part.** It looks for the combination ``g = Σ_t α_t g_t`` (with
``Σ_t α_t = 1``) of the task gradients on the shared parameters whose projections onto every
task's unit gradient ``u_t = g_t / ‖g_t‖`` are equal:

    g · u_1 = g · u_t      for t = 2 … T

so the shared parameters move by the same amount along every task's own direction, whatever
the size of the tasks' gradients. The conditions are linear in ``α`` and have a closed form.
Indexing as in the paper's Algorithm 1 (task 1 is the reference): with the ``(T − 1) × P``
matrices whose rows are

    D_t = g_1 − g_t,    U_t = u_1 − u_t        (t = 2 … T)

    α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹,     α_1 = 1 − Σ_{t≥2} α_t

(``g = g_1 − α_{2:T} D`` and the conditions read ``g Uᵀ = 0``). The weights may be negative;
they always sum to 1. In the hybrid method ``g_t`` is the gradient of the scaled loss
``e^{s_t} L_t``, as in the paper's Algorithm 1 and LibMTL's ``IMTL``.

Chapter 12.4.1 of the book (loss balancing) explains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ._grads import (
    average_gradients,
    backward_split,
    global_task_gradients,
    present_tasks,
    shared_and_specific,
)
from ._per_task import add_extra, model_device
from .base import Weighting

__all__ = ["IMTL", "imtl_weights"]

_MODES = ("hybrid", "grad", "loss")


def imtl_weights(grads: torch.Tensor) -> torch.Tensor:
    """The IMTL-G weights ``α`` ``[T]`` (float64) of the task gradients ``grads`` ``[T, P]``.

    Computed from the ``T × T`` Gram matrix: ``g_a · u_b = (g_a · g_b) / ‖g_b‖``. The
    ``(T − 1) × (T − 1)`` system is solved with a pseudo-inverse, which is its inverse whenever
    it is invertible (it is singular when two gradients point the same way; any solution is then
    as good). A zero gradient has a zero unit vector.
    """
    n = grads.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    gram = (grads @ grads.T).detach().to("cpu", torch.float64)  # [T, T]
    norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    proj = gram / norms  # proj[a, b] = g_a · u_b, [T, T]
    g1_u = proj[0, 0] - proj[0, 1:]  # g_1 Uᵀ, [T-1]
    d_u = proj[0, 0] - proj[0, 1:] - proj[1:, :1] + proj[1:, 1:]  # D Uᵀ, [T-1, T-1]
    rest = g1_u @ torch.linalg.pinv(d_u)  # α_{2:T}, [T-1]
    return torch.cat([(1.0 - rest.sum()).reshape(1), rest])


class IMTL(Weighting):
    """Impartial multi-task learning: IMTL-L, IMTL-G or both (the default, the paper's method).

    Args:
        mode: ``"hybrid"`` (default): the scaled losses ``e^{s_t} L_t − s_t`` and IMTL-G on
            their gradients; ``"grad"``: IMTL-G on the raw losses' gradients; ``"loss"``:
            the scaled losses, summed (a loss-based strategy, no per-task gradients).

    **Which parameters get what.** With IMTL-G (``"grad"``, ``"hybrid"``) the shared parameters
    (:meth:`~mtlbook.models.MultiTaskModel.shared_parameters`) get ``Σ_t α_t g_t``; the
    task-specific ones (towers) the ordinary gradient of the (scaled) losses' sum, as in the
    paper, where each task's own parameters follow its own loss. The model's regulariser
    ``extra`` is added unweighted. The log-scales ``s_t`` are the strategy's
    :meth:`parameters`, trained by :func:`mtlbook.fit`'s optimiser with the model.

    **Tasks without a gradient.** A task whose gradient on the shared parameters is exactly
    zero in a step (a masked task with no labelled row in the batch) is left out of that step's
    IMTL-G problem and gets ``α = 0``.

    :attr:`weights` are the factors the last step applied to each task's raw gradient on the
    shared parameters: ``α_t e^{s_t}`` (hybrid), ``α_t`` (grad; they sum to 1 and may be
    negative) or ``e^{s_t}`` (loss). :attr:`loss_scales` are the ``e^{s_t}``.

    Raises:
        ValueError: for an unknown ``mode``; in :meth:`setup`, for a model without shared
            parameters (modes ``"grad"`` and ``"hybrid"``).
    """

    #: Averages the task gradients over the processes itself (see Weighting.distributed).
    distributed = "manual"
    sparse_gradients = False  # it flattens per-task gradients of the shared parameters

    #: The latest step's weights α (the log-scales are the strategy's parameters).
    state_attributes = ("_alpha",)

    def __init__(self, mode: str = "hybrid") -> None:
        if mode not in _MODES:
            raise ValueError(f"IMTL: mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode

    @property
    def name(self) -> str:
        return {"hybrid": "IMTL", "grad": "IMTL-G", "loss": "IMTL-L"}[self.mode]

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        n = len(self.task_names)
        if self.mode != "loss":
            self._shared, self._specific = shared_and_specific(model, self.name)
        self._alpha = torch.full((n,), 1.0 / n if self.mode == "grad" else 1.0, dtype=torch.float64)
        self._log_scale = (
            None
            if self.mode == "grad"
            else nn.Parameter(torch.zeros(n, device=model_device(model)))
        )

    def parameters(self) -> list[nn.Parameter]:
        """The log-scales ``s_t`` of IMTL-L (none in mode ``"grad"``)."""
        scale = getattr(self, "_log_scale", None)
        return [] if scale is None else [scale]

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        values = torch.stack(list(losses.values()))  # [T]
        if self._log_scale is not None:
            s = self._log_scale.to(values.dtype)
            scaled = s.exp() * values  # e^{s_t} L_t, [T]
            regularised = scaled - s  # L̂_t, [T]: its gradient in s_t is e^{s_t} L_t − 1
        if self.mode == "loss":
            assert self._log_scale is not None  # a parameter in every mode but "grad"
            total = add_extra(regularised.sum(), extra)
            total.backward()
            # Several processes: average here (this strategy bypasses DDP's hooks).
            average_gradients(
                [*(p for p in model.parameters() if p.requires_grad), self._log_scale]
            )
            return total.detach()
        on_model = values if self._log_scale is None else scaled  # what IMTL-G balances
        grads = global_task_gradients(list(on_model), self._shared)  # [T, P]
        present = present_tasks(grads @ grads.T).to(grads.device)  # [T]
        alpha = torch.zeros(len(values), dtype=torch.float64)
        if bool(present.any()):
            alpha[present.cpu()] = imtl_weights(grads[present])
        self._alpha = alpha
        if self._log_scale is None:
            return backward_split(
                values,
                self._shared,
                self._specific,
                extra,
                shared_grad=alpha.to(grads.device, grads.dtype) @ grads,
            )
        # The log-scales are trained like the towers, on the sum of the L̂_t.
        return backward_split(
            regularised,
            self._shared,
            [*self._specific, self._log_scale],
            extra,
            shared_grad=alpha.to(grads.device, grads.dtype) @ grads,
        )

    @property
    def loss_scales(self) -> dict[str, float]:
        """``e^{s_t}`` of IMTL-L (all 1 in mode ``"grad"``)."""
        scale = (
            torch.ones(len(self.task_names))
            if self._log_scale is None
            else self._log_scale.detach().exp().cpu()
        )
        return dict(zip(self.task_names, scale.tolist(), strict=True))

    @property
    def weights(self) -> dict[str, float]:
        scale = torch.tensor(list(self.loss_scales.values()), dtype=torch.float64)
        factors = {"grad": self._alpha, "loss": scale, "hybrid": self._alpha * scale}
        return dict(zip(self.task_names, factors[self.mode].tolist(), strict=True))
