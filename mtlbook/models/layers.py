"""Building blocks shared by the models: the input layer and batched ("parallel") MLPs.

:class:`ParallelMLP` runs ``P`` independent MLPs of identical shape as one batched matrix
multiply per layer: experts of a mixture, or one tower per task, are never a Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from ..data import Batch, Schema

__all__ = ["InputLayer", "ParallelMLP", "sparse_embeddings"]


class InputLayer(nn.Module):
    """Embed every categorical field and concatenate the dense block.

    All fields share one embedding table with per-field offsets, so the look-up is a single
    ``nn.Embedding`` call. With ``n_copies > 1`` the layer holds that many independent tables
    (one per task, for models that share nothing) and returns ``[n_copies, batch, output_dim]``.

    Args:
        schema: the data schema (``data.schema``).
        embedding_dim: size of each field's embedding.
        n_copies: number of independent copies of the embeddings; ``1`` returns ``[batch, dim]``.
    """

    offsets: torch.Tensor  # buffer: the first index of each field in the shared table

    def __init__(self, schema: Schema, embedding_dim: int = 8, n_copies: int = 1) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be ≥ 1, got {embedding_dim}")
        self.n_dense = schema.n_dense
        self.n_fields = len(schema.categorical)
        self.embedding_dim = embedding_dim
        self.n_copies = n_copies
        total = int(sum(schema.cardinalities))
        offsets = torch.tensor([0, *schema.cardinalities[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets[: self.n_fields], persistent=False)
        self.total_categories = total
        self.embedding = nn.Embedding(total * n_copies, embedding_dim) if self.n_fields else None
        self.output_dim = self.n_dense + self.n_fields * embedding_dim
        if self.output_dim == 0:
            raise ValueError("the schema has no features")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.05)

    def check(self, batch: Batch) -> None:
        """Raise a clear error if ``batch`` does not have the schema this layer was built for."""
        got_dense = 0 if batch.dense is None else int(batch.dense.shape[-1])
        got_fields = 0 if batch.categorical is None else int(batch.categorical.shape[-1])
        if got_dense != self.n_dense or got_fields != self.n_fields:
            raise ValueError(
                f"the batch does not match the model's schema: the model was built for "
                f"{self.n_dense} dense and {self.n_fields} categorical columns, the batch has "
                f"{got_dense} dense and {got_fields} categorical columns; build the model with "
                "this data's schema (Model(data.schema))"
            )

    def forward(self, batch: Batch) -> torch.Tensor:
        self.check(batch)
        parts = []
        if self.embedding is not None:
            assert batch.categorical is not None  # check() matched the categorical columns
            index = batch.categorical + self.offsets  # [batch, fields]
            if self.n_copies > 1:
                copy = torch.arange(self.n_copies, device=index.device) * self.total_categories
                index = index.unsqueeze(0) + copy.view(-1, 1, 1)  # [copies, batch, fields]
            emb = self.embedding(index)  # [..., batch, fields, embedding_dim]
            parts.append(emb.flatten(-2))  # [..., batch, fields * embedding_dim]
        if self.n_dense:
            dense = batch.dense
            assert dense is not None  # check() matched the dense columns
            if self.n_copies > 1:
                dense = dense.unsqueeze(0).expand(self.n_copies, -1, -1)  # [copies, batch, d]
            parts.append(dense)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def sparse_embeddings(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Give the embedding tables of ``model``'s input layers sparse gradients (or dense again).

    With sparse gradients a step computes and updates only the rows its batch looked up;
    :func:`mtlbook.fit` then trains those tables with ``torch.optim.SparseAdam`` (Adam's moments
    kept per row, updated when the row is used) and every other parameter with Adam. It pays
    off for large tables: about 2× faster per step on the CPU with 10⁶ rows
    (``benchmarks/bench_models.py``). It needs a loss weighting (not one that combines the
    tasks' gradients), ``weight_decay=0`` and one process; ``fit`` says so otherwise.

    Args:
        model: a model with :class:`InputLayer` s (every mtlbook model).
        enabled: ``True`` for sparse gradients, ``False`` for dense ones.

    Returns:
        ``model`` itself, changed in place.

    Raises:
        ValueError: when ``model`` has no embedding table (no categorical features).
    """
    tables = [
        m.embedding
        for m in model.modules()
        if isinstance(m, InputLayer) and m.embedding is not None
    ]
    if not tables:
        raise ValueError(
            f"{type(model).__name__} has no embedding table: its schema has no categorical "
            "features, so there is nothing to make sparse"
        )
    for table in tables:
        table.sparse = bool(enabled)
    return model


class ParallelMLP(nn.Module):
    """``n_parallel`` independent MLPs with the same layer sizes, evaluated as one batched op.

    Input ``[batch, in_dim]`` (the same input for every MLP, e.g. experts) or
    ``[n_parallel, batch, in_dim]`` (one input each, e.g. task towers); output
    ``[n_parallel, batch, units[-1]]``. Every layer but the last is followed by ReLU (and
    dropout); with ``final_activation=True`` the last layer is too.

    Args:
        n_parallel: number of independent MLPs.
        in_dim: input size.
        units: output size of each layer, e.g. ``(64, 32)``; must be non-empty.
        dropout: dropout probability after each hidden activation.
        final_activation: apply ReLU (and dropout) after the last layer too.
    """

    def __init__(
        self,
        n_parallel: int,
        in_dim: int,
        units: Sequence[int],
        dropout: float = 0.0,
        final_activation: bool = False,
    ) -> None:
        super().__init__()
        units = tuple(int(u) for u in units)
        if n_parallel < 1 or in_dim < 1 or not units or min(units) < 1:
            raise ValueError(
                f"invalid ParallelMLP sizes: n_parallel={n_parallel}, "
                f"in_dim={in_dim}, units={units}"
            )
        self.n_parallel, self.in_dim, self.units = n_parallel, in_dim, units
        self.final_activation = final_activation
        sizes = (in_dim, *units)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n_parallel, a, b)) for a, b in pairwise(sizes)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(n_parallel, 1, b)) for b in units)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        return self.units[-1]

    def reset_parameters(self) -> None:
        # The same scheme as nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Kaiming-uniform a=√5).
        for w, b in zip(self.weights, self.biases, strict=True):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if x.dim() == 2:
                # One GEMM for all P networks: [batch, in] @ [in, P*out] -> [batch, P*out].
                n_par, d_in, d_out = w.shape
                flat = torch.addmm(
                    b.reshape(1, n_par * d_out), x, w.permute(1, 0, 2).reshape(d_in, n_par * d_out)
                )
                x = flat.view(-1, n_par, d_out).transpose(0, 1)  # [P, batch, out]
            else:
                x = torch.baddbmm(b, x, w)  # [P, batch, in] @ [P, in, out] -> [P, batch, out]
            if i < last or self.final_activation:
                x = self.dropout(torch.relu(x))
        return x

    def extra_repr(self) -> str:
        return f"n_parallel={self.n_parallel}, in_dim={self.in_dim}, units={self.units}"
