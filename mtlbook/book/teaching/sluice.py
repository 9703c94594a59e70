"""Sluice networks written the plain way (chapter 12.3.5; Ruder et al., AAAI 2019).

:class:`TeachingSluice` is :class:`TeachingCrossStitch` with three additions, each a few lines:

* **subspaces**: the ``d`` units of every layer of every column are cut into ``S`` subspaces of
  ``d/S`` units, and ``α^l`` (``[K·S, K·S]``, row and column ``k·S + s``) mixes the
  (task, subspace) pairs: ``h̃_{k,s} = Σ_{j,t} α_{(k,s),(j,t)} h_{j,t}``;
* **layer weights β**: task ``k``'s tower reads ``z_k = Σ_l β_{k,l} h̃_k^l``, a weighted sum of
  the mixed outputs of all layers;
* **orthogonality penalty** (:meth:`TeachingSluice.regularization`, added to the loss):
  ``λ_o Σ_l Σ_k Σ_{s<t} ‖(G_{k,s}^l)ᵀ G_{k,t}^l‖²_F``, ``G_{k,s}^l`` being the columns of task
  ``k``'s layer-``l`` weight matrix (``[in, d]``) that compute subspace ``s``.

:class:`~mtlbook.models.Sluice` computes the same with batched products and ``einsum`` s;
:meth:`TeachingSluice.from_library` copies its weights, ``α``, ``β`` and ``λ_o``.
:func:`plot_sluice_diagram` draws the architecture (there is no book module for the chapter).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations, pairwise
from typing import cast

import torch
from matplotlib.figure import Figure
from torch import nn

from ...models import Sluice
from ...models.layers import ParallelMLP
from ..diagrams import arrow, box, canvas, finish
from .ple import mlp
from .shared_bottom import copy_parallel_mlp

__all__ = ["TeachingSluice", "plot_sluice_diagram"]


class TeachingSluice(nn.Module):
    """Cross-stitch over (task, subspace) pairs, towers on Σ_l β_kl h̃_k^l, subspace penalty."""

    def __init__(self, tasks, input_dim, hidden_units, tower_units, n_subspaces, ortho_lambda):
        super().__init__()
        self.tasks, n = list(tasks), len(tasks)
        self.S, self.ortho_lambda = n_subspaces, ortho_lambda  # S subspaces per layer, λ_o
        sizes = [input_dim, *hidden_units]  # columns[l][k]: layer l of task k's column
        self.columns = nn.ModuleList(
            nn.ModuleList(nn.Linear(a, b) for _ in self.tasks) for a, b in pairwise(sizes)
        )
        # alphas[l][k·S + s, j·S + t]: the weight subspace s of task k gives to subspace t of j
        self.alphas = nn.ParameterList(nn.Parameter(torch.eye(n * self.S)) for _ in hidden_units)
        self.beta = nn.Parameter(torch.ones(n, len(hidden_units)))  # β[k, l]: task k, layer l
        self.towers = nn.ModuleList(mlp([sizes[-1], *tower_units, 1], False) for _ in self.tasks)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n, S = len(self.tasks), self.S
        h_tilde = list(x) if x.dim() == 3 else [x] * n  # each column's input
        outputs = []  # outputs[l][k]: h̃_k^l, task k's mixed output of layer l
        for layers, alpha in zip(self.columns, self.alphas, strict=True):
            full = [torch.relu(layer(h_tilde[k])) for k, layer in enumerate(layers)]  # h_k^l
            h = [h_k.chunk(S, dim=-1) for h_k in full]  # h[j][t]: subspace t of j, [batch, d/S]
            h_tilde = []
            for k in range(n):
                subspaces = []
                for s in range(S):  # h̃_{k,s} = Σ_{j,t} α_{(k,s),(j,t)} h_{j,t}
                    mixed = torch.zeros_like(h[k][s])
                    for j in range(n):
                        for t in range(S):
                            mixed = mixed + alpha[k * S + s, j * S + t] * h[j][t]
                    subspaces.append(mixed)
                h_tilde.append(torch.cat(subspaces, dim=-1))  # h̃_k^l: [batch, d]
            outputs.append(h_tilde)
        out = {}
        for k, task in enumerate(self.tasks):
            z = sum(self.beta[k, i] * h_l[k] for i, h_l in enumerate(outputs))  # z_k
            out[task] = self.towers[k](z).squeeze(-1)  # ŷ_k = tower_k(z_k): [batch]
        return out

    def regularization(self) -> torch.Tensor:
        """λ_o Σ_l Σ_k Σ_{s<t} ‖G_{k,s}ᵀ G_{k,t}‖²_F (G_{k,s}: the weights computing subspace s)."""
        total = self.beta.new_zeros(())
        for layers in self.columns:
            for layer in layers:  # task k's layer; nn.Linear keeps weight as [d, in]
                G = layer.weight.T.chunk(self.S, dim=1)  # G_{k,s}: [in, d/S]
                for s, t in combinations(range(self.S), 2):
                    total = total + (G[s].T @ G[t]).pow(2).sum()  # ‖G_sᵀ G_t‖²_F
        return self.ortho_lambda * total

    @classmethod
    @torch.no_grad()
    def from_library(cls, model: Sluice) -> TeachingSluice:
        """The same sizes as ``model``, every weight (``α``, ``β`` and ``λ_o`` too) copied."""
        columns = cast("list[ParallelMLP]", list(model.columns))
        towers = model.towers
        hidden = [column.units[0] for column in columns]
        teaching = cls(
            model.task_names,
            model.input.output_dim,
            hidden,
            towers.units[:-1],
            model.n_subspaces,
            model.orthogonality_lambda,
        )
        for column, layers in zip(columns, teaching.columns, strict=True):
            for k, layer in enumerate(layers):
                copy_parallel_mlp(column, k, [layer])
        for source, alpha in zip(model.alphas, teaching.alphas, strict=True):
            alpha.copy_(source())  # [K·S, K·S]
        teaching.beta.copy_(model.beta())  # [K, L]
        for k, tower in enumerate(teaching.towers):
            copy_parallel_mlp(towers, k, [m for m in tower if isinstance(m, nn.Linear)])
        return teaching


def plot_sluice_diagram(tasks: Sequence[str] = ("A", "B"), n_layers: int = 2) -> Figure:
    """Two task columns cut into two subspaces, α over the subspaces after every layer, the
    layer weights β and a tower per task."""
    fig, ax = canvas(8.2, 2.8 + 1.95 * n_layers, scale=0.9)
    cols = {tasks[0]: (2.3, "task"), tasks[1]: (5.9, "task2")}
    cx = 4.1
    box(ax, cx, 0.35, 6.2, 0.4, "输入特征 x → 嵌入 + 稠密特征（两列共用）", "input")
    y, mixed_y = 0.55, []
    for layer in range(1, n_layers + 1):
        y_layer, y_unit = y + 0.55, y + 1.7
        for task, (x, kind) in cols.items():
            arrow(ax, x, y, x, y_layer - 0.25)
            for s, dx in ((1, -0.6), (2, 0.6)):
                box(ax, x + dx, y_layer, 1.1, 0.5, f"{task}：子空间 {s}", kind, fontsize=8)
                arrow(ax, x + dx, y_layer + 0.25, x + dx, y_unit - 0.25)
        ax.text(0.05, y + 0.55, f"第 {layer} 层", ha="left", va="center", fontsize=9)
        box(ax, cx, y_unit, 6.2, 0.5, "", "gate")
        ax.text(
            cx,
            y_unit,
            f"$\\alpha^{{{layer}}}$：在 4 个（任务, 子空间）之间混合",
            ha="center",
            va="center",
            fontsize=10,
        )
        mixed_y.append(y_unit)
        y = y_unit + 0.25
    for task, (x, kind) in cols.items():
        y_beta = y + 0.55
        for y_mixed in mixed_y[:-1]:  # lower layers reach β by a skip connection
            edge, side = (cx + 3.1, cx + 3.3) if x > cx else (cx - 3.1, cx - 3.3)
            ax.plot(
                [edge, side, side],
                [y_mixed, y_mixed, y_beta],
                color="#333333",
                linestyle="--",
                linewidth=1.0,
            )
            arrow(ax, side, y_beta, x + (0.95 if x > cx else -0.95), y_beta, dashed=True)
        arrow(ax, x, y, x, y_beta - 0.25)
        box(ax, x, y_beta, 1.9, 0.5, f"层权重 $\\beta_{{{task}}}$", "gate")
        arrow(ax, x, y_beta + 0.25, x, y_beta + 0.5)
        box(ax, x, y_beta + 0.75, 1.9, 0.5, f"任务塔 {task}", kind)
        arrow(ax, x, y_beta + 1.0, x, y_beta + 1.2)
        box(ax, x, y_beta + 1.4, 1.1, 0.4, f"$\\hat y_{{{task}}}$", "output")
    ax.text(
        cx,
        y + 0.55,
        "$z_k = \\sum_l \\beta_{k,l}\\, \\tilde h_k^l$",
        ha="center",
        va="center",
        fontsize=9,
        color="#444444",
    )
    return finish(fig)
