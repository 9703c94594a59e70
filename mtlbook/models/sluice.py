"""Sluice networks (Ruder, Bingel, Augenstein & Søgaard, AAAI 2019).

"Latent Multi-Task Architecture Learning" generalises cross-stitch networks
(:class:`~mtlbook.models.CrossStitch`). Each task ``k`` has a column of ``L`` layers of equal
width ``d``; the output ``h_k^l`` of every layer is split into ``S`` subspaces
``h_{k,1}^l, …, h_{k,S}^l`` of ``d/S`` units each, and three learned pieces decide what is shared:

* ``α`` — after each layer, every (task, subspace) becomes a linear combination of all
  (task, subspace) pairs, ``α^l`` being ``[K·S, K·S]`` (row/column ``k·S + s``):

      h̃_{k,s}^l = Σ_{j,t} α^l_{(k,s),(j,t)} h_{j,t}^l,
      h_k^{l+1} = ReLU(W_k^{l+1} h̃_k^l + b_k^{l+1})

* ``β`` — each task's tower reads a learned combination of the (mixed) outputs of all layers,
  so a task can take its features from a low or a high layer:

      z_k = Σ_l β_{k,l} h̃_k^l,    ŷ_k = tower_k(z_k)

* an orthogonality penalty that pushes the subspaces of a task to hold different information:

      L = Σ_k L_k + λ_o Σ_l Σ_k Σ_{s<t} ‖(G_{k,s}^l)ᵀ G_{k,t}^l‖²_F

  where ``G_{k,s}^l`` ``[in, d/S]`` are the columns of task ``k``'s layer-``l`` weight matrix that
  compute subspace ``s``. The paper writes the penalty with ``G`` as "the subspaces"; the authors'
  released code places it on the weight matrices that compute them, and so do we. It does not
  depend on the batch, and it stays meaningful with ReLU units, whose non-negative activations
  could only be orthogonal by never firing together. :func:`mtlbook.fit` adds it through
  :meth:`Sluice.regularization`.

Initialisation. ``α`` starts close to independent columns with some sharing: each (task,
subspace) keeps ``0.9`` of itself and spreads ``0.1`` evenly over the other ``K·S − 1`` (the
rule of the cross-stitch paper, applied to (task, subspace) pairs; the authors' default for one
subspace). ``β`` starts balanced, ``1/L`` for every layer (the authors' default). Both initial
values are fixed, the same for every seed. With ``S = 1`` and ``β`` on the last layer only, the
model is a cross-stitch network.

Every layer of all columns is one batched matrix multiply and each mixing one ``einsum``.
Chapter 12.3.5 of the book explains the model and plots ``α`` and ``β``
(:meth:`Sluice.mixing_parameters`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import cast

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .cross_stitch import MixingMatrix, _check_fraction, convex_mixing_init
from .layers import InputLayer, ParallelMLP

__all__ = ["Sluice", "subspace_orthogonality"]


def subspace_orthogonality(weight: torch.Tensor, n_subspaces: int) -> torch.Tensor:
    """``Σ_k Σ_{s<t} ‖G_{k,s}ᵀ G_{k,t}‖²_F`` for stacked weights ``[tasks, in, out]``.

    ``G_{k,s}`` ``[in, out/S]`` holds the output columns ``s·out/S … (s+1)·out/S − 1`` of task
    ``k``'s matrix. Zero when the subspaces of every task are computed from orthogonal
    directions of the input.
    """
    n_tasks, n_in, n_out = weight.shape
    if n_subspaces < 1 or n_out % n_subspaces:
        raise ValueError(f"cannot split {n_out} units into {n_subspaces} equal subspaces")
    g = weight.view(n_tasks, n_in, n_subspaces, n_out // n_subspaces)  # [K, in, S, d/S]
    gram = torch.einsum("kise,kitf->kstef", g, g)  # [K, S, S, d/S, d/S]
    squared = gram.pow(2).sum(dim=(-2, -1))  # [K, S, S]
    upper = torch.ones(n_subspaces, n_subspaces, dtype=torch.bool, device=weight.device).triu(
        diagonal=1
    )
    return squared[:, upper].sum()


class Sluice(MultiTaskModel):
    """Task columns split into subspaces, mixed by ``α`` after every layer, read through ``β``.

    Args:
        schema: the data schema (``data.schema``).
        hidden_units: layer sizes of each task's column; all equal (``β`` adds the layers'
            outputs) and divisible by ``n_subspaces``.
        tower_units: hidden layer sizes of each task's tower on ``z_k`` (the output layer is
            added).
        n_subspaces: number ``S`` of subspaces per layer (the paper uses 2).
        orthogonality_lambda: weight ``λ_o`` of the subspace orthogonality penalty (``0``: none).
        alpha_self: initial weight of a (task, subspace) on itself in ``α``.
        shared_embeddings: ``True`` (default): all columns read the same embeddings.
            ``False``: each column has its own embedding tables.
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer (before the mixing).
        seed: seed of the initial weights (``None``: use the global random state).
    """

    def __init__(
        self,
        schema: Schema,
        hidden_units: Sequence[int] = (32, 32),
        tower_units: Sequence[int] = (),
        n_subspaces: int = 2,
        orthogonality_lambda: float = 1e-2,
        alpha_self: float = 0.9,
        shared_embeddings: bool = True,
        embedding_dim: int = 8,
        dropout: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        hidden_units = _check_units("hidden_units", hidden_units)
        tower_units = tuple(tower_units)
        if tower_units:
            tower_units = _check_units("tower_units", tower_units)
        if len(set(hidden_units)) != 1:
            raise ValueError(
                f"Sluice adds the outputs of all layers (β), so every layer needs "
                f"the same width; got hidden_units={hidden_units}, use e.g. "
                f"{(hidden_units[0],) * len(hidden_units)}"
            )
        if not isinstance(n_subspaces, int) or n_subspaces < 1:
            raise ValueError(f"n_subspaces must be a positive integer, got {n_subspaces!r}")
        width = hidden_units[0]
        if width % n_subspaces:
            raise ValueError(
                f"each layer's {width} units must split into n_subspaces="
                f"{n_subspaces} equal subspaces; choose a width divisible by it"
            )
        orthogonality_lambda = float(orthogonality_lambda)
        if not (math.isfinite(orthogonality_lambda) and orthogonality_lambda >= 0):
            raise ValueError(
                f"orthogonality_lambda must be a finite number ≥ 0, got {orthogonality_lambda}"
            )
        alpha_self = _check_fraction("alpha_self", alpha_self)
        n_tasks, n_layers = len(schema.tasks), len(hidden_units)
        self.n_subspaces = n_subspaces
        self.orthogonality_lambda = orthogonality_lambda
        self.shared_embeddings = bool(shared_embeddings)
        self.input = InputLayer(
            schema, embedding_dim, n_copies=1 if self.shared_embeddings else n_tasks
        )
        sizes = (self.input.output_dim, *hidden_units)
        self.columns = nn.ModuleList(
            ParallelMLP(n_tasks, d_in, (d_out,), dropout=dropout, final_activation=True)
            for d_in, d_out in pairwise(sizes)
        )
        self.alphas = nn.ModuleList(
            MixingMatrix(convex_mixing_init(n_tasks * n_subspaces, alpha_self))
            for _ in hidden_units
        )
        self.beta = MixingMatrix(torch.full((n_tasks, n_layers), 1.0 / n_layers))
        self.towers = ParallelMLP(n_tasks, width, (*tower_units, 1), dropout=dropout)
        self.reset_parameters(seed)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Embeddings, every column layer and every ``α`` but the last, from the input up.

        Through ``α`` every task's loss depends on every column. The last ``α``'s rows, like
        ``β`` and the towers, feed one task each.
        """
        params = list(self.input.parameters())
        for column, alpha in zip(self.columns, self.alphas[:-1], strict=False):
            params += [*column.parameters(), *alpha.parameters()]
        return params + list(self.columns[-1].parameters())

    def mixing_parameters(self) -> dict[str, torch.Tensor]:
        """``{"alpha/l": [K·S, K·S], …, "beta": [K, L]}``; row ``k·S + s`` of ``α`` holds the
        weights of subspace ``s`` of task ``k``, row ``k`` of ``β`` task ``k``'s layer weights."""
        mixing = {f"alpha/{i}": alpha().detach().clone() for i, alpha in enumerate(self.alphas)}
        mixing["beta"] = self.beta().detach().clone()
        return mixing

    def orthogonality(self) -> torch.Tensor:
        """``Σ_l Σ_k Σ_{s<t} ‖(G_{k,s}^l)ᵀ G_{k,t}^l‖²_F`` (the penalty before ``λ_o``)."""
        columns = cast("Iterable[ParallelMLP]", self.columns)
        return torch.stack(
            [subspace_orthogonality(column.weights[0], self.n_subspaces) for column in columns]
        ).sum()

    def regularization(self) -> torch.Tensor:
        """``λ_o`` times :meth:`orthogonality` (a zero tensor when ``λ_o = 0`` or ``S = 1``)."""
        if self.orthogonality_lambda == 0 or self.n_subspaces == 1:
            return torch.zeros((), device=self.towers.weights[0].device)
        return self.orthogonality_lambda * self.orthogonality()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        n_tasks, n_sub = len(self.task_names), self.n_subspaces
        x = self.input(batch)  # [batch, input_dim], or [tasks, batch, input_dim] when separate
        layers = []
        for column, alpha in zip(self.columns, self.alphas, strict=True):
            h = column(x)  # [K, batch, d]
            n_batch, width = h.shape[1], h.shape[2]
            g = h.view(n_tasks, n_batch, n_sub, width // n_sub)  # [K, batch, S, d/S]
            a = alpha().view(n_tasks, n_sub, n_tasks, n_sub)  # [K, S, K, S]
            x = torch.einsum("ksjt,jbte->kbse", a, g).reshape(n_tasks, n_batch, width)  # [K, b, d]
            layers.append(x)
        stacked = torch.stack(layers, dim=1)  # [K, L, batch, d]
        z = torch.einsum("kl,klbd->kbd", self.beta(), stacked)  # [K, batch, d]
        out = self.towers(z).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
