"""FAMO: Fast Adaptive Multitask Optimization.

Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023.
FAMO asks every step to decrease all task losses at the same *rate* (in log space), using
the losses only: one backward pass, no per-task gradients. It keeps task logits ξ (one per
task, initialised to 0) and weights ``z = softmax(ξ)``. With positive losses ℓ_k:

* **Model step.** Update the model along

      d = Σ_k c · z_k / ℓ_k · ∇ℓ_k,    c = (Σ_k z_k / ℓ_k)^{-1},

  which is the gradient of ``c · Σ_k z_k · log ℓ_k`` (c held constant); so a task counts
  in proportion to ``z_k`` and inversely to its current loss.
* **Weight step.** After the model step, measure each task's decrease of log loss,

      δ_k = log ℓ_k(t) − log ℓ_k(t+1),

  and move the logits against ``Jᵀδ`` (J = ∂z/∂ξ, the softmax Jacobian) with their own Adam
  optimiser (learning rate β = 0.025, weight decay γ): a task whose loss fell less than the
  others gets a larger weight next time.

Positive losses: as the official code does, ℓ_k is replaced by ``ℓ_k − m_k + ε`` with a
known lower bound ``m_k`` of the loss (``min_losses``, 0 by default: log-loss and squared
error are never negative) and ``ε = 1e-8``. A task whose loss is not above ``m_k`` in a step
(a masked task with no labelled sample in the batch has loss exactly 0) sits that step out:
it gets no weight in the model step, and no weight step uses it.

Which ``ℓ(t+1)``: as in the official training loops, the losses after the step are computed
with an extra forward pass (no gradient) on the same batch: :func:`mtlbook.fit` calls
:meth:`FAMO.after_step` right after the optimiser step, which runs it and calls
:meth:`FAMO.update`. A custom training loop that does not call ``after_step`` still works:
the pending weight step then runs at the start of the next :meth:`FAMO.backward` with that
step's losses (the same model, but the next batch: a noisier δ).
Chapter 12.4.1 of the book compares FAMO with the other strategies.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ._per_task import (
    add_extra,
    check_number,
    check_task_values,
    in_task_order,
    model_device,
    stack_losses,
)
from .base import Weighting

__all__ = ["FAMO"]


class FAMO(Weighting):
    """Fast Adaptive Multitask Optimization: balanced decrease of the log losses.

    Args:
        lr: learning rate β of the logits' Adam optimiser (0.025 in the paper and code).
        weight_decay: γ, the (L2) weight decay of that optimiser, which pulls the weights
            back towards uniform. The official code uses 0.001 or 0.01 depending on the
            experiment (0.01 is the default of its ``famo.py``); 0.001 here.
        min_losses: ``{task: m_k}``, a lower bound of each task's loss (see above);
            ``None``: 0 for every task.
        eps: ε added to ``ℓ_k − m_k`` (1e-8, as in the official code).
        max_grad_norm: if given, clip the norm of the gradient of the model's shared
            parameters to it after the backward pass, as the official training code does
            (with 1.0); not part of the algorithm, so off by default.

    :attr:`weights` are ``z = softmax(ξ)`` (a distribution) as used by the latest step;
    :attr:`loss_multipliers` are the factors ``c · z_k / ℓ_k`` that step applied to the
    raw task losses. The logits are not returned by :meth:`parameters`: they have their own
    optimiser, as in the paper. The combined loss reported to the history is
    ``Σ_k (c · z_k / ℓ_k) · ℓ_k = c`` (plus any regulariser): a z-weighted harmonic mean of the
    task losses, not their sum.
    """

    #: The logits ξ, their optimiser, a pending weight step and the latest multipliers.
    state_attributes = ("logits", "_optimizer", "_previous", "_multipliers")

    def __init__(
        self,
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        min_losses: Mapping[str, float] | None = None,
        eps: float = 1e-8,
        max_grad_norm: float | None = None,
    ) -> None:
        self.lr = check_number("lr", lr, positive=True)
        self.weight_decay = check_number("weight_decay", weight_decay)
        self.eps = check_number("eps", eps, positive=True)
        self.max_grad_norm = (
            None
            if max_grad_norm is None
            else check_number("max_grad_norm", max_grad_norm, positive=True)
        )
        # Clipping takes the norm of the shared parameters' gradients, which sparse ones lack.
        self.sparse_gradients = self.max_grad_norm is None
        self._min_given = (
            None if min_losses is None else check_task_values("min_losses", min_losses)
        )

    def setup(self, task_names, model) -> None:
        super().setup(task_names, model)
        k = len(self.task_names)
        device = model_device(model)
        mins = (
            [0.0] * k
            if self._min_given is None
            else in_task_order("min_losses", self._min_given, self.task_names)
        )
        self._min = torch.tensor(mins, device=device)  # [n_tasks]
        self.logits = torch.zeros(k, device=device, requires_grad=True)  # ξ, [n_tasks]
        self._optimizer = torch.optim.Adam(
            [self.logits], lr=self.lr, weight_decay=self.weight_decay
        )
        # ℓ(t) − m + ε of the last step and which tasks took part, until its weight step.
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None
        self._multipliers = torch.zeros(k, device=device)

    # ------------------------------------------------------------------ the two steps
    def _shifted(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ℓ − m + ε`` and which tasks take part (``ℓ > m``), both ``[n_tasks]``."""
        above = values - self._min.to(values.dtype)
        present = above > 0
        return torch.where(present, above, 0.0) + self.eps, present

    def update(self, losses_after_step: Mapping[str, torch.Tensor] | torch.Tensor) -> None:
        """The weight step: update ξ with the losses of the latest step's batch *after* the
        optimiser step (``{task: loss}`` or an ``[n_tasks]`` tensor).

        Optional: without a call, the next :meth:`backward` does it with its own losses.
        """
        if self._previous is None:
            return
        values = (
            losses_after_step
            if isinstance(losses_after_step, torch.Tensor)
            else stack_losses(losses_after_step, self.task_names)
        )
        current, present = self._shifted(values.detach().to(self._min.device))
        (previous, was_present), self._previous = self._previous, None
        if not bool((present & was_present).all()):
            return  # some task sat out one of the two steps: no fair comparison
        delta = previous.log() - current.log()  # δ_k, [n_tasks]
        with torch.no_grad():
            z = torch.softmax(self.logits, dim=0)  # [n_tasks]
            # Jᵀδ with J = diag(z) − z zᵀ (symmetric): z ⊙ (δ − zᵀδ).
            self.logits.grad = (z * (delta - (z * delta).sum())).to(self.logits.dtype)
        self._optimizer.step()

    def after_step(self, model, batch) -> None:
        """The weight step on the same batch: one extra forward pass without gradients."""
        if self._previous is None:
            return
        with torch.no_grad():  # in training mode, as the losses before the step were
            self.update(model.task_losses(model(batch), batch))

    def backward(self, losses, model, extra=None):
        values = stack_losses(losses, self.task_names)  # [n_tasks]
        self.update(values)  # the weight step of the previous step, if still pending
        shifted, present = self._shifted(values.detach())
        z = torch.softmax(self.logits.detach(), dim=0).to(values.dtype)  # [n_tasks]
        z_present = torch.where(present, z, 0.0)
        if bool(present.any()):
            c = 1.0 / (z_present / shifted).sum()
            self._multipliers = c * z_present / shifted  # c · z_k / ℓ_k, [n_tasks]
            # The gradient of c · Σ_k z_k · log(ℓ_k − m_k + ε) is Σ_k multiplier_k · ∇ℓ_k.
            with_graph = values - self._min.to(values.dtype) + self.eps
            objective = c * (z_present * torch.log(torch.where(present, with_graph, 1.0))).sum()
        else:
            self._multipliers = torch.zeros_like(z)
            objective = values.sum() * 0.0
        add_extra(objective, extra).backward()
        if self.max_grad_norm is not None and hasattr(model, "shared_parameters"):
            torch.nn.utils.clip_grad_norm_(model.shared_parameters(), self.max_grad_norm)
        self._previous = (shifted, present)
        # For the history: the task losses weighted by the multipliers this step applied.
        return add_extra(
            (self._multipliers * values.detach()).sum(), None if extra is None else extra.detach()
        )

    # ------------------------------------------------------------------ reporting
    @property
    def weights(self) -> dict[str, float]:
        z = torch.softmax(self.logits.detach(), dim=0)
        return dict(zip(self.task_names, z.tolist(), strict=True))

    @property
    def loss_multipliers(self) -> dict[str, float]:
        """``c · z_k / (ℓ_k − m_k + ε)`` of the latest step: the factor that step applied to
        each raw task loss (0 for a task that sat the step out)."""
        return dict(zip(self.task_names, self._multipliers.tolist(), strict=True))
