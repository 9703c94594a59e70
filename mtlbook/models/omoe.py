"""OMoE: One-gate Mixture-of-Experts, the baseline of Ma, Zhao, Yi, Chen, Hong and Chi (KDD 2018).

"Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts" compares
MMoE with this model: the same ``n`` experts, but a single softmax gate shared by every task,

    g(x) = softmax(W x + b) ∈ Δ^n,
    f(x) = Σ_{i=1..n} g(x)_i · E_i(x),
    ŷ_k = tower_k(f(x)),

so all tasks read the same mixture, as they read the same bottom in Shared-Bottom. The gap
between OMoE and MMoE measures what per-task gates buy (chapter 12.3.3 of the book).
"""

from __future__ import annotations

from torch import nn

from .mmoe import MMoE

__all__ = ["OMoE"]


class OMoE(MMoE):
    """Shared experts and one shared softmax gate; one tower per task.

    Built exactly like :class:`MMoE` (same arguments and defaults) with a single gate; its
    record is named ``"shared"``.

    Args:
        schema: the data schema (``data.schema``).
        n_experts: number of experts ``n``.
        expert_units: layer sizes of each expert (ReLU after every layer).
        tower_units: hidden layer sizes of each task tower (the output layer is added).
        embedding_dim: size of each categorical field's embedding.
        dropout: dropout after each hidden layer of the experts and towers.
        seed: seed of the initial weights (``None``: use the global random state).
    """

    one_gate = True

    def shared_parameters(self) -> list[nn.Parameter]:
        """The input layer, the gate and every expert: all tasks' losses depend on them.

        Listed from the input towards the towers, the gate before the experts it mixes, so that
        the last shared layer (GradNorm's) is the experts' last layer, as in MMoE."""
        return [*self.input.parameters(), *self.gates.parameters(), *self.experts.parameters()]
