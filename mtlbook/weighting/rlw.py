"""Random Loss Weighting (RLW): fresh random task weights at every step.

Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022. Every step draws unnormalised weights λ̃ from a distribution
and normalises them:

    λ̃ ~ p(λ̃),    λ = softmax(λ̃),    L = Σ_k λ_k · L_k,

with ``p = N(0, I)`` in the paper's main experiments and in LibMTL. The weights sum to 1,
as in the paper (not to ``K``): on average every task gets 1/K, so the gradient is ``1/K``
of the equal-weight sum; Adam's steps hardly depend on that scale, but a model regulariser
(added unweighted) and weight decay then weigh ``K`` times more relative to the tasks. The
paper argues that a method which cannot beat these random weights is not balancing the
tasks, which makes RLW the litmus test of Chapter 12.4.1 of the book.
"""

from __future__ import annotations

import torch

from ._per_task import add_extra, stack_losses
from .base import Weighting

__all__ = ["RLW"]

_DISTRIBUTIONS = ("normal", "dirichlet")


class RLW(Weighting):
    """Random loss weights, ``λ = softmax(λ̃)`` with ``λ̃ ~ N(0, I)``, drawn every step.

    Args:
        distribution: ``"normal"`` (softmax of a standard normal draw, the paper's default)
            or ``"dirichlet"`` (Dirichlet(1, …, 1): uniform over all weight vectors that sum
            to 1, drawn as normalised exponentials).
        seed: seed of the strategy's own random number generator, reset when training
            starts, so two runs with the same seed draw the same weights and the global
            random state of torch is never used. ``None``: a non-reproducible seed.

    :attr:`weights` are those drawn for the latest step (``1/K`` each before any step).
    """

    #: The generator's state (also with ``seed=None``) and the latest draw.
    state_attributes = ("generator", "_last")

    def __init__(self, distribution: str = "normal", seed: int | None = 0) -> None:
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an integer or None, got {seed!r}")
        self.distribution = distribution
        self.seed = seed

    def setup(self, task_names, model) -> None:
        super().setup(task_names, model)
        self.generator = torch.Generator()  # on the CPU: the same draws on every device
        if self.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.seed)
        k = len(self.task_names)
        self._last = torch.full((k,), 1.0 / k)  # [n_tasks]

    def sample(self) -> torch.Tensor:
        """Draw one weight vector ``[n_tasks]`` (non-negative, sums to 1)."""
        k = len(self.task_names)
        if self.distribution == "normal":
            return torch.softmax(torch.randn(k, generator=self.generator), dim=0)
        draws = torch.empty(k).exponential_(generator=self.generator)  # Exp(1) each
        return draws / draws.sum()

    def backward(self, losses, model, extra=None):
        values = stack_losses(losses, self.task_names)  # [n_tasks]
        self._last = self.sample()
        w = self._last.to(values.device, values.dtype)
        total = add_extra((w * values).sum(), extra)
        total.backward()
        return total.detach()

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self._last.tolist(), strict=True))
