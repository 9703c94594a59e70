"""CGC: Customized Gate Control (Tang, Liu, Zhao and Gong, RecSys 2020).

The single-level form of PLE, from "Progressive Layered Extraction (PLE): A Novel Multi-Task
Learning (MTL) Model for Personalized Recommendations". Task ``k`` owns experts
``E_{k,1} … E_{k,m_k}``, all tasks share ``E_{s,1} … E_{s,m_s}``, and task ``k``'s gate mixes
only its own and the shared experts:

    S_k(x) = [E_{k,1}(x), …, E_{k,m_k}(x), E_{s,1}(x), …, E_{s,m_s}(x)],
    g_k(x) = softmax(W_k x),     f_k(x) = Σ_i g_k(x)_i · S_k(x)_i,     ŷ_k = tower_k(f_k(x)).

Unlike MMoE, no task can draw on another task's experts, which keeps each task's own knowledge
apart from the shared one. CGC is :class:`~mtlbook.models.PLE` with one level (and hence no
shared gate); the code is PLE's. Chapter 12.3.4 of the book explains it with PLE (chapter
12.3.5 meets it again as the one-level PLE).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..data import Schema
from .ple import PLE

__all__ = ["CGC"]


class CGC(PLE):
    """Task-specific and shared experts, one gate per task over its own and the shared experts.

    Args:
        schema: the data schema (``data.schema``).
        n_shared_experts: experts shared by all tasks.
        n_task_experts: experts owned by each task.
        expert_units: layer sizes of each expert (ReLU after every layer).
        tower_units: hidden layer sizes of each task tower (the output layer is added).
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer of the experts and towers.
        seed: seed of the initial weights (``None``: use the global random state).
    """

    def __init__(
        self,
        schema: Schema,
        n_shared_experts: int = 2,
        n_task_experts: int = 1,
        expert_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (32,),
        embedding_dim: int = 8,
        dropout: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        # PLE.__init__ ends with self.reset_parameters(seed).
        super().__init__(
            schema,
            n_levels=1,
            n_shared_experts=n_shared_experts,
            n_task_experts=n_task_experts,
            expert_units=expert_units,
            tower_units=tower_units,
            embedding_dim=embedding_dim,
            dropout=dropout,
            seed=seed,
        )
