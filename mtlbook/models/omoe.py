"""OMoE: One-gate Mixture-of-Experts, the baseline of Ma, Zhao, Yi, Chen, Hong and Chi (KDD 2018).

"Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts" compares
MMoE with this model: the same ``n`` experts, but a single softmax gate shared by every task,

    g(x) = softmax(W x + b) ∈ Δ^n,
    f(x) = Σ_{i=1..n} g(x)_i · E_i(x),
    ŷ_k = tower_k(f(x)),

so all tasks read the same mixture, as they read the same bottom in Shared-Bottom. The gap
between OMoE and MMoE measures what per-task gates buy (chapter 12.3.3 of the book).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .experts import SoftmaxGates, StackedExperts, mix
from .layers import InputLayer, ParallelMLP

__all__ = ["OMoE"]


class OMoE(MultiTaskModel):
    """Shared experts and one shared softmax gate; one tower per task.

    Args:
        schema: the data schema (``data.schema``).
        n_experts: number of experts ``n``.
        expert_units: layer sizes of each expert (ReLU after every layer).
        tower_units: hidden layer sizes of each task tower (the output layer is added).
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer of the experts and towers.
        seed: seed of the initial weights (``None``: use the global random state).
    """

    def __init__(self, schema: Schema, n_experts: int = 4, expert_units: Sequence[int] = (64,),
                 tower_units: Sequence[int] = (32,), embedding_dim: int = 8,
                 dropout: float = 0.0, seed: int | None = 0) -> None:
        super().__init__(schema)
        if not isinstance(n_experts, int) or n_experts < 1:
            raise ValueError(f"n_experts must be a positive integer, got {n_experts!r}")
        expert_units = _check_units("expert_units", expert_units)
        tower_units = _check_units("tower_units", tower_units) if tuple(tower_units) else ()
        self.input = InputLayer(schema, embedding_dim)
        self.experts = StackedExperts(self.input.output_dim, expert_units,
                                      [f"shared/{i}" for i in range(n_experts)], dropout=dropout)
        self.gate = SoftmaxGates(self.input.output_dim, torch.ones(1, n_experts, dtype=torch.bool))
        self.towers = ParallelMLP(len(schema.tasks), expert_units[-1], (*tower_units, 1),
                                  dropout=dropout)
        self.reset_parameters(seed)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The input layer, every expert and the gate: all tasks' losses depend on them."""
        return [*self.input.parameters(), *self.experts.parameters(), *self.gate.parameters()]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        self._clear_gates()
        x = self.input(batch)  # [batch, input_dim]
        experts = self.experts(x)  # [experts, batch, units]
        weights = self.gate(x)  # [batch, 1, experts]
        fused = mix(weights, experts)  # [1, batch, units]
        self._record_gate(0, "shared", self.experts.names, weights[:, 0])
        fused = fused.expand(len(self.task_names), -1, -1)  # [tasks, batch, units]
        out = self.towers(fused).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
