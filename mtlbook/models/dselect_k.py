"""DSelect-k: a differentiable gate that selects at most ``k`` experts per task.

Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong and Chi, "DSelect-k:
Differentiable Selection in the Mixture of Experts with Applications to Multi-Task Learning",
NeurIPS 2021. MMoE's softmax gates give every expert a non-zero weight; Top-k gates are sparse
but not continuous. DSelect-k is sparse *and* smooth: each task's gate is a softmax mixture of
``k`` single-expert selectors, and each selector picks one of the ``n`` experts through a binary
encoding of the expert's index, relaxed by the smooth-step function.

With ``m = ⌈log₂ n⌉`` and ``γ > 0``, the smooth-step function is

    S(t) = 0                                  if t ≤ −γ/2,
           −2 t³ / γ³ + 3 t / (2γ) + 1/2      if −γ/2 < t < γ/2,
           1                                  if t ≥ γ/2,

and a single-expert selector with parameters ``z ∈ ℝ^m`` gives expert ``l`` (``l = 0 … n−1``,
with bits ``b_1(l) … b_m(l)``, most significant first) the weight

    r(z)_l = Π_{j=1..m} S(z_j)^{b_j(l)} · (1 − S(z_j))^{1 − b_j(l)}.

Task ``t``'s gate and mixture are

    q_t = Σ_{i=1..k} softmax(α_t)_i · r(z_t^{(i)}),      f_t = Σ_l q_{t,l} · E_l(x),
    ŷ_t = tower_t(f_t).

Once every ``S(z_j)`` is 0 or 1, each ``r`` is one-hot and ``q_t`` has at most ``k`` non-zero
entries. With per-example gating (the default) ``z_t^{(i)}`` and ``α_t`` are linear functions of
the input; with static gating (``per_example=False``, the paper's "task-only conditioning")
they are parameters. The optional entropy regulariser ``λ Σ_x Σ_{t,i} H(r(z_t^{(i)}(x)))``,
with ``H(r) = −Σ_l r_l log(r_l + 10⁻⁶)``, pushes the selectors to a single expert sooner. When
``n`` is not a power of 2 some codes name no expert and a selector's weights may sum to less
than 1; as in the authors' implementation the term ``Σ_x Σ_{t,i} (1 / Σ_l r(z_t^{(i)}(x))_l − 1)``
is then added to keep them on real experts (the ``−1``, a constant the authors' term does not
have, makes it 0 once they are and changes no gradient). Both terms are *summed* over the
samples ``x`` of the batch, as in the authors' code: next to a loss averaged over the batch,
``λ`` acts ``batch size`` times more strongly than on a per-sample mean (with static gates
there is no sum over ``x``). Initial values follow the authors' implementation:
``z ~ U(−γ/100, γ/100)``, ``α ~ U(−0.05, 0.05)``.

The experts are shared by all tasks as in MMoE (:class:`~mtlbook.models.MMoE`), one stacked
weight tensor per layer; all tasks' selectors come from one linear layer. Chapter 12.3.3 of the
book compares the gate with MMoE's softmax gates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .experts import StackedExperts, mix
from .layers import InputLayer, ParallelMLP

__all__ = ["DSelectK", "DSelectKGates", "smooth_step"]

#: Inside the logarithm of the entropy, as in the authors' implementation.
_EPSILON = 1e-6


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """The cubic smooth-step: 0 below ``−γ/2``, 1 above ``γ/2``, continuously differentiable."""
    t = t.clamp(-gamma / 2, gamma / 2)  # S is flat (0 or 1) outside; its gradient is 0 there
    return t * (1.5 / gamma - 2.0 * t * t / gamma**3) + 0.5


class DSelectKGates(nn.Module):
    """``n_gates`` DSelect-k gates over ``n_experts`` experts, all from one linear layer.

    Input ``[batch, in_dim]``; output ``[batch, gates, experts]`` weights (non-negative; rows
    sum to 1 when ``n_experts`` is a power of 2, else to at most 1). After each forward pass
    :attr:`selectors` holds the single-expert selectors ``r``: ``[batch, gates, k, experts]``
    (per-example) or ``[gates, k, experts]`` (static).

    Args:
        in_dim: input size (ignored by static gates).
        n_gates: number of gates (one per task).
        n_experts: number of experts ``n`` (≥ 2).
        k: number of single-expert selectors per gate, the most experts a gate selects.
        gamma: width ``γ`` of the smooth-step's cubic part.
        per_example: gates depend on the input (``True``) or are per-task parameters.
    """

    def __init__(
        self,
        in_dim: int,
        n_gates: int,
        n_experts: int,
        k: int,
        gamma: float = 1.0,
        per_example: bool = True,
    ) -> None:
        super().__init__()
        self.in_dim, self.n_gates, self.n_experts, self.k = in_dim, n_gates, n_experts, k
        self.gamma, self.per_example = float(gamma), bool(per_example)
        self.n_bits = math.ceil(math.log2(n_experts))
        self.power_of_two = n_experts == 2**self.n_bits
        self.n_z = n_gates * k * self.n_bits  # selector logits
        self.n_alpha = n_gates * k if k > 1 else 0  # with k = 1 the softmax is identically 1
        if per_example:  # one linear layer for every gate's z and α
            self.weight = nn.Parameter(torch.empty(in_dim, self.n_z + self.n_alpha))
            self.bias = nn.Parameter(torch.empty(self.n_z + self.n_alpha))
        else:
            self.z = nn.Parameter(torch.empty(n_gates, k, self.n_bits))
            self.alpha = nn.Parameter(torch.empty(n_gates, k)) if self.n_alpha else None
        self.selectors: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        z_bound = self.gamma / 100
        with torch.no_grad():
            if self.per_example:
                for p in (self.weight, self.bias):
                    p[..., : self.n_z].uniform_(-z_bound, z_bound)
                    p[..., self.n_z :].uniform_(-0.05, 0.05)
            else:
                self.z.uniform_(-z_bound, z_bound)
                if self.alpha is not None:
                    self.alpha.uniform_(-0.05, 0.05)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Selector logits ``z`` ``[..., gates, k, bits]`` and selector-weight logits ``α``
        ``[..., gates, k]`` (``None`` when ``k = 1``); ``...`` is the batch for per-example
        gates, nothing for static ones."""
        if not self.per_example:
            return self.z, self.alpha
        out = torch.addmm(self.bias, x, self.weight)  # [batch, z + alpha]
        z = out[:, : self.n_z].view(-1, self.n_gates, self.k, self.n_bits)
        alpha = out[:, self.n_z :].view(-1, self.n_gates, self.k) if self.n_alpha else None
        return z, alpha

    def select(self, z: torch.Tensor) -> torch.Tensor:
        """Single-expert selectors ``r(z)``: ``[..., bits]`` logits to ``[..., experts]``."""
        s = smooth_step(z, self.gamma)  # [..., bits]
        r = torch.ones_like(s[..., :1])  # [..., 1]
        for j in range(self.n_bits):  # a loop over the ⌈log₂ n⌉ bits, not over experts
            bit = s[..., j : j + 1]
            r = torch.stack((r * (1 - bit), r * bit), dim=-1).flatten(-2)  # [..., 2^(j+1)]
        return r[..., : self.n_experts]  # [..., experts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, alpha = self.logits(x)
        r = self.select(z)  # [(batch,) gates, k, experts]
        self.selectors = r
        if alpha is None:
            q = r.squeeze(-2)  # k = 1: [(batch,) gates, experts]
        else:
            q = (torch.softmax(alpha, dim=-1).unsqueeze(-1) * r).sum(-2)  # [(batch,) g, e]
        if not self.per_example:
            q = q.unsqueeze(0).expand(x.shape[0], -1, -1)  # [batch, gates, experts]
        return q

    def penalty(self, entropy_reg: float) -> torch.Tensor | None:
        """The regularisation of the last forward pass's selectors (``None`` if there is none):
        ``entropy_reg`` × their entropy, plus the reachability term when ``n`` is not a power
        of 2; summed over the batch, the gates and the selectors (the authors' scale)."""
        r = self.selectors
        if r is None or (entropy_reg == 0 and self.power_of_two):
            return None
        per_sample = r.new_zeros(r.shape[:-2])  # [(batch,) gates]
        if entropy_reg:
            entropy = -(r * torch.log(r + _EPSILON)).sum(-1)  # [(batch,) gates, k]
            per_sample = per_sample + entropy_reg * entropy.sum(-1)
        if not self.power_of_two:
            per_sample = per_sample + (1 / r.sum(-1) - 1).sum(-1)
        return per_sample.sum()

    def extra_repr(self) -> str:
        return (
            f"gates={self.n_gates}, experts={self.n_experts}, k={self.k}, "
            f"gamma={self.gamma}, per_example={self.per_example}"
        )


