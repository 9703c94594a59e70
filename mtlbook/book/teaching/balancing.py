"""Teaching versions of three loss-balancing strategies (chapter 12.4.1).

Written the plain way, next to the chapter's equations, and checked against
:mod:`mtlbook.weighting` on a small model (``tests/test_teaching_balancing.py``):

* :func:`manual_loss`: fixed weights, ``L = Σ_k w_k L_k``
  (:class:`~mtlbook.weighting.FixedWeights`);
* :class:`TeachingUncertainty`: uncertainty weighting (Kendall et al. 2018),
  ``L = Σ_k c_k e^{−s_k} L_k + ½ s_k`` with learned ``s_k = log σ_k²``
  (:class:`~mtlbook.weighting.UncertaintyWeighting`);
* :class:`TeachingGradNorm`: GradNorm (Chen et al. 2018), task weights learned from the gradient
  norms on the last shared layer (:class:`~mtlbook.weighting.GradNorm`);
* :func:`adam_step`: the optimiser step :func:`mtlbook.fit` takes after every backward pass
  (``torch.optim.Adam``), by hand. It divides each coordinate by its own running scale, so it
  changes the direction of the gradient, not only its length.

A library strategy is driven the way :func:`mtlbook.fit` drives it: per-task losses of a batch
(``model.task_losses(model(batch), batch)``) go to ``weighting.backward(losses, model)``, which
leaves the gradients in ``.grad``; then the optimiser steps. The teaching versions take the same
losses and leave the same gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ...weighting import GradNorm, UncertaintyWeighting

__all__ = ["TeachingGradNorm", "TeachingUncertainty", "adam_step", "manual_loss"]


def manual_loss(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """Fixed, hand-chosen weights: ``L = Σ_k w_k L_k``."""
    total = torch.zeros(())
    for task, loss in losses.items():
        total = total + weights[task] * loss  # w_k · L_k
    return total


def adam_step(
    params: Sequence[torch.Tensor],
    state: dict,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam step on ``params`` from their ``.grad``; ``state`` (a dict, empty at first)
    keeps the moments between steps."""
    beta1, beta2 = betas
    for i, p in enumerate(params):
        g = p.grad
        if g is None:  # like torch.optim.Adam: a parameter without a gradient is left alone
            continue
        t = state[("t", i)] = state.get(("t", i), 0) + 1  # this parameter's step count
        m = state[("m", i)] = beta1 * state.get(("m", i), 0.0) + (1 - beta1) * g  # mean of g
        v = state[("v", i)] = beta2 * state.get(("v", i), 0.0) + (1 - beta2) * g * g  # of g²
        m_hat = m / (1 - beta1**t)  # bias corrections
        v_hat = v / (1 - beta2**t)
        with torch.no_grad():
            p -= lr * m_hat / (v_hat.sqrt() + eps)  # each coordinate divided by its own scale


class TeachingUncertainty(nn.Module):
    """Uncertainty weighting: ``L = Σ_k c_k e^{−s_k} L_k + ½ s_k``, with ``s_k = log σ_k²``
    learned with the model and ``c_k`` = ½ for regression tasks, 1 for binary ones."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        super().__init__()
        self.kinds = dict(kinds)  # task -> "binary" or "regression"
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in kinds})

    def factor(self, task: str) -> float:
        """``c_k``: ½ for a regression task (``1/(2σ²)``), 1 for a binary one (``1/σ²``)."""
        return 0.5 if self.kinds[task] == "regression" else 1.0

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for task, loss in losses.items():
            s = self.log_vars[task]  # s_k = log σ_k²
            total = total + self.factor(task) * torch.exp(-s) * loss + 0.5 * s  # ½ s_k = log σ_k
        return total

    def weights(self) -> dict[str, float]:
        """The multipliers ``c_k e^{−s_k}`` of the task losses."""
        return {t: self.factor(t) * torch.exp(-self.log_vars[t]).item() for t in self.kinds}

    @classmethod
    def from_library(cls, weighting: UncertaintyWeighting) -> TeachingUncertainty:
        """The same tasks and current ``s_k`` as a set-up library strategy."""
        teaching = cls(weighting.kinds)
        with torch.no_grad():
            for task, s in weighting.log_variances.items():
                teaching.log_vars[task].fill_(s)
        return teaching


class TeachingGradNorm:
    """GradNorm: the model trains on ``Σ_k w_k L_k``; then the weights take one Adam step on
    ``Σ_k |G_k − Ḡ r_k^α|`` and are renormalised to sum to the number of tasks."""

    def __init__(self, tasks: Sequence[str], alpha: float, lr: float, min_weight: float) -> None:
        self.tasks, self.alpha, self.lr, self.min_weight = list(tasks), alpha, lr, min_weight
        self.w = torch.ones(len(self.tasks))  # w_k(0) = 1
        self.initial: torch.Tensor | None = None  # L_k(0)
        self.adam: dict = {}  # the weights' own Adam

    def backward(self, losses: Mapping[str, torch.Tensor], layer: torch.Tensor) -> None:
        """Leave ``∇(Σ_k w_k L_k)`` in the model's ``.grad``, then update the weights from the
        gradient norms on ``layer`` (the last shared weight matrix ``W``)."""
        norms = []  # ‖∇_W L_k‖
        for task in self.tasks:
            (grad,) = torch.autograd.grad(losses[task], layer, retain_graph=True)
            norms.append(grad.norm())
        norm = torch.stack(norms)
        loss = torch.stack([losses[t] for t in self.tasks])  # L_k(t)
        (self.w * loss).sum().backward()  # the model's step uses the current weights

        loss = loss.detach()
        if self.initial is None:
            self.initial = loss  # L_k(0): the losses of the first step
        ratio = loss / self.initial  # L̃_k = L_k(t) / L_k(0)
        rate = ratio / ratio.mean()  # r_k: relative inverse training rate
        G = self.w * norm  # G_k = ‖∇_W w_k L_k‖ = w_k ‖∇_W L_k‖
        target = G.mean() * rate**self.alpha  # Ḡ · r_k^α, held constant
        # ∂/∂w_k Σ_j |G_j − target_j| = sign(G_k − target_k) · ‖∇_W L_k‖
        w = self.w.clone()
        w.grad = torch.sign(G - target) * norm
        adam_step([w], self.adam, lr=self.lr)
        w = w.detach().clamp(min=self.min_weight)  # keep the weights positive
        self.w = w * len(w) / w.sum()  # Σ_k w_k = T

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.w.tolist(), strict=True))

    @classmethod
    def from_library(cls, weighting: GradNorm) -> TeachingGradNorm:
        """The settings of a set-up library strategy, before its first step."""
        return cls(weighting.task_names, weighting.alpha, weighting.lr, weighting.min_weight)
