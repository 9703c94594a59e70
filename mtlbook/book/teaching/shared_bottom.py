"""The input layer and Shared-Bottom written the plain way (chapter 12.3.1).

:class:`TeachingInput` is the input layer every model of the book starts with: one embedding
table per categorical field, the looked-up vectors concatenated with the dense block. The
library's :class:`~mtlbook.models.layers.InputLayer` keeps all fields in one table with an
offset per field (one look-up instead of one per field); :meth:`TeachingInput.from_library`
cuts that table into the per-field tables, so both give the same ``x``.

:class:`TeachingSharedBottom` is :class:`~mtlbook.models.SharedBottom` with one ``nn.Linear``
per layer and a loop over the tasks' towers: ``h = f(x)``, ``ŷ_k = t_k(h)``. Dropout (off by
default in the library) is left out: compare the two in ``eval()`` mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from ...models import SharedBottom
from ...models.layers import InputLayer, ParallelMLP

__all__ = ["TeachingInput", "TeachingSharedBottom", "copy_parallel_mlp"]


class TeachingInput(nn.Module):
    """x = [embed_1(c_1), …, embed_F(c_F), dense]: one table per categorical field."""

    def __init__(self, cardinalities: Sequence[int], n_dense: int, embedding_dim: int = 8):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in cardinalities)
        self.n_dense = n_dense

    def forward(self, batch) -> torch.Tensor:  # batch: an mtlbook Batch
        parts = []
        for field, table in enumerate(self.tables):  # field f: [batch] ids -> [batch, dim]
            parts.append(table(batch.categorical[:, field]))
        if self.n_dense:
            parts.append(batch.dense)  # [batch, n_dense]
        return torch.cat(parts, dim=-1)  # [batch, fields * dim + n_dense]

    @classmethod
    def from_library(cls, layer: InputLayer, copy: int = 0) -> TeachingInput:
        """Cut the library's one table (fields one after another) into per-field tables."""
        starts = [int(s) for s in layer.offsets] + [layer.total_categories]
        sizes = [b - a for a, b in pairwise(starts)]
        teaching = cls(sizes, layer.n_dense, layer.embedding_dim)
        if layer.embedding is not None:
            rows = layer.embedding.weight[copy * layer.total_categories :]  # this copy's block
            with torch.no_grad():
                tables = teaching.tables.parameters()
                for weight, start, size in zip(tables, starts, sizes, strict=False):
                    weight.copy_(rows[start : start + size])  # field f's rows: its own table
        return teaching


class TeachingSharedBottom(nn.Module):
    """h = f(x) shared by every task; ŷ_k = t_k(h), one tower per task."""

    def __init__(self, input_dim, bottom_units, tower_units, task_names):
        super().__init__()
        sizes = [input_dim, *bottom_units]  # f: every layer followed by ReLU
        self.bottom = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        sizes = [bottom_units[-1], *tower_units, 1]  # t_k: ReLU between layers, none at the end
        self.towers = nn.ModuleDict()
        for task in task_names:
            self.towers[task] = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = x  # [batch, input_dim], x = model.input(batch)
        for layer in self.bottom:
            h = torch.relu(layer(h))  # h = f(x): [batch, bottom_units[i]]
        out = {}
        for task, tower in self.towers.items():  # ŷ_k = t_k(h), the same h for every task
            z = h
            for i, layer in enumerate(tower):
                z = layer(z)
                if i < len(tower) - 1:
                    z = torch.relu(z)
            out[task] = z.squeeze(-1)  # [batch] logit (or prediction) of task k
        return out

    @classmethod
    def from_library(cls, model: SharedBottom) -> TeachingSharedBottom:
        """The same sizes as ``model``, every weight copied from it."""
        bottom_units, towers = model.bottom.units, model.towers.units[:-1]
        teaching = cls(model.input.output_dim, bottom_units, towers, model.task_names)
        copy_parallel_mlp(model.bottom, 0, teaching.bottom)
        for k, task in enumerate(model.task_names):
            copy_parallel_mlp(model.towers, k, teaching.towers[task])
        return teaching


def copy_parallel_mlp(mlp: ParallelMLP, index: int, layers: Sequence[nn.Linear]) -> None:
    """Copy MLP number ``index`` of a :class:`ParallelMLP` into a list of ``nn.Linear``.

    The library stores layer ``i`` of all its MLPs as ``weights[i]`` ``[P, in, out]`` and
    ``biases[i]`` ``[P, 1, out]``; ``nn.Linear`` keeps ``weight`` as ``[out, in]``.
    """
    if len(layers) != len(mlp.weights):
        raise ValueError(f"{len(layers)} layers given, the ParallelMLP has {len(mlp.weights)}")
    with torch.no_grad():
        for layer, w, b in zip(layers, mlp.weights, mlp.biases, strict=True):
            layer.weight.copy_(w[index].T)  # [in, out] -> [out, in]
            layer.bias.copy_(b[index, 0])  # [out]
