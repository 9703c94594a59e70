"""PLE: Progressive Layered Extraction (Tang, Liu, Zhao and Gong, RecSys 2020).

"Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for Personalized
Recommendations". MMoE lets every task mix every expert; PLE separates *task-specific* experts
from *shared* experts, so that a task's own knowledge is not pulled around by the other tasks
(the "seesaw" of negative transfer), and stacks several such extraction levels.

At level ``l`` (``l = 0 … L−1``) task ``k`` owns experts ``E_{k,1} … E_{k,m_k}`` and all tasks
share ``E_{s,1} … E_{s,m_s}``. Task ``k``'s gate mixes its own and the shared experts,

    S_k^l = [E_{k,1}^l, …, E_{k,m_k}^l, E_{s,1}^l, …, E_{s,m_s}^l],
    g_k^l = softmax(W_k^l q_k^{l−1}),      f_k^l = Σ_i g_k^l(·)_i · S_k^l(·)_i,

and below the top level a shared gate mixes *all* experts of the level,

    g_s^l = softmax(W_s^l q_s^{l−1}),      f_s^l = Σ_i g_s^l(·)_i · [S_1^l, …, S_K^l, shared]_i.

The inputs of level ``l > 0`` are the fused outputs of level ``l − 1``: task ``k``'s experts and
gate read ``q_k^{l−1} = f_k^{l−1}``, the shared experts and the shared gate read
``q_s^{l−1} = f_s^{l−1}`` (at level 0 all read the embedded input ``x``). The top level has no
shared gate, and ``ŷ_k = tower_k(f_k^{L−1})``. One level alone is CGC (Customized Gate Control,
:class:`~mtlbook.models.CGC`). Chapter 12.3.4 of the book explains both.

Vectorisation: in a level, every expert (task-specific and shared) is one stacked weight tensor
per layer and one (batched) matrix multiply — above level 0 each expert first picks its input
row out of ``[tasks + 1, batch, units]``; the task gates of the level are one linear layer whose
logits for the experts a gate may not use are masked to ``-inf`` before the softmax, the shared
gate another; the mixtures are one batched product.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .experts import SoftmaxGates, StackedExperts, mix
from .layers import InputLayer, ParallelMLP

__all__ = ["PLE", "ExtractionLevel"]


class ExtractionLevel(nn.Module):
    """One PLE extraction level (a CGC layer): task-specific and shared experts and their gates.

    Experts are ordered task by task, then the shared ones; the gates are one per task
    (:attr:`gates`), then the shared gate (:attr:`shared_gate`, below the top level only). The
    input is ``[batch, in_dim]`` (level 0: every expert and gate reads it) or ``[tasks + 1,
    batch, in_dim]`` (the level below's outputs, tasks then shared). The output is ``[gates,
    batch, units]`` and the ``[batch, gates, experts]`` gate weights.

    The task gates and the shared gate are separate parameters because they are shared
    differently: the shared gate feeds the next level's shared experts and so reaches every
    task, while a task's gate only reaches the tasks its own experts reach
    (:meth:`PLE.shared_parameters`).

    Args:
        in_dim: input size.
        expert_units: layer sizes of each expert.
        task_names: the tasks, in order.
        n_task_experts: experts owned by each task.
        n_shared_experts: experts shared by all tasks.
        shared_gate: whether the level has a shared gate (every level but the top one).
        dropout: dropout after each expert layer.
    """

    def __init__(
        self,
        in_dim: int,
        expert_units: Sequence[int],
        task_names: Sequence[str],
        n_task_experts: int,
        n_shared_experts: int,
        shared_gate: bool,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n_tasks = len(task_names)
        names = [f"{t}/{i}" for t in task_names for i in range(n_task_experts)]
        names += [f"shared/{i}" for i in range(n_shared_experts)]
        sources = [k for k in range(n_tasks) for _ in range(n_task_experts)]
        sources += [n_tasks] * n_shared_experts
        self.experts = StackedExperts(
            in_dim,
            expert_units,
            names,
            sources=sources,
            groups=(n_tasks * n_task_experts, n_shared_experts),
            dropout=dropout,
        )
        n_specific = n_tasks * n_task_experts
        allowed = torch.zeros(n_tasks, len(names), dtype=torch.bool)
        for k in range(n_tasks):
            allowed[k, k * n_task_experts : (k + 1) * n_task_experts] = True  # its own experts
            allowed[k, n_specific:] = True  # the shared experts
        self.gates = SoftmaxGates(in_dim, allowed)
        # The shared gate mixes every expert of the level.
        self.shared_gate = (
            SoftmaxGates(in_dim, torch.ones(1, len(names), dtype=torch.bool))
            if shared_gate
            else None
        )
        gate_list = [self.gates] + ([self.shared_gate] if self.shared_gate is not None else [])
        self.gate_names = (*task_names, "shared")[: n_tasks + int(shared_gate)]
        self.gate_experts = tuple(
            tuple(names[i] for i in gates.experts_of(g))
            for gates in gate_list
            for g in range(gates.n_gates)
        )
        self.n_tasks, self.n_task_experts = n_tasks, n_task_experts

    def expert_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The task experts' and the shared experts' parameters (either may be empty)."""
        groups = list(self.experts.groups)  # groups of size 0 are left out
        task = list(groups.pop(0).parameters()) if self.n_task_experts else []
        return task, [p for g in groups for p in g.parameters()]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        experts = self.experts(x)  # [experts, batch, units]
        if x.dim() == 2:  # level 0: every gate reads x
            task_input, shared_input = x, x
        else:  # the task gates read their task's row, the shared gate the shared row
            task_input, shared_input = x[: self.n_tasks], x[self.n_tasks]
        weights = self.gates(task_input)  # [batch, tasks, experts]
        if self.shared_gate is not None:
            shared = self.shared_gate(shared_input)  # [batch, 1, experts]
            weights = torch.cat([weights, shared], dim=1)  # [batch, tasks + 1, experts]
        return mix(weights, experts), weights  # [gates, batch, units]

    def per_gate(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """Each gate's detached ``[batch, n_g]`` weights over the experts it may use, in the
        order of :attr:`gate_names`, from the ``[batch, gates, experts]`` weights."""
        out = list(self.gates.per_gate(weights[:, : self.n_tasks]))
        if self.shared_gate is not None:
            out += self.shared_gate.per_gate(weights[:, self.n_tasks :])
        return out


class PLE(MultiTaskModel):
    """Progressive Layered Extraction: ``n_levels`` extraction levels, then one tower per task.

    Args:
        schema: the data schema (``data.schema``).
        n_levels: number of extraction levels ``L`` (1 is CGC).
        n_shared_experts: shared experts per level (at least 1 when ``n_levels > 1``: the
            shared path carries the information between levels).
        n_task_experts: experts owned by each task, per level.
        expert_units: layer sizes of each expert (ReLU after every layer).
        tower_units: hidden layer sizes of each task tower (the output layer is added).
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer of the experts and towers.
        seed: seed of the initial weights (``None``: use the global random state).
    """

    def __init__(
        self,
        schema: Schema,
        n_levels: int = 2,
        n_shared_experts: int = 2,
        n_task_experts: int = 1,
        expert_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (32,),
        embedding_dim: int = 8,
        dropout: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        name = type(self).__name__
        for arg, value, least in (
            ("n_levels", n_levels, 1),
            ("n_shared_experts", n_shared_experts, 0),
            ("n_task_experts", n_task_experts, 0),
        ):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{arg} must be an integer ≥ {least}, got {value!r}")
        if n_shared_experts + n_task_experts < 1:
            raise ValueError(f"{name} needs experts: n_shared_experts + n_task_experts ≥ 1")
        if n_levels > 1 and n_shared_experts < 1:
            raise ValueError(
                f"{name} with {n_levels} levels needs n_shared_experts ≥ 1: the "
                "shared experts carry the shared gate's output to the next level"
            )
        expert_units = _check_units("expert_units", expert_units)
        tower_units = _check_units("tower_units", tower_units) if tuple(tower_units) else ()
        self.input = InputLayer(schema, embedding_dim)
        in_dims = [self.input.output_dim] + [expert_units[-1]] * (n_levels - 1)
        self.levels = nn.ModuleList(
            ExtractionLevel(
                in_dims[level],
                expert_units,
                self.task_names,
                n_task_experts,
                n_shared_experts,
                shared_gate=level < n_levels - 1,
                dropout=dropout,
            )
            for level in range(n_levels)
        )
        self.towers = ParallelMLP(
            len(schema.tasks), expert_units[-1], (*tower_units, 1), dropout=dropout
        )
        self.reset_parameters(seed)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter all tasks' losses depend on, from the input towards the towers.

        The input layer, and at each level ``l = 0 … L − 1``: the shared experts; the shared
        gate (below the top); the task experts below the top, which the shared gate mixes into
        the next level's shared input; and, for ``l < L − 2``, the task gates, whose output the
        next level's (then shared) task experts read. The top level's task experts and gates,
        and the towers, belong to one task each. So CGC (one level) shares the input and the
        shared experts only.
        """
        params = list(self.input.parameters())
        top = len(self.levels) - 1
        for index, level in enumerate(cast("Iterable[ExtractionLevel]", self.levels)):
            task_experts, shared_experts = level.expert_parameters()
            if index < top:
                params += task_experts
            params += shared_experts
            if index < top - 1:
                params += list(level.gates.parameters())
            if level.shared_gate is not None:
                params += list(level.shared_gate.parameters())
        return params

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        self._clear_gates()
        h = self.input(batch)  # [batch, input_dim]
        for index, level in enumerate(cast("Iterable[ExtractionLevel]", self.levels)):
            h, weights = level(h)  # [tasks (+1 shared below the top), batch, units]
            for gate, experts, w in zip(
                level.gate_names, level.gate_experts, level.per_gate(weights), strict=True
            ):
                self._record_gate(index, gate, experts, w)
        out = self.towers(h).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
