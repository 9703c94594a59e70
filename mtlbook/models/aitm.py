"""AITM: Adaptive Information Transfer Multi-task (Xi, Chen, Yan, Zhang, Zhu, Zhuang & Chen,
KDD 2021, "Modeling the Sequential Dependence among Audience Multi-step Conversions with
Multi-task Learning in Targeted Display Advertising").

The tasks form a sequence of conversion steps ``1 → 2 → … → T`` (impression → click →
purchase), each step possible only after the previous one. Every task ``t`` has a tower on the
shared embedding, ``q_t = tower_t(embed(x))``; from the second step on, the representation of
the previous step is passed forward through a transfer unit and mixed with the task's own one
by the Adaptive Information Transfer (AIT) module, an attention over the two vectors
``u ∈ {p_{t−1}, q_t}``:

    p_{t−1} = g_{t−1}(z_{t−1})                              (transfer: dense + ReLU)
    w_u     = softmax_u( ⟨h1(u), h2(u)⟩ / √d )               (d = tower_units[-1])
    z_t     = Σ_u w_u · h3(u),          z_1 = q_1
    ŷ_t     = σ(head_t(z_t))

``h1, h2, h3`` are linear projections ``d → d`` of each step. The Behavioural Expectation
Calibrator penalises a later step predicted as more likely than the earlier one (a purchase
needs a click, so ``ŷ_t ≤ ŷ_{t−1}`` should hold):

    L = Σ_t BCE(y_t, ŷ_t) + α · Σ_{t=2..T} mean_x max(ŷ_t(x) − ŷ_{t−1}(x), 0).

The paper sums the calibrator over the samples; we average it, so that ``α`` (0.6 by default,
the value of the authors' code) does not depend on the batch size. The calibrator is returned
by :meth:`AITM.regularization`, computed from the probabilities of the last forward pass. Any
task of the schema outside the sequence (e.g. the regression task ``dwell_time``) gets a plain
tower and head on the shared embedding. Chapter 12.5 of the book explains the model next to
ESMM.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from itertools import pairwise

import torch
from torch import nn

from ..data import Batch, Schema
from .base import MultiTaskModel, _check_units
from .layers import InputLayer, ParallelMLP

__all__ = ["AITM", "AdaptiveInformationTransfer", "calibration_penalty"]


def calibration_penalty(probabilities: torch.Tensor) -> torch.Tensor:
    """The behavioural expectation calibrator without its weight:
    ``Σ_{t≥2} mean(max(ŷ_t − ŷ_{t−1}, 0))`` for ``probabilities`` ``[steps, batch]``."""
    excess = torch.relu(probabilities[1:] - probabilities[:-1])  # [steps - 1, batch]
    return excess.mean(dim=1).sum()


class AdaptiveInformationTransfer(nn.Module):
    """The transfer units and AIT attentions of ``n_steps`` consecutive step pairs.

    Step ``s`` (``0 ≤ s < n_steps``) maps ``(z_prev, q)`` to ``z`` and the attention weights
    ``[batch, 2]`` over ``(p_prev, q)``. The parameters of all steps are stacked tensors.
    """

    def __init__(self, n_steps: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_steps, self.dim = n_steps, dim
        self.transfer_weight = nn.Parameter(torch.empty(n_steps, dim, dim))
        self.transfer_bias = nn.Parameter(torch.empty(n_steps, dim))
        # h1 | h2 | h3 side by side: one matmul gives all three projections.
        self.projection = nn.Parameter(torch.empty(n_steps, dim, 3 * dim))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.dim)  # as nn.Linear
        for p in (self.transfer_weight, self.transfer_bias, self.projection):
            nn.init.uniform_(p, -bound, bound)

    def forward(
        self, step: int, z_prev: torch.Tensor, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.relu(z_prev @ self.transfer_weight[step] + self.transfer_bias[step])
        p = self.dropout(p)  # [batch, d]
        u = torch.stack([p, q], dim=1)  # [batch, 2, d]
        h1, h2, h3 = (u @ self.projection[step]).split(self.dim, dim=-1)  # 3 × [batch, 2, d]
        weights = torch.softmax((h1 * h2).sum(-1) / math.sqrt(self.dim), dim=-1)  # [batch, 2]
        z = (weights.unsqueeze(-1) * h3).sum(1)  # [batch, d]
        return z, weights

    def extra_repr(self) -> str:
        return f"n_steps={self.n_steps}, dim={self.dim}"


class AITM(MultiTaskModel):
    """Adaptive Information Transfer Multi-task model for sequential conversion steps.

    ``forward`` returns logits for the binary tasks (and predictions for any regression task
    outside the sequence); :meth:`regularization` returns ``α ·`` the calibrator of the last
    forward pass, which :func:`mtlbook.fit` adds to the loss. The AIT attention weights are
    recorded as gates: level ``t`` (the step's 1-based position in the sequence, ``t ≥ 2``),
    gate = the task, experts ``("transfer", "own")``.

    Args:
        schema: the data schema (``data.schema``); at least two binary tasks.
        sequence: the conversion steps in order, e.g. ``("click", "purchase")``; default: the
            schema's binary tasks in schema order.
        tower_units: layer sizes of each task's tower; the last one is the size ``d`` of
            ``q_t``, ``p_t`` and ``z_t``.
        embedding_dim: size of each categorical field's embedding (shared by all towers).
        dropout: dropout after each hidden layer and after the transfer unit.
        calibrator_weight: ``α``, the weight of the behavioural expectation calibrator
            (0 switches it off).
        seed: seed of the initial weights (``None``: use the global random state).
    """

    min_tasks = 2
    #: AITM needs this many binary tasks (the tests read it; extra tasks may be of any kind).
    min_binary_tasks = 2

    def __init__(
        self,
        schema: Schema,
        sequence: Sequence[str] | None = None,
        tower_units: Sequence[int] = (64, 32),
        embedding_dim: int = 8,
        dropout: float = 0.0,
        calibrator_weight: float = 0.6,
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        names = schema.task_names
        if sequence is None:
            sequence = tuple(t.name for t in schema.tasks if t.kind == "binary")
            if len(sequence) < 2:
                raise ValueError(
                    f"AITM needs at least 2 binary tasks to form a conversion sequence; the "
                    f"schema's tasks are {[(t.name, t.kind) for t in schema.tasks]}"
                )
        else:
            sequence = (sequence,) if isinstance(sequence, str) else tuple(sequence)
            unknown = [s for s in sequence if s not in names]
            if unknown:
                raise ValueError(
                    f"AITM: unknown task(s) {unknown} in sequence; the schema's "
                    f"tasks are {list(names)}"
                )
            if len(set(sequence)) != len(sequence):
                raise ValueError(f"AITM: sequence {list(sequence)} repeats a task")
            if len(sequence) < 2:
                raise ValueError(f"AITM: the sequence needs at least 2 steps, got {list(sequence)}")
            not_binary = [s for s in sequence if schema.task(s).kind != "binary"]
            if not_binary:
                raise ValueError(
                    f"AITM: the sequence's steps must be binary tasks; {not_binary} are not"
                )
        if not calibrator_weight >= 0:
            raise ValueError(f"calibrator_weight must be ≥ 0, got {calibrator_weight!r}")
        tower_units = _check_units("tower_units", tower_units)
        self.sequence: tuple[str, ...] = sequence
        self.calibrator_weight = float(calibrator_weight)
        self._steps = [names.index(s) for s in sequence]
        dim = tower_units[-1]
        self.input = InputLayer(schema, embedding_dim)
        # Every task (in the sequence or not) has a tower giving q and a head on z (= q off
        # the sequence). The first step's tower is apart: every later step reaches it through
        # the transfer units. The other towers, and the heads, are one batched op each.
        self.first_tower = ParallelMLP(
            1, self.input.output_dim, tower_units, dropout=dropout, final_activation=True
        )
        self.towers = ParallelMLP(
            len(names) - 1,
            self.input.output_dim,
            tower_units,
            dropout=dropout,
            final_activation=True,
        )
        self.ait = AdaptiveInformationTransfer(len(sequence) - 1, dim, dropout=dropout)
        self.heads = ParallelMLP(len(names), dim, (1,))
        self._probabilities: torch.Tensor | None = None
        self.reset_parameters(seed)

    def __getstate__(self) -> dict:
        # The probabilities of the last forward pass carry its graph, which cannot be copied
        # or pickled; a copy of the model starts without them.
        state = super().__getstate__()
        state["_probabilities"] = None
        return state

    def shared_parameters(self) -> list[nn.Parameter]:
        """The embedding tables, which every task's tower reads, and, when every task of the
        schema is a step of the sequence, the first step's tower, which every later step
        reaches through the transfer units."""
        params = list(self.input.parameters())
        if len(self.sequence) == len(self.task_names):
            params += list(self.first_tower.parameters())
        return params

    def check_training_masks(self, masked: Collection[str]) -> None:
        """Refuse training data in which a step of the sequence is masked: every step is
        learned over every impression (a purchase is 0 where there was no click), which the
        transfer from the step before and the calibrator ``ŷ_t ≤ ŷ_{t−1}`` rely on."""
        steps = [s for s in self.sequence if s in masked]
        if steps:
            raise ValueError(
                f"AITM: step(s) {steps} of the conversion sequence {list(self.sequence)} are "
                "masked in the training data, but AITM learns every step over every impression "
                "(a later step is 0 where the earlier one did not happen); a step trained on a "
                "subspace only is fitted on a biased sample. Label each step on every impression "
                "and declare it without a mask"
            )

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        self._clear_gates()
        x = self.input(batch)  # [batch, input_dim]
        q = list(self.towers(x).unbind(0))  # (tasks − 1) × [batch, d]
        q.insert(self._steps[0], self.first_tower(x)[0])  # tasks × [batch, d]
        z = list(q)  # z_1 = q_1
        for s, (prev, cur) in enumerate(pairwise(self._steps)):
            z[cur], weights = self.ait(s, z[prev], q[cur])  # [batch, d], [batch, 2]
            self._record_gate(
                level=s + 2, gate=self.task_names[cur], experts=("transfer", "own"), weights=weights
            )
        out = self.heads(torch.stack(z)).squeeze(-1)  # [tasks, batch]
        self._probabilities = torch.sigmoid(out[self._steps])  # [steps, batch]
        return dict(zip(self.task_names, out, strict=True))

    def regularization(self) -> torch.Tensor | None:
        """``α · Σ_{t≥2} mean(max(ŷ_t − ŷ_{t−1}, 0))`` from the last forward pass."""
        if self.calibrator_weight == 0:
            return None
        if self._probabilities is None:
            raise RuntimeError(
                "AITM.regularization() uses the last forward pass; call the model on a batch first"
            )
        return self.calibrator_weight * calibration_penalty(self._probabilities)
