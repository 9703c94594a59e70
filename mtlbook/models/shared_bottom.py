"""Shared-Bottom: hard parameter sharing (Caruana, *Machine Learning* 1997).

The oldest and still most common multi-task architecture. All tasks share the input layer
(embeddings) and a bottom network; each task ``k`` has its own tower on top:

    h = f_shared(embed(x)),    ŷ_k = tower_k(h)

Sharing reduces parameters and acts as a regulariser when the tasks are related, but every task
pulls the same bottom in its own direction, so weakly related or conflicting tasks can hurt each
other (negative transfer, the "seesaw"). Chapter 12.3.1 of the book explains and measures this;
the model is the Shared-Bottom baseline of Ma et al. (KDD 2018) and Tang et al. (RecSys 2020).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .layers import InputLayer, ParallelMLP

__all__ = ["SharedBottom"]


class SharedBottom(MultiTaskModel):
    """Shared embeddings and bottom MLP, one tower per task.

    Args:
        schema: the data schema (``data.schema``).
        bottom_units: layer sizes of the shared bottom MLP.
        tower_units: hidden layer sizes of each task tower (the output layer is added).
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer.
        seed: seed of the initial weights (``None``: use the global random state).
    """

    def __init__(
        self,
        schema: Schema,
        bottom_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (32,),
        embedding_dim: int = 8,
        dropout: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        bottom_units = _check_units("bottom_units", bottom_units)
        tower_units = tuple(tower_units)
        if tower_units:
            tower_units = _check_units("tower_units", tower_units)
        self.input = InputLayer(schema, embedding_dim)
        self.bottom = ParallelMLP(
            1, self.input.output_dim, bottom_units, dropout=dropout, final_activation=True
        )
        self.towers = ParallelMLP(
            len(schema.tasks), bottom_units[-1], (*tower_units, 1), dropout=dropout
        )
        self.reset_parameters(seed)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.input.parameters(), *self.bottom.parameters()]

    def representation(self, batch: Batch) -> torch.Tensor:
        """The shared representation ``h`` ``[batch, bottom_units[-1]]``."""
        return self.bottom(self.input(batch))[0]  # [batch, bottom_units[-1]]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        h = self.representation(batch)  # [batch, units]
        self._last_representation = h  # read by shared_representation() (MGDA-UB)
        out = self.towers(h).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
