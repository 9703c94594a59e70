"""PCGrad: gradient surgery (Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for
Multi-Task Learning", NeurIPS 2020).

Two task gradients conflict when their inner product is negative. For each task ``i`` in turn,
PCGrad visits every other task ``j`` in a random order and, if they conflict, removes from
``g_i`` its component along the other task's original gradient ``g_j``:

    g_i^PC ← g_i                                                     (a copy)
    for j ≠ i in random order:
        if g_i^PC · g_j < 0:   g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j

and the shared parameters are updated with ``Σ_i g_i^PC``. Gradients that do not conflict are
left as they are, so without conflict PCGrad is equal weighting. After the projection onto
``g_j``'s normal plane, ``g_i^PC · g_j = 0``: for two tasks both projected gradients are
orthogonal to the other task's gradient.

Chapter 12.4.2 of the book (loss balancing, negative transfer) explains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ._grads import backward_split, global_task_gradients, present_tasks, shared_and_specific
from .base import Weighting

__all__ = ["PCGrad", "project_conflicting"]


def project_conflicting(
    grads: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The projected gradients ``g_i^PC``, ``[T, P]``, of the task gradients ``grads`` ``[T, P]``.

    Each row is projected onto the normal planes of the ORIGINAL gradients of the other tasks
    it conflicts with, visited in a random order drawn from ``generator`` (independently for
    every task; ``None`` uses the global random state).
    """
    n_tasks = grads.shape[0]
    sq_norms = (grads * grads).sum(dim=1)  # ‖g_j‖², [T]
    projected = grads.clone()
    for i in range(n_tasks):
        others = [j for j in range(n_tasks) if j != i]
        order = torch.randperm(len(others), generator=generator).tolist()
        g = projected[i]  # [P], a view: updated in place
        for k in order:
            j = others[k]
            dot = torch.dot(g, grads[j])
            # Only where they conflict (dot < 0); a zero gradient g_j never conflicts.
            coef = torch.where(
                dot < 0,
                dot / sq_norms[j].clamp_min(torch.finfo(g.dtype).tiny),
                torch.zeros_like(dot),
            )
            g.sub_(coef * grads[j])
    return projected


class PCGrad(Weighting):
    """Project conflicting task gradients on the shared parameters, then add them.

    The task-specific parameters (towers) get the ordinary gradient of ``Σ_i L_i + extra``
    (``extra``, the model's regulariser, is also added unweighted to the shared gradient), as in
    LibMTL. The random orders come from the strategy's own ``torch.Generator`` seeded with
    ``seed`` at every :meth:`setup` (every :func:`mtlbook.fit`): runs are reproducible and the
    global random state is never touched.

    :attr:`weights` are ``‖g_i^PC‖ / ‖g_i‖`` on the last step: 1 for a task whose gradient was
    not changed, less when the surgery removed part of it (each projection can only shorten a
    gradient). A task whose gradient is exactly zero in a step (a masked task with no labelled
    row in the batch) sits the step out: no other task is projected against it, it draws no
    visiting order, and it reports 1.

    Args:
        seed: seed of the random visiting orders.

    Raises:
        ValueError: in :meth:`setup`, for a model without shared parameters.
    """

    #: Averages the task gradients over the processes itself (see Weighting.distributed).
    distributed = "manual"
    sparse_gradients = False  # it flattens per-task gradients of the shared parameters

    #: The visiting orders' generator and the latest step's weights.
    state_attributes = ("_generator", "_weights")

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        self._shared, self._specific = shared_and_specific(model, "PCGrad")
        self._generator = torch.Generator().manual_seed(self.seed)
        self._weights = torch.ones(len(self.task_names))

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        values = torch.stack(list(losses.values()))  # [T]
        grads = global_task_gradients(list(values), self._shared)  # [T, P]
        present = present_tasks(grads @ grads.T)  # [T]; the others sit the step out
        projected = project_conflicting(grads[present], self._generator)  # [present, P]
        before, after = grads[present].norm(dim=1), projected.norm(dim=1)  # [present]
        self._weights = torch.ones(len(values))
        self._weights[present.cpu()] = (after / before).detach().cpu()
        return backward_split(
            values, self._shared, self._specific, extra, shared_grad=projected.sum(dim=0)
        )

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self._weights.cpu().tolist(), strict=True))
