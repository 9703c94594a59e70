"""IMTL-G: impartial multi-task learning, the gradient part (Liu, Li, Kuang, Xue, Chen, Yang,
Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021).

IMTL-G looks for the combination ``g = Σ_t α_t g_t`` (with ``Σ_t α_t = 1``) of the task
gradients whose projections onto every task's unit gradient ``u_t = g_t / ‖g_t‖`` are equal:

    g · u_1 = g · u_t      for t = 2 … T

so the shared parameters move by the same amount along every task's own direction, whatever
the size of the tasks' gradients. The conditions are linear in ``α`` and have a closed form.
Indexing as in the paper's Algorithm 1 (task 1 is the reference): with the ``(T − 1) × P``
matrices whose rows are

    D_t = g_1 − g_t,    U_t = u_1 − u_t        (t = 2 … T)

    α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹,     α_1 = 1 − Σ_{t≥2} α_t

(``g = g_1 − α_{2:T} D`` and the conditions read ``g Uᵀ = 0``). The weights may be negative;
they always sum to 1.

Chapter 12.4 of the book (loss balancing) explains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ._grads import backward_split, global_task_gradients, shared_and_specific
from .base import Weighting

__all__ = ["IMTL", "imtl_weights"]


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
    """IMTL-G on the shared parameters.

    The shared parameters get ``Σ_t α_t g_t`` with ``α`` from :func:`imtl_weights`, the gradients
    taken with respect to the shared parameters (as LibMTL does by default); the task-specific
    parameters (towers) get the ordinary gradient of ``Σ_t L_t`` as in the paper, where each
    task's own parameters follow its own loss (the regulariser ``extra`` is added unweighted to
    both). The loss part of the paper, IMTL-L (learned loss scales), is a loss-based strategy
    and not part of this class.

    :attr:`weights` are the last step's ``α`` (summing to 1, possibly negative).

    Raises:
        ValueError: in :meth:`setup`, for a model without shared parameters.
    """

    #: Averages the task gradients over the processes itself (see Weighting.distributed).
    distributed = "manual"

    #: The latest step's weights α.
    state_attributes = ("_alpha",)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        self._shared, self._specific = shared_and_specific(model, "IMTL")
        n = len(self.task_names)
        self._alpha = torch.full((n,), 1.0 / n, dtype=torch.float64)

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module,
                 extra: torch.Tensor | None = None) -> torch.Tensor:
        values = torch.stack(list(losses.values()))  # [T]
        grads = global_task_gradients(list(values), self._shared)  # [T, P]
        self._alpha = imtl_weights(grads)
        alpha = self._alpha.to(grads.device, grads.dtype)
        return backward_split(values, self._shared, self._specific, extra,
                              shared_grad=alpha @ grads)

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self._alpha.tolist(), strict=True))
