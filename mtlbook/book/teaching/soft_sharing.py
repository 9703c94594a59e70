"""Soft parameter sharing written the plain way (chapter 12.3.2).

:class:`TeachingSoftSharing` is :class:`~mtlbook.models.SoftSharing` as the chapter states it:
one whole network per task (its own input layer, bottom and tower), and the penalty
``λ Σ_{a<b} ‖θ_a − θ_b‖²`` summed pair by pair and layer by layer over the tied parameters
``θ_k`` (the task's embedding tables and bottom layers; the towers stay free). The library
computes the same sum without a loop over pairs, as ``T Σ_t ‖θ_t − θ̄‖²``.

Every task has its own embedding tables, so ``forward`` takes the batch, not one shared
``model.input(batch)``. With ``shared_embeddings=True`` all tasks hold the same
:class:`TeachingInput`, and its terms of the penalty are zero. Dropout (off by default in the
library) is left out: compare the two in ``eval()`` mode.
"""

from __future__ import annotations

from itertools import combinations, pairwise

import torch
from torch import nn

from ...models import SoftSharing
from .shared_bottom import TeachingInput, copy_parallel_mlp

__all__ = ["TeachingSoftSharing"]


class TeachingSoftSharing(nn.Module):
    """Network k: x_k = input_k(batch), ŷ_k = t_k(f_k(x_k)); penalty λ Σ_{a<b} ‖θ_a − θ_b‖²."""

    def __init__(self, inputs, input_dim, hidden_units, tower_units, task_names, l2_lambda):
        super().__init__()
        self.task_names, self.l2_lambda = list(task_names), l2_lambda
        self.inputs = nn.ModuleList(inputs)  # one TeachingInput per task (tied)
        sizes = [input_dim, *hidden_units]  # f_k: every layer followed by ReLU (tied)
        self.bottoms = nn.ModuleList(
            nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes)) for _ in task_names
        )
        sizes = [hidden_units[-1], *tower_units, 1]  # t_k: the task's tower (free)
        self.towers = nn.ModuleList(
            nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes)) for _ in task_names
        )

    def forward(self, batch) -> dict[str, torch.Tensor]:  # batch: an mtlbook Batch
        out = {}
        for k, task in enumerate(self.task_names):  # T separate networks
            h = self.inputs[k](batch)  # x_k: task k's own embeddings + dense, [batch, input_dim]
            for layer in self.bottoms[k]:
                h = torch.relu(layer(h))  # f_k(x_k)
            for i, layer in enumerate(self.towers[k]):
                h = layer(h)
                if i < len(self.towers[k]) - 1:
                    h = torch.relu(h)
            out[task] = h.squeeze(-1)  # [batch]
        return out

    def tied(self, k: int) -> list[torch.Tensor]:
        """θ_k: task k's embedding tables and bottom weights and biases, in a fixed order."""
        return [*self.inputs[k].parameters(), *self.bottoms[k].parameters()]

    def regularization(self) -> torch.Tensor:
        """λ Σ_{a<b} ‖θ_a − θ_b‖², layer by layer."""
        total = self.bottoms[0][0].weight.new_zeros(())
        for a, b in combinations(range(len(self.task_names)), 2):  # every pair a < b
            for theta_a, theta_b in zip(self.tied(a), self.tied(b), strict=True):
                total = total + (theta_a - theta_b).pow(2).sum()  # ‖θ_a − θ_b‖² of one layer
        return self.l2_lambda * total

    @classmethod
    def from_library(cls, model: SoftSharing) -> TeachingSoftSharing:
        """The same sizes as ``model``, every weight copied from it."""
        n_tasks = len(model.task_names)
        if model.shared_embeddings:  # one input layer, the same module for every task
            inputs = [TeachingInput.from_library(model.input)] * n_tasks
        else:  # copy k of the library's table is task k's input layer
            inputs = [TeachingInput.from_library(model.input, copy=k) for k in range(n_tasks)]
        teaching = cls(
            inputs,
            model.input.output_dim,
            model.bottoms.units,
            model.towers.units[:-1],
            model.task_names,
            model.l2_lambda,
        )
        for k in range(n_tasks):
            copy_parallel_mlp(model.bottoms, k, teaching.bottoms[k])
            copy_parallel_mlp(model.towers, k, teaching.towers[k])
        return teaching
