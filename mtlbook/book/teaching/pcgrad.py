"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning") written the plain way
(chapter 12.4.2).

:class:`TeachingPCGrad` does, with Python loops over tasks and one vector per task, what
:class:`~mtlbook.weighting.PCGrad` does on a ``[T, P]`` matrix: take each task's gradient of
the shared parameters, remove from it the component along every other task's gradient it
conflicts with (``g_i · g_j < 0``), visiting the other tasks in a random order, and give the
shared parameters the SUM of the projected gradients; the task-specific parameters get the
plain gradient of ``Σ_i L_i``. Its random orders come from a ``torch.Generator`` seeded like
the library's (one ``randperm`` of the other tasks per task, tasks in order), so under the same
seed both visit the tasks in the same order. Left out: the model's regulariser (``extra``,
which the library adds unweighted) and training on several processes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ...models import MultiTaskModel

__all__ = ["TeachingPCGrad"]


class TeachingPCGrad:
    """Project each task's gradient onto the normal plane of the ones it conflicts with, then
    add them: ``d = Σ_i g_i^PC`` on the shared parameters."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)  # the visiting orders

    def backward(self, losses: Mapping[str, torch.Tensor], model: MultiTaskModel) -> None:
        """Leave PCGrad's gradients in the ``.grad`` of ``model``'s parameters."""
        shared = list(model.shared_parameters())
        ids = {id(p) for p in shared}
        specific = [p for p in model.parameters() if id(p) not in ids]
        grads = []  # g_i = ∇_θ L_i on the shared parameters θ, one flat vector per task
        for loss in losses.values():
            parts = torch.autograd.grad(loss, shared, retain_graph=True)
            grads.append(torch.cat([part.reshape(-1) for part in parts]))  # [P]
        grads = [g for g in grads if g.any()]  # a task without gradient this step sits out

        d = torch.zeros_like(grads[0])  # d = Σ_i g_i^PC
        for i, g_i in enumerate(grads):
            g = g_i.clone()  # g_i^PC starts as g_i
            others = [j for j in range(len(grads)) if j != i]
            for k in torch.randperm(len(others), generator=self.generator).tolist():
                g_j = grads[others[k]]  # the other task's ORIGINAL gradient
                dot = torch.dot(g, g_j)
                if dot < 0:  # conflict: remove the component along g_j
                    g = g - dot / torch.dot(g_j, g_j) * g_j
            d = d + g

        offset = 0  # the shared parameters get d, cut back into their shapes
        for p in shared:
            p.grad = d[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        total = torch.stack(list(losses.values())).sum()  # the towers: ∇ Σ_i L_i
        torch.autograd.backward(total, inputs=specific)
