"""Single-task baseline: one independent network per task.

Every comparison in the book needs the answer to "what if each task had its own model?".
``SingleTask`` holds, for each task ``k``, its own embeddings and its own MLP
``ŷ_k = MLP_k(embed_k(x))``; no parameter is shared, so the gradient of task ``k``'s loss only
reaches network ``k``. Training the networks together with the summed loss is therefore the
same as training them one by one (with Adam each parameter has its own step size), except that
:func:`mtlbook.fit` picks one best epoch for all tasks. All networks run as one batched op.

Used as the reference in chapter 12.1 and throughout chapter 12.3 of the book.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .layers import InputLayer, ParallelMLP

__all__ = ["SingleTask"]


class SingleTask(MultiTaskModel):
    """An independent network per task behind the common multi-task interface.

    Args:
        schema: the data schema (``data.schema``).
        hidden_units: hidden layer sizes of each task's network.
        embedding_dim: size of each categorical field's embedding (each task has its own).
        dropout: dropout after each hidden layer.
        seed: seed of the initial weights (``None``: use the global random state).
    """

    def __init__(
        self,
        schema: Schema,
        hidden_units: Sequence[int] = (64, 32),
        embedding_dim: int = 8,
        dropout: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        hidden_units = _check_units("hidden_units", hidden_units)
        n_tasks = len(schema.tasks)
        self.input = InputLayer(schema, embedding_dim, n_copies=n_tasks)
        self.networks = ParallelMLP(
            n_tasks, self.input.output_dim, (*hidden_units, 1), dropout=dropout
        )
        self.reset_parameters(seed)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.input(batch)  # [tasks, batch, input_dim]
        if x.dim() == 2:  # a single task: the input layer returns [batch, input_dim]
            x = x.unsqueeze(0)
        out = self.networks(x).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
