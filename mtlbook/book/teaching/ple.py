"""CGC and PLE written out (chapter 12.3.4): task-specific experts, shared experts, custom gates.

The teaching versions of :class:`mtlbook.models.CGC` and :class:`mtlbook.models.PLE` (Tang,
Liu, Zhao and Gong, RecSys 2020). Every expert, gate and tower is its own ``nn.Linear`` stack,
the experts are named as in the library (``"task1/0"``, ``"shared/1"``), and the forward pass
loops over tasks and levels:

    S_k = [E_{k,1}, …, E_{k,m_k}, E_{s,1}, …, E_{s,m_s}],
    g_k = softmax(W_k q_k),     f_k = Σ_i g_k,i · S_k,i,     ŷ_k = t_k(f_k),

and, in PLE below the top level, the shared gate over every expert of the level,
``f_s = Σ_i softmax(W_s q_s)_i · [all experts]_i``. ``from_library`` copies a library model's
weights (its stacked experts, compact gate columns and batched towers) into these layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from ...models import PLE
from ...models.layers import ParallelMLP
from ...models.ple import ExtractionLevel

__all__ = ["TeachingCGC", "TeachingExtractionLevel", "TeachingPLE", "mixture", "mlp"]


def mlp(sizes: Sequence[int], relu_last: bool) -> nn.Sequential:
    """``nn.Linear`` layers of the given sizes with ReLU between them (and after the last one
    when ``relu_last``: experts end with ReLU, towers with the logit)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if relu_last or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mixture(g: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
    """``f = Σ_i g_i · E_i``: gate weights ``g [batch, n]``, ``n`` outputs ``[batch, units]``."""
    f = torch.zeros_like(outputs[0])
    for i, e in enumerate(outputs):
        f = f + g[:, i : i + 1] * e  # g_i · E_i, each sample weighted by its own g
    return f  # [batch, units]


class TeachingCGC(nn.Module):
    """CGC: each task's gate mixes that task's own experts and the shared experts."""

    def __init__(
        self,
        tasks: Sequence[str],
        in_dim: int,
        n_task_experts: int,
        n_shared_experts: int,
        expert_units: Sequence[int],
        tower_units: Sequence[int],
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        names = [f"{t}/{i}" for t in self.tasks for i in range(n_task_experts)]  # E_{k,i}
        names += [f"shared/{i}" for i in range(n_shared_experts)]  # E_{s,i}
        self.experts = nn.ModuleDict({n: mlp([in_dim, *expert_units], True) for n in names})
        self.gates = nn.ModuleDict(  # W_k: one logit per expert of S_k
            {t: nn.Linear(in_dim, n_task_experts + n_shared_experts) for t in self.tasks}
        )
        self.towers = nn.ModuleDict(  # t_k: hidden layers, then one logit
            {t: mlp([expert_units[-1], *tower_units, 1], False) for t in self.tasks}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = {name: expert(x) for name, expert in self.experts.items()}  # E(x): [batch, units]
        shared = [h[name] for name in h if name.startswith("shared/")]
        out = {}
        for t in self.tasks:
            s_k = [h[name] for name in h if name.startswith(f"{t}/")] + shared  # S_k(x)
            g_k = torch.softmax(self.gates[t](x), dim=-1)  # g_k(x): [batch, m_k + m_s]
            f_k = mixture(g_k, s_k)  # f_k(x) = Σ_i g_k(x)_i S_k(x)_i
            out[t] = self.towers[t](f_k).squeeze(-1)  # ŷ_k = t_k(f_k(x)): [batch]
        return out

    @classmethod
    def from_library(cls, model: PLE) -> TeachingCGC:
        """A teaching CGC with the sizes and weights of ``model`` (a CGC: a one-level PLE)."""
        if not isinstance(model, PLE) or model.n_levels != 1:
            levels = getattr(model, "n_levels", None)
            raise ValueError(f"expected a CGC (one level), got {type(model).__name__}, {levels=}")
        teaching = cls(**_sizes(model))
        _copy_level(model.levels[0], teaching)
        _copy_towers(model.towers, teaching.towers)
        return teaching


class TeachingExtractionLevel(nn.Module):
    """One PLE level: CGC's experts and task gates, plus (below the top) the shared gate."""

    def __init__(
        self,
        tasks: Sequence[str],
        in_dim: int,
        n_task_experts: int,
        n_shared_experts: int,
        expert_units: Sequence[int],
        shared_gate: bool,
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        names = [f"{t}/{i}" for t in self.tasks for i in range(n_task_experts)]
        names += [f"shared/{i}" for i in range(n_shared_experts)]
        self.experts = nn.ModuleDict({n: mlp([in_dim, *expert_units], True) for n in names})
        self.gates = nn.ModuleDict(  # W_k, as in CGC
            {t: nn.Linear(in_dim, n_task_experts + n_shared_experts) for t in self.tasks}
        )
        self.shared_gate = nn.Linear(in_dim, len(names)) if shared_gate else None  # W_s

    def forward(self, q: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # q: the level's inputs q_k and q_s by owner ("task1", …, "shared"), each [batch, in]
        h = {name: e(q[name.split("/")[0]]) for name, e in self.experts.items()}  # E(q_owner)
        shared = [h[name] for name in h if name.startswith("shared/")]
        f = {}
        for t in self.tasks:  # f_k: task k's gate over its own and the shared experts
            g_k = torch.softmax(self.gates[t](q[t]), dim=-1)
            f[t] = mixture(g_k, [h[name] for name in h if name.startswith(f"{t}/")] + shared)
        if self.shared_gate is not None:  # f_s: the shared gate over every expert
            g_s = torch.softmax(self.shared_gate(q["shared"]), dim=-1)
            f["shared"] = mixture(g_s, list(h.values()))
        return f  # the next level's q (the top level has no "shared")


class TeachingPLE(nn.Module):
    """PLE: ``n_levels`` extraction levels stacked, then one tower per task."""

    def __init__(
        self,
        tasks: Sequence[str],
        in_dim: int,
        n_levels: int,
        n_task_experts: int,
        n_shared_experts: int,
        expert_units: Sequence[int],
        tower_units: Sequence[int],
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        dims = [in_dim] + [expert_units[-1]] * (
            n_levels - 1
        )  # later levels read f of the one below
        self.levels = nn.ModuleList(
            TeachingExtractionLevel(
                self.tasks,
                dims[level],
                n_task_experts,
                n_shared_experts,
                expert_units,
                shared_gate=level < n_levels - 1,
            )
            for level in range(n_levels)
        )
        self.towers = nn.ModuleDict(
            {t: mlp([expert_units[-1], *tower_units, 1], False) for t in self.tasks}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        q = {owner: x for owner in [*self.tasks, "shared"]}  # the first level: all read x
        for level in self.levels:
            q = level(q)  # q_k = f_k and q_s = f_s of this level
        return {t: self.towers[t](q[t]).squeeze(-1) for t in self.tasks}  # ŷ_k: [batch]

    @classmethod
    def from_library(cls, model: PLE) -> TeachingPLE:
        """A teaching PLE with the sizes and weights of ``model`` (a PLE or a CGC)."""
        if not isinstance(model, PLE):
            raise ValueError(f"expected a PLE (or CGC), got {type(model).__name__}")
        teaching = cls(n_levels=model.n_levels, **_sizes(model))
        for source, level in zip(model.levels, teaching.levels, strict=True):
            _copy_level(source, level)
        _copy_towers(model.towers, teaching.towers)
        return teaching


# ---------------------------------------------------------------- copying the library's weights


def _sizes(model: PLE) -> dict:
    """The constructor arguments shared by the teaching CGC and PLE, read off ``model``."""
    level = model.levels[0]
    assert isinstance(level, ExtractionLevel)
    n_task_experts = level.n_task_experts
    towers = model.towers
    assert isinstance(towers, ParallelMLP)
    return {
        "tasks": list(model.task_names),
        "in_dim": model.input.output_dim,
        "n_task_experts": n_task_experts,
        "n_shared_experts": level.experts.n_experts - level.n_tasks * n_task_experts,
        "expert_units": list(level.experts.units),
        "tower_units": list(towers.units[:-1]),
    }


def _linears(stack: nn.Module) -> list[nn.Linear]:
    return [m for m in stack.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def _copy_mlp(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], index: int, stack: nn.Module):
    """Copy network ``index`` of per-layer ``[n, in, out]`` weights and ``[n, 1, out]`` biases
    into the ``nn.Linear`` layers of ``stack``."""
    linears = _linears(stack)
    if len(linears) != len(layers):
        raise ValueError(f"{len(layers)} layers to copy into {len(linears)} nn.Linear layers")
    for linear, (weight, bias) in zip(linears, layers, strict=True):
        linear.weight.copy_(weight[index].T)
        linear.bias.copy_(bias[index, 0])


@torch.no_grad()
def _copy_gate(weight: torch.Tensor, bias: torch.Tensor, linear: nn.Module) -> None:
    """Copy ``[in, n]`` gate columns and ``[n]`` biases into an ``nn.Linear(in, n)``."""
    assert isinstance(linear, nn.Linear)
    linear.weight.copy_(weight.T)
    linear.bias.copy_(bias)


def _copy_level(source: nn.Module, target: nn.Module) -> None:
    """Copy a library :class:`~mtlbook.models.ple.ExtractionLevel` into a teaching CGC or level."""
    assert isinstance(source, ExtractionLevel)
    experts, gates = target.experts, target.gates
    shared_gate = getattr(target, "shared_gate", None)
    assert isinstance(experts, nn.ModuleDict) and isinstance(gates, nn.ModuleDict)
    if list(experts) != list(source.experts.names):
        raise ValueError(f"experts {list(experts)} vs the library's {source.experts.names}")
    stacked = source.experts.stacked()  # per layer: [experts, in, out], [experts, 1, out]
    for index, name in enumerate(source.experts.names):
        _copy_mlp(stacked, index, experts[name])
    # The task gates' stored columns are gate by gate, each gate's experts in order: a block
    # of counts[k] consecutive columns per task (see SoftmaxGates).
    start = 0
    for task, count in zip(gates, source.gates.counts, strict=True):
        end = start + count
        _copy_gate(source.gates.weight[:, start:end], source.gates.bias[start:end], gates[task])
        start = end
    if (shared_gate is None) != (source.shared_gate is None):
        raise ValueError("the teaching level and the library level disagree on the shared gate")
    if shared_gate is not None and source.shared_gate is not None:
        _copy_gate(source.shared_gate.weight, source.shared_gate.bias, shared_gate)


def _copy_towers(towers: nn.Module, teaching: nn.ModuleDict) -> None:
    """Copy the library's batched towers (one per task, in order) into one stack per task."""
    assert isinstance(towers, ParallelMLP)
    layers = list(zip(towers.weights, towers.biases, strict=True))
    for index, task in enumerate(teaching):
        _copy_mlp(layers, index, teaching[task])
