"""AITM written out (chapter 12.5): one tower per conversion step, information passed from
step t−1 to step t through a transfer unit and an attention over the two vectors.

The library's :class:`mtlbook.models.AITM` stacks the towers, heads and attention projections
of all steps into batched tensors; this version keeps one ``nn.Linear`` per layer and loops over
the steps, as in the equations of the AITM paper (Xi et al., KDD 2021).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ...models import AITM
from .shared_bottom import copy_parallel_mlp

__all__ = ["TeachingAITM"]


def _linears(modules: Iterable[nn.Module]) -> list[nn.Linear]:
    """The ``nn.Linear`` layers among ``modules``, in order."""
    return [m for m in modules if isinstance(m, nn.Linear)]


def _tower(input_dim: int, tower_units: Sequence[int]) -> nn.Sequential:
    """An MLP ``input_dim → tower_units…`` with ReLU after every layer, the last one too."""
    sizes = [input_dim, *tower_units]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers)


class TeachingAITM(nn.Module):
    """AITM: towers ``q_t``, transfer ``p_{t−1} = g(z_{t−1})``, attention over ``(p_{t−1}, q_t)``
    gives ``z_t``, a head per step; the calibrator penalises ``ŷ_t > ŷ_{t−1}``."""

    def __init__(
        self, input_dim: int, tower_units: Sequence[int], sequence: Sequence[str], alpha: float
    ) -> None:
        super().__init__()
        self.sequence, self.alpha, d = list(sequence), alpha, tower_units[-1]
        self.towers = nn.ModuleList(_tower(input_dim, tower_units) for _ in sequence)  # q_t
        self.heads = nn.ModuleList(nn.Linear(d, 1) for _ in sequence)  # z_t -> logit of ŷ_t
        later = range(len(sequence) - 1)  # the units of steps 2…T
        self.transfer = nn.ModuleList(nn.Linear(d, d) for _ in later)  # g_{t−1}
        self.h1 = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in later)  # h1, h2: the
        self.h2 = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in later)  # attention scores
        self.h3 = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in later)  # h3: what it mixes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.towers[0](x)  # z_1 = q_1, [batch, d]
        logits = {self.sequence[0]: self.heads[0](z).squeeze(-1)}
        for t in range(1, len(self.sequence)):
            q = self.towers[t](x)  # the step's own representation, [batch, d]
            p = torch.relu(self.transfer[t - 1](z))  # what step t−1 passes on, [batch, d]
            u = torch.stack([p, q], dim=1)  # the two candidates, [batch, 2, d]
            score = (self.h1[t - 1](u) * self.h2[t - 1](u)).sum(-1) / math.sqrt(u.shape[-1])
            w = torch.softmax(score, dim=1)  # attention over (p, q), [batch, 2]
            z = (w.unsqueeze(-1) * self.h3[t - 1](u)).sum(1)  # z_t, [batch, d]
            logits[self.sequence[t]] = self.heads[t](z).squeeze(-1)
        return logits

    def calibrator(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        y = [torch.sigmoid(logits[task]) for task in self.sequence]  # ŷ_1 … ŷ_T
        excess = [torch.relu(y[t] - y[t - 1]).mean() for t in range(1, len(y))]
        return self.alpha * torch.stack(excess).sum()  # α · Σ_t mean max(ŷ_t − ŷ_{t−1}, 0)

    @classmethod
    def from_library(cls, model: AITM) -> TeachingAITM:
        """The teaching model with ``model``'s sizes and a copy of every weight but the
        embedding tables (the forward pass takes ``x = model.input(batch)``).

        Only models whose tasks are all steps of the sequence.
        """
        if set(model.task_names) != set(model.sequence):
            raise ValueError(
                f"TeachingAITM covers the conversion steps only; the model's tasks are "
                f"{list(model.task_names)}, its sequence {list(model.sequence)}"
            )
        units = model.first_tower.units
        teaching = cls(model.input.output_dim, units, model.sequence, model.calibrator_weight)
        others = [name for name in model.task_names if name != model.sequence[0]]
        for t, task in enumerate(model.sequence):
            tower = _linears(teaching.towers[t].children())
            if t == 0:
                copy_parallel_mlp(model.first_tower, 0, tower)
            else:
                copy_parallel_mlp(model.towers, others.index(task), tower)
            head = model.task_names.index(task)
            copy_parallel_mlp(model.heads, head, _linears(teaching.heads[t : t + 1]))
        d, ait = units[-1], model.ait
        with torch.no_grad():
            for s in range(len(model.sequence) - 1):
                transfer, *projections = _linears(
                    [teaching.transfer[s], teaching.h1[s], teaching.h2[s], teaching.h3[s]]
                )
                transfer.weight.copy_(ait.transfer_weight[s].T)  # [in, out] -> [out, in]
                transfer.bias.copy_(ait.transfer_bias[s])
                for i, h in enumerate(projections):  # h1 | h2 | h3 side by side in the library
                    h.weight.copy_(ait.projection[s][:, i * d : (i + 1) * d].T)
        return teaching
