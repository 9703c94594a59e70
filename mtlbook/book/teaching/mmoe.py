"""MMoE and OMoE the plain way (chapter 12.3.3 of the book; Ma et al., KDD 2018).

One ``nn.Sequential`` of ``nn.Linear`` + ReLU per expert, one ``nn.Linear`` + softmax per gate,
one small MLP per task tower, and a Python loop over the tasks and the experts that follows

    g_k(x) = softmax(W_k x + b_k),    f_k(x) = Σ_i g_k(x)_i · E_i(x),    ŷ_k = h_k(f_k(x)).

:class:`~mtlbook.models.MMoE` computes the same with stacked experts, one matrix for all gates
and batched towers; :meth:`TeachingMMoE.from_library` copies its weights. Dropout is left out:
the comparison runs in ``eval()`` mode, where the library's dropout does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from ...models import MMoE

__all__ = ["TeachingMMoE", "TeachingOMoE", "mlp"]


def mlp(sizes: Sequence[int], relu_last: bool) -> nn.Sequential:
    """An MLP through ``sizes``, e.g. ``[100, 16]``: ``nn.Linear`` layers,
    each followed by ReLU, the last one only if ``relu_last`` (an expert:
    yes; a tower, whose last layer gives the logit: no)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if relu_last or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _copy_into(
    net: nn.Module, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], k: int
) -> None:
    """Network ``k`` of stacked ``[P, in, out]`` weights and ``[P, 1, out]`` biases → the
    ``nn.Linear`` layers of ``net``, in order."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for linear, w, b in zip(linears, weights, biases, strict=True):
        linear.weight.copy_(w[k].T)  # nn.Linear stores [out, in]
        linear.bias.copy_(b[k, 0])


@torch.no_grad()
def _copy_weights(model: MMoE, teaching: TeachingMMoE) -> None:
    """Every weight of the library ``model`` into the teaching model of the same sizes."""
    n = model.experts.n_experts
    stacked = model.experts.stacked()  # per layer: [n, in, out] weights, [n, 1, out] biases
    for i, expert in enumerate(teaching.experts):
        _copy_into(expert, [w for w, _ in stacked], [b for _, b in stacked], i)
    # The library's gates are one [in, gates · n] matrix: an [in, n] block per gate.
    gate_w = model.gates.weight.view(-1, len(teaching.gates), n).transpose(0, 1)
    gate_b = model.gates.bias.view(-1, 1, n)  # [gates, 1, n]
    for k, gate in enumerate(teaching.gates):
        _copy_into(gate, [gate_w], [gate_b], k)
    towers = model.towers  # a ParallelMLP: per layer [tasks, in, out] weights
    for k, tower in enumerate(teaching.towers):
        _copy_into(tower, list(towers.weights), list(towers.biases), k)


class TeachingMMoE(nn.Module):
    """Shared experts E_i; per task k a softmax gate g_k and a tower h_k."""

    one_gate = False  # OMoE: a single gate g, shared by every task

    def __init__(
        self,
        tasks: Sequence[str],
        input_dim: int,
        n_experts: int,
        expert_units: Sequence[int],
        tower_units: Sequence[int],
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        expert_sizes = [input_dim, *expert_units]  # x -> E_i(x)
        tower_sizes = [expert_units[-1], *tower_units, 1]  # f_k(x) -> logit
        self.experts = nn.ModuleList()  # E_1, …, E_n
        self.gates = nn.ModuleList()  # g_1, …, g_K (OMoE: one g)
        self.towers = nn.ModuleList()  # h_1, …, h_K
        for _ in range(n_experts):
            self.experts.append(mlp(expert_sizes, relu_last=True))
        for _ in range(1 if self.one_gate else len(self.tasks)):
            self.gates.append(nn.Linear(input_dim, n_experts))
        for _ in self.tasks:
            self.towers.append(mlp(tower_sizes, relu_last=False))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # E_i(x) for every expert i, each [batch, units]
        expert_out = [expert(x) for expert in self.experts]
        logits = {}
        for k, task in enumerate(self.tasks):
            gate = self.gates[0] if self.one_gate else self.gates[k]
            # g_k(x) = softmax(W_k x + b_k): [batch, n_experts], rows sum to 1
            g = torch.softmax(gate(x), dim=-1)
            # f_k(x) = Σ_i g_k(x)_i · E_i(x): [batch, units]
            f = torch.zeros_like(expert_out[0])
            for i, e in enumerate(expert_out):
                f = f + g[:, i : i + 1] * e
            # ŷ_k = h_k(f_k(x)): one logit per sample, [batch]
            logits[task] = self.towers[k](f).squeeze(-1)
        return logits

    @classmethod
    def from_library(cls, model: MMoE) -> TeachingMMoE:
        """A teaching model of ``model``'s sizes with a copy of its weights."""
        if model.one_gate != cls.one_gate:
            name = type(model).__name__
            raise ValueError(f"{cls.__name__} cannot copy a {name}")
        experts, towers = model.experts, model.towers
        teaching = cls(
            model.task_names,
            model.input.output_dim,
            experts.n_experts,
            experts.units,
            towers.units[:-1],  # the library's last tower layer is the output
        )
        _copy_weights(model, teaching)
        return teaching


class TeachingOMoE(TeachingMMoE):
    """OMoE: the same experts and towers, one gate g for all the tasks."""

    one_gate = True
