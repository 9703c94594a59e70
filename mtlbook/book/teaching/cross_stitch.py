"""Cross-stitch networks written the plain way (chapter 12.3.5; Misra et al., CVPR 2016).

:class:`TeachingCrossStitch` gives every task a column of ``nn.Linear`` layers. After every
layer a cross-stitch unit replaces the tasks' activations by linear combinations of all of
them; for two tasks A and B this is the paper's

    [x̃_A; x̃_B] = [[α_AA, α_AB], [α_BA, α_BB]] · [x_A; x_B],

one line per row: ``x̃_A = α_AA x_A + α_AB x_B`` and ``x̃_B = α_BA x_A + α_BB x_B``
(``x̃_k = Σ_j α_kj x_j`` for ``K`` tasks). Column ``k``'s next layer reads ``x̃_k``, task ``k``'s
tower the last unit's ``x̃_k``. :class:`~mtlbook.models.CrossStitch` computes the same with
each layer of all columns as one batched product and each unit as one ``einsum``;
:meth:`TeachingCrossStitch.from_library` copies its weights (``α`` as the library uses it, its
learning-rate scale applied). Dropout is left out: the comparison runs in ``eval()`` mode.

:func:`plot_cross_stitch_diagram` draws the architecture (there is no book module for the
chapter, so its diagram lives next to the model it shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import cast

import torch
from matplotlib.figure import Figure
from torch import nn

from ...models import CrossStitch
from ...models.layers import ParallelMLP
from ..diagrams import arrow, box, canvas, finish
from .ple import mlp
from .shared_bottom import copy_parallel_mlp

__all__ = ["TeachingCrossStitch", "plot_cross_stitch_diagram"]


class TeachingCrossStitch(nn.Module):
    """Column k: x_k = ReLU(W_k x̃_k + b_k); unit: x̃_k = Σ_j α_kj x_j; ŷ_k = t_k(x̃_k)."""

    def __init__(self, tasks, input_dim, hidden_units, tower_units):
        super().__init__()
        self.tasks, n = list(tasks), len(tasks)
        sizes = [input_dim, *hidden_units]  # columns[l][k]: layer l of task k's column
        self.columns = nn.ModuleList(
            nn.ModuleList(nn.Linear(a, b) for _ in self.tasks) for a, b in pairwise(sizes)
        )
        # alphas[l][k, j]: the weight task k gives to task j's activations after layer l
        self.alphas = nn.ParameterList(nn.Parameter(torch.eye(n)) for _ in hidden_units)
        self.towers = nn.ModuleList(mlp([sizes[-1], *tower_units, 1], False) for _ in self.tasks)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = len(self.tasks)  # every column reads x (its own x[k] with separate embeddings)
        x_tilde = list(x) if x.dim() == 3 else [x] * n
        for layers, alpha in zip(self.columns, self.alphas, strict=True):
            xs = [torch.relu(layer(x_tilde[k])) for k, layer in enumerate(layers)]  # x_k
            x_tilde = []  # the cross-stitch unit, one row of the matrix product per task:
            for k in range(n):  # x̃_k = α_k1 x_1 + … + α_kK x_K  (x̃_A = α_AA x_A + α_AB x_B)
                mixed = torch.zeros_like(xs[k])
                for j in range(n):
                    mixed = mixed + alpha[k, j] * xs[j]
                x_tilde.append(mixed)  # [batch, units]
        return {t: self.towers[k](x_tilde[k]).squeeze(-1) for k, t in enumerate(self.tasks)}

    @classmethod
    @torch.no_grad()
    def from_library(cls, model: CrossStitch) -> TeachingCrossStitch:
        """The same sizes as ``model``, every weight (and ``α``) copied from it."""
        columns = cast("list[ParallelMLP]", list(model.columns))
        towers = model.towers
        hidden = [column.units[0] for column in columns]
        teaching = cls(model.task_names, model.input.output_dim, hidden, towers.units[:-1])
        for column, layers in zip(columns, teaching.columns, strict=True):
            for k, layer in enumerate(layers):
                copy_parallel_mlp(column, k, [layer])
        for stitch, alpha in zip(model.stitches, teaching.alphas, strict=True):
            alpha.copy_(stitch())  # [tasks, tasks], the value the library multiplies with
        for k, tower in enumerate(teaching.towers):
            copy_parallel_mlp(towers, k, [m for m in tower if isinstance(m, nn.Linear)])
        return teaching


def plot_cross_stitch_diagram(tasks: Sequence[str] = ("A", "B"), n_layers: int = 2) -> Figure:
    """Two task columns, a cross-stitch unit α after every layer, a tower per task."""
    a, b = tasks
    fig, ax = canvas(6.4, 2.0 + 1.95 * n_layers, scale=0.95)
    xa, xb, cx = 1.4, 5.0, 3.2
    box(ax, cx, 0.35, 5.6, 0.4, "输入特征 x → 嵌入 + 稠密特征（两列共用）", "input")
    y = 0.55
    for layer in range(1, n_layers + 1):
        y_layer, y_unit = y + 0.55, y + 1.7
        for x, task, kind in ((xa, a, "task"), (xb, b, "task2")):
            arrow(ax, x, y, x, y_layer - 0.25)
            box(
                ax, x, y_layer, 2.2, 0.5, f"任务 {task} 的网络\n第 {layer} 层  $x_{{{task}}}$", kind
            )
        box(ax, cx, y_unit, 5.6, 0.5, "", "gate")
        ax.text(
            cx, y_unit, f"十字绣单元 $\\alpha^{{{layer}}}$", ha="center", va="center", fontsize=10
        )
        for x0, x1, same in ((xa, xa, True), (xb, xb, True), (xa, xb, False), (xb, xa, False)):
            arrow(
                ax,
                x0,
                y_layer + 0.25,
                x1 + (0.35 if x1 < cx else -0.35) * (not same),
                y_unit - 0.25,
                dashed=not same,
            )
        for x, task in ((xa, a), (xb, b)):
            ax.text(
                x + (-0.5 if x < cx else 0.5),
                y_unit,
                f"$\\tilde x_{{{task}}}$",
                ha="center",
                va="center",
                fontsize=10,
            )
        y = y_unit + 0.25
    for x, task, kind in ((xa, a, "task"), (xb, b, "task2")):
        arrow(ax, x, y, x, y + 0.3)
        box(ax, x, y + 0.55, 2.2, 0.5, f"任务塔 {task}", kind)
        arrow(ax, x, y + 0.8, x, y + 1.0)
        box(ax, x, y + 1.2, 1.2, 0.4, f"$\\hat y_{{{a if x < cx else b}}}$", "output")
    ax.text(
        cx,
        y + 1.2,
        "实线：自己的列（$\\alpha_{AA}$、$\\alpha_{BB}$）\n虚线：另一列（$\\alpha_{AB}$、$\\alpha_{BA}$）",
        ha="center",
        va="center",
        fontsize=8,
        color="#444444",
    )
    return finish(fig)
