"""MMoE: Multi-gate Mixture-of-Experts (Ma, Zhao, Yi, Chen, Hong and Chi, KDD 2018).

"Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts".
The shared bottom of hard parameter sharing is replaced by ``n`` experts ``E_1 … E_n`` (small
ReLU networks) and every task ``k`` gets its own softmax gate over them:

    g_k(x) = softmax(W_k x + b_k) ∈ Δ^n,
    f_k(x) = Σ_{i=1..n} g_k(x)_i · E_i(x),
    ŷ_k = tower_k(f_k(x)).

Each task learns its own mixture, so weakly related tasks can use different experts while
related ones share them; with one expert the gate is identically 1 and MMoE is Shared-Bottom.
Chapter 12.3.3 of the book explains the model and re-runs the paper's synthetic experiment.

All experts are one stacked weight tensor per layer (one GEMM), all gates one linear layer,
the towers one batched op over tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .experts import SoftmaxGates, StackedExperts, mix
from .layers import InputLayer, ParallelMLP

__all__ = ["MMoE"]


class MMoE(MultiTaskModel):
    """Shared experts, one softmax gate and one tower per task.

    Args:
        schema: the data schema (``data.schema``).
        n_experts: number of experts ``n``.
        expert_units: layer sizes of each expert (ReLU after every layer).
        tower_units: hidden layer sizes of each task tower (the output layer is added).
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer of the experts and towers.
        seed: seed of the initial weights (``None``: use the global random state).
    """

    #: One softmax gate shared by every task instead of one per task (:class:`OMoE`).
    one_gate: bool = False

    def __init__(
        self,
        schema: Schema,
        n_experts: int = 4,
        expert_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (32,),
        embedding_dim: int = 8,
        dropout: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        if not isinstance(n_experts, int) or n_experts < 1:
            raise ValueError(f"n_experts must be a positive integer, got {n_experts!r}")
        expert_units = _check_units("expert_units", expert_units)
        tower_units = _check_units("tower_units", tower_units) if tuple(tower_units) else ()
        n_tasks = len(schema.tasks)
        n_gates = 1 if self.one_gate else n_tasks
        self.input = InputLayer(schema, embedding_dim)
        self.experts = StackedExperts(
            self.input.output_dim,
            expert_units,
            [f"shared/{i}" for i in range(n_experts)],
            dropout=dropout,
        )
        self.gates = SoftmaxGates(
            self.input.output_dim, torch.ones(n_gates, n_experts, dtype=torch.bool)
        )
        self.towers = ParallelMLP(n_tasks, expert_units[-1], (*tower_units, 1), dropout=dropout)
        self.reset_parameters(seed)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The input layer and every expert: all tasks' losses depend on them (each gate is
        one task's own)."""
        return [*self.input.parameters(), *self.experts.parameters()]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        self._clear_gates()
        x = self.input(batch)  # [batch, input_dim]
        weights = self.gates(x)  # [batch, gates, experts]
        experts = self.experts(x)  # [experts, batch, units]
        fused = mix(weights, experts)  # [gates, batch, units]
        for k, gate in enumerate(["shared"] if self.one_gate else self.task_names):
            self._record_gate(0, gate, self.experts.names, weights[:, k])
        if self.one_gate:  # OMoE: every task reads the one mixture
            fused = fused.expand(len(self.task_names), -1, -1)  # [tasks, batch, units]
        out = self.towers(fused).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
