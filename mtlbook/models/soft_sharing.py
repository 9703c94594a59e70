"""Soft parameter sharing: separate networks tied by an L2 penalty.

Duong, Cohn, Bird & Cook ("Low Resource Dependency Parsing: Cross-lingual Parameter Sharing in a
Neural Network Parser", ACL 2015) tie the parser of a low-resource language to that of a
well-resourced one by penalising the squared L2 distance between their corresponding parameters.
Ma et al. (KDD 2018) adapt the idea as the "L2-Constrained" multi-task baseline of the MMoE paper:
task ``k`` has its own parameters ``θ_k`` and the training loss is
``Σ_k L_k(θ_k) + λ ‖θ_1 − θ_2‖²``. For ``T`` tasks this model sums over all pairs:

    ŷ_k = tower_k(f_k(embed_k(x))),
    L = Σ_k L_k + λ Σ_{a<b} ‖θ_a − θ_b‖²,    θ_k = (embed_k, f_k)

with ``f_k`` the task's bottom MLP (``hidden_units``) and ``tower_k`` its head (``tower_units``
plus the output layer). Only corresponding layers of the bottoms (and the embeddings) are tied;
the towers stay free, so ``λ`` moves the model from ``λ = 0``, independent networks (exactly
:class:`~mtlbook.models.SingleTask` with the default sizes), to ``λ → ∞``, where every bottom is
forced equal and the model becomes hard sharing (:class:`~mtlbook.models.SharedBottom` with
``bottom_units=hidden_units``). Tying the output layers too would force every task to make the
same prediction in that limit.

The penalty is computed per layer from the stacked weights ``W`` ``[T, ...]`` without a loop
over pairs, using ``Σ_{a<b} ‖W_a − W_b‖² = T Σ_t ‖W_t − W̄‖²`` (``W̄`` the mean over tasks).
:func:`mtlbook.fit` adds :meth:`SoftSharing.regularization` to the loss at every step.

Chapter 12.3.2 of the book sweeps ``λ`` and compares the parameter cost with hard sharing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .layers import InputLayer, ParallelMLP

__all__ = ["SoftSharing", "pairwise_squared_distance"]


def pairwise_squared_distance(stacked: torch.Tensor) -> torch.Tensor:
    """``Σ_{a<b} ‖W_a − W_b‖²`` over the first dimension of ``stacked`` ``[T, ...]``.

    Computed as ``T Σ_t ‖W_t − W̄‖²``, one pass over the tensor whatever the number of tasks.
    """
    centred = stacked - stacked.mean(dim=0, keepdim=True)  # [T, ...]
    return stacked.shape[0] * centred.pow(2).sum()


class SoftSharing(MultiTaskModel):
    """One network per task; corresponding layers pulled together by ``λ Σ_{a<b} ‖θ_a − θ_b‖²``.

    Args:
        schema: the data schema (``data.schema``).
        hidden_units: layer sizes of each task's bottom MLP; these layers are tied.
        tower_units: hidden layer sizes of each task's tower (the output layer is added); the
            towers are not tied.
        l2_lambda: strength ``λ`` of the penalty; ``0`` gives independent networks. The sum runs
            over all ``T(T−1)/2`` pairs of tasks, so the same ``λ`` pulls harder with more tasks.
        shared_embeddings: ``False`` (default): every task has its own embedding tables, tied
            by the penalty like the other layers, i.e. separate models tied by L2 (with
            categorical features the embeddings dominate the parameter count). ``True``: one
            embedding table shared by all tasks, so only the MLPs are separate and tied.
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer.
        seed: seed of the initial weights (``None``: use the global random state).

    The task networks start from independent random weights, as separate models would.
    """

    def __init__(
        self,
        schema: Schema,
        hidden_units: Sequence[int] = (64, 32),
        tower_units: Sequence[int] = (),
        l2_lambda: float = 1e-2,
        shared_embeddings: bool = False,
        embedding_dim: int = 8,
        dropout: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        hidden_units = _check_units("hidden_units", hidden_units)
        tower_units = tuple(tower_units)
        if tower_units:
            tower_units = _check_units("tower_units", tower_units)
        l2_lambda = float(l2_lambda)
        if not (math.isfinite(l2_lambda) and l2_lambda >= 0):
            raise ValueError(f"l2_lambda must be a finite number ≥ 0, got {l2_lambda}")
        self.l2_lambda = l2_lambda
        self.shared_embeddings = bool(shared_embeddings)
        n_tasks = len(schema.tasks)
        self.input = InputLayer(
            schema, embedding_dim, n_copies=1 if self.shared_embeddings else n_tasks
        )
        self.bottoms = ParallelMLP(
            n_tasks, self.input.output_dim, hidden_units, dropout=dropout, final_activation=True
        )
        self.towers = ParallelMLP(n_tasks, hidden_units[-1], (*tower_units, 1), dropout=dropout)
        self.reset_parameters(seed)

    def tied_parameters(self) -> dict[str, torch.Tensor]:
        """The tied tensors by name, each stacked over tasks as ``[tasks, ...]`` (views)."""
        tied: dict[str, torch.Tensor] = {}
        n_tasks = len(self.task_names)
        if not self.shared_embeddings and self.input.embedding is not None:
            # Copy t of the embedding table occupies rows t*total ... (t+1)*total - 1.
            table = self.input.embedding.weight
            tied["embedding"] = table.view(n_tasks, -1, table.shape[-1])  # [T, rows, dim]
        for i, (w, b) in enumerate(zip(self.bottoms.weights, self.bottoms.biases, strict=True)):
            tied[f"bottom/{i}/weight"] = w  # [T, in, out]
            tied[f"bottom/{i}/bias"] = b  # [T, 1, out]
        return tied

    def distance(self) -> torch.Tensor:
        """``Σ_{a<b} ‖θ_a − θ_b‖²`` over the tied parameters (the penalty before ``λ``)."""
        return torch.stack(
            [pairwise_squared_distance(t) for t in self.tied_parameters().values()]
        ).sum()

    def regularization(self) -> torch.Tensor:
        """``λ Σ_{a<b} ‖θ_a − θ_b‖²`` (a zero tensor, with no graph, when ``λ = 0``)."""
        if self.l2_lambda == 0:
            return torch.zeros((), device=self.towers.weights[0].device)
        return self.l2_lambda * self.distance()

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared embedding table with ``shared_embeddings=True``, else nothing.

        No other parameter is used by more than one task: the tasks interact only through the
        penalty, whose gradient :func:`mtlbook.fit` adds unweighted.
        """
        return list(self.input.parameters()) if self.shared_embeddings else []

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.input(batch)  # [tasks, batch, input_dim], or [batch, input_dim] when shared
        h = self.bottoms(x)  # [tasks, batch, hidden_units[-1]]
        out = self.towers(h).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
