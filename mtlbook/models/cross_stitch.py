"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016).

One column (MLP) per task. After every hidden layer ``l`` a cross-stitch unit replaces each
task's activations by a learned linear combination of all tasks' activations:

    h̃_k^l = Σ_j α_kj^l h_j^l,    h_k^{l+1} = ReLU(W_k^{l+1} h̃_k^l + b_k^{l+1}),
    ŷ_k = tower_k(h̃_k^L)

The paper stitches two networks with a ``2 × 2`` unit; here ``α^l`` is ``[K, K]`` for ``K``
tasks. ``α = I`` gives independent columns (:class:`~mtlbook.models.SingleTask` with the
default sizes and ``shared_embeddings=False``), ``α`` with identical rows gives the same
representation to every task (hard sharing at that layer); training chooses per layer.

Initialisation follows the paper, which starts every row as a convex combination: here
``α_kk = 0.9`` and the remaining ``0.1`` spread evenly over the other tasks (for two tasks the
paper's ``(α_S, α_D) = (0.9, 0.1)``), so every row sums to 1. The paper also trains ``α`` with a
larger learning rate than the rest of the network (its ablation scales it by up to ``10³``).
``alpha_lr_scale`` (default 1: no scaling) does this without a second optimiser group:
``α = s·α̃`` with ``α̃`` the stored parameter, so under Adam (which :func:`mtlbook.fit` uses and
which is invariant to the gradient's scale) ``α`` moves ``s`` times faster.

All columns of a layer are one batched matrix multiply (:class:`ParallelMLP` with a
``[K, batch, in]`` input) and a unit is one ``einsum``. Chapter 12.3.5 of the book explains the
model and plots ``α`` over training (:meth:`CrossStitch.mixing_parameters`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .layers import InputLayer, ParallelMLP

__all__ = ["CrossStitch", "MixingMatrix", "convex_mixing_init"]


def convex_mixing_init(n: int, self_weight: float = 0.9) -> torch.Tensor:
    """``[n, n]``: ``self_weight`` on the diagonal, ``1 − self_weight`` spread evenly over the
    rest of each row (every row sums to 1); ``[[1.]]`` when ``n = 1``."""
    if n == 1:
        return torch.ones(1, 1)
    init = torch.full((n, n), (1.0 - self_weight) / (n - 1))
    init.fill_diagonal_(self_weight)
    return init


class MixingMatrix(nn.Module):
    """A learned mixing matrix (a cross-stitch unit's ``α``, a sluice network's ``β``).

    ``forward()`` returns the ``[rows, cols]`` matrix. It starts exactly at ``init`` (the
    papers' fixed initialisation, the same for every seed). A matrix with a single column mixes
    nothing (one task, or one layer): it stays fixed at ``init`` and is not a parameter.

    Args:
        init: ``[rows, cols]`` initial value.
        lr_scale: the matrix is stored divided by ``lr_scale`` and multiplied back on use, so
            with Adam its effective learning rate is ``lr_scale`` times the base rate.
    """

    init: torch.Tensor  # buffer
    raw: torch.Tensor  # a parameter, or a buffer when the matrix is fixed

    def __init__(self, init: torch.Tensor, lr_scale: float = 1.0) -> None:
        super().__init__()
        if init.dim() != 2:
            raise ValueError(f"a mixing matrix is 2-D, got shape {tuple(init.shape)}")
        lr_scale = float(lr_scale)
        if not (math.isfinite(lr_scale) and lr_scale > 0):
            raise ValueError(f"the learning-rate scale must be positive, got {lr_scale}")
        self.lr_scale = lr_scale
        self.learnable = init.shape[1] > 1
        self.register_buffer("init", init.detach().float().clone(), persistent=False)
        if self.learnable:
            self.raw = nn.Parameter(torch.empty_like(self.init))
        else:
            self.register_buffer("raw", torch.empty_like(self.init))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.raw.copy_(self.init / self.lr_scale)

    def forward(self) -> torch.Tensor:
        return self.raw * self.lr_scale  # [rows, cols]

    def extra_repr(self) -> str:
        rows, cols = self.init.shape
        return f"rows={rows}, cols={cols}, lr_scale={self.lr_scale}, learnable={self.learnable}"


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} must lie in [0, 1] (each row of α starts as a convex combination), got {value}"
        )
    return value


class CrossStitch(MultiTaskModel):
    """One MLP column per task, columns mixed by a cross-stitch unit after every hidden layer.

    Args:
        schema: the data schema (``data.schema``).
        hidden_units: layer sizes of each task's column; a unit follows every layer.
        tower_units: hidden layer sizes of each task's tower on top of the last unit (the output
            layer is added); the paper's columns end in the task's output layer, i.e. ``()``.
        alpha_self: initial weight of a task on its own activations (``α_kk``); the rest of the
            row, ``1 − alpha_self``, is spread evenly over the other tasks.
        alpha_lr_scale: learning-rate multiplier of ``α`` under Adam (the paper scales it up).
        shared_embeddings: ``True`` (default): all columns read the same embeddings, as the
            paper's columns read the same image. ``False``: each column has its own embedding
            tables (separate networks, joined only by the units).
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer (before the unit).
        seed: seed of the initial weights (``None``: use the global random state).
    """

    def __init__(
        self,
        schema: Schema,
        hidden_units: Sequence[int] = (64, 32),
        tower_units: Sequence[int] = (),
        alpha_self: float = 0.9,
        alpha_lr_scale: float = 1.0,
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
        alpha_self = _check_fraction("alpha_self", alpha_self)
        n_tasks = len(schema.tasks)
        self.shared_embeddings = bool(shared_embeddings)
        self.input = InputLayer(
            schema, embedding_dim, n_copies=1 if self.shared_embeddings else n_tasks
        )
        sizes = (self.input.output_dim, *hidden_units)
        self.columns = nn.ModuleList(
            ParallelMLP(n_tasks, d_in, (d_out,), dropout=dropout, final_activation=True)
            for d_in, d_out in pairwise(sizes)
        )
        self.stitches = nn.ModuleList(
            MixingMatrix(convex_mixing_init(n_tasks, alpha_self), lr_scale=alpha_lr_scale)
            for _ in hidden_units
        )
        self.towers = ParallelMLP(n_tasks, hidden_units[-1], (*tower_units, 1), dropout=dropout)
        self.reset_parameters(seed)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Embeddings, every column layer and every unit but the last, from the input up.

        Through the units every task's loss depends on every column (and its embeddings). The
        last unit's row ``k`` feeds task ``k``'s tower only, so that unit, like the towers,
        belongs to the tasks one row each.
        """
        params = list(self.input.parameters())
        for column, stitch in zip(self.columns, self.stitches[:-1], strict=False):
            params += [*column.parameters(), *stitch.parameters()]
        return params + list(self.columns[-1].parameters())

    def mixing_parameters(self) -> dict[str, torch.Tensor]:
        """``{"alpha/l": [tasks, tasks]}`` for every hidden layer ``l``; row ``k`` holds the
        weights task ``k`` gives to each task's activations."""
        return {f"alpha/{i}": stitch().detach().clone() for i, stitch in enumerate(self.stitches)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.input(batch)  # [batch, input_dim], or [tasks, batch, input_dim] when separate
        for column, stitch in zip(self.columns, self.stitches, strict=True):
            h = column(x)  # [tasks, batch, units]
            x = torch.einsum("kj,jbu->kbu", stitch(), h)  # [tasks, batch, units]
        out = self.towers(x).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