class DSelectK(MultiTaskModel):
    """Shared experts and one DSelect-k gate per task, then one tower per task.

    Args:
        schema: the data schema (``data.schema``).
        n_experts: number of experts ``n`` (≥ 2).
        k: the most experts each task's gate selects (``1 ≤ k ≤ n``).
        expert_units: layer sizes of each expert (ReLU after every layer).
        tower_units: hidden layer sizes of each task tower (the output layer is added).
        gamma: width ``γ`` of the smooth-step's cubic part; larger values are smoother and
            take longer to reach exact zeros.
        entropy_reg: weight ``λ`` of the selectors' entropy, summed over the batch as in the
            authors' code, added to the training loss through :meth:`regularization` (0: none).
        per_example: input-dependent gates (``True``) or one fixed gate per task.
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer of the experts and towers.
        seed: seed of the initial weights (``None``: use the global random state).
    """

    def __init__(
        self,
        schema: Schema,
        n_experts: int = 4,
        k: int = 2,
        expert_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (32,),
        gamma: float = 1.0,
        entropy_reg: float = 0.0,
        per_example: bool = True,
        embedding_dim: int = 8,
        dropout: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        if not isinstance(n_experts, int) or n_experts < 2:
            raise ValueError(
                f"DSelectK selects among experts: n_experts must be an integer "
                f"≥ 2, got {n_experts!r}"
            )
        if not isinstance(k, int) or not 1 <= k <= n_experts:
            raise ValueError(
                f"k must be an integer with 1 ≤ k ≤ n_experts = {n_experts}, got {k!r}"
            )
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma!r}")
        if not entropy_reg >= 0:
            raise ValueError(f"entropy_reg must be ≥ 0, got {entropy_reg!r}")
        expert_units = _check_units("expert_units", expert_units)
        tower_units = _check_units("tower_units", tower_units) if tuple(tower_units) else ()
        n_tasks = len(schema.tasks)
        self.entropy_reg = float(entropy_reg)
        self.input = InputLayer(schema, embedding_dim)
        self.experts = StackedExperts(
            self.input.output_dim,
            expert_units,
            [f"shared/{i}" for i in range(n_experts)],
            dropout=dropout,
        )
        self.gates = DSelectKGates(self.input.output_dim, n_tasks, n_experts, k, gamma, per_example)
        self.towers = ParallelMLP(n_tasks, expert_units[-1], (*tower_units, 1), dropout=dropout)
        self.reset_parameters(seed)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The input layer and every expert: all tasks' losses depend on them (each gate is
        one task's own)."""
        return [*self.input.parameters(), *self.experts.parameters()]

    @property
    def regularization_reduction(self) -> str:  # type: ignore[override]
        """``"sum"``: the per-example penalty is summed over the batch (static gates: no batch)."""
        return "sum" if self.gates.per_example else "mean"

    def regularization(self) -> torch.Tensor | None:
        """The selectors' entropy (times ``entropy_reg``) on the last forward pass, plus the
        reachability term when ``n_experts`` is not a power of 2; ``None`` when neither."""
        return self.gates.penalty(self.entropy_reg)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        self._clear_gates()
        x = self.input(batch)  # [batch, input_dim]
        experts = self.experts(x)  # [experts, batch, units]
        weights = self.gates(x)  # [batch, tasks, experts]
        fused = mix(weights, experts)  # [tasks, batch, units]
        for k, task in enumerate(self.task_names):
            self._record_gate(0, task, self.experts.names, weights[:, k])
        out = self.towers(fused).squeeze(-1)  # [tasks, batch]
        return dict(zip(self.task_names, out, strict=True))
