"""The loss-weighting axis: how per-task losses become one training step.

A :class:`Weighting` is composed with any model by :func:`mtlbook.fit`
(``fit(model, ..., weighting=...)``). Each step ``fit`` computes the per-task losses and hands
them to :meth:`Weighting.backward`, which must leave gradients in ``.grad`` of the model's
parameters (``fit`` then calls the optimiser). Simple strategies combine the losses into one
scalar; gradient-based ones may use ``model.shared_parameters()`` to look at per-task gradients.
``fit`` logs :attr:`Weighting.weights` into the history every epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["EqualWeight", "Weighting"]


class Weighting(ABC):
    """Base class of loss-weighting strategies.

    Lifecycle, driven by :func:`mtlbook.fit`: :meth:`setup` once before training (a strategy may
    create its own learnable parameters there), :meth:`backward` every step, :meth:`after_step`
    after each optimiser step, and :meth:`epoch_end` after every epoch with the mean training
    loss of each task. :attr:`weights` are the weights the latest step applied.
    """

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        """Called once before training with the task names and the model."""
        self.task_names = tuple(task_names)

    @abstractmethod
    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module,
                 extra: torch.Tensor | None = None) -> torch.Tensor:
        """Back-propagate the combined loss; ``extra`` (a regulariser) is added unweighted.

        Returns the combined scalar loss (detached use only: for logging).
        """

    def after_step(self, model: nn.Module, batch) -> None:  # noqa: B027
        """Called right after each optimiser step with the step's batch (FAMO measures the
        decrease of the losses on it); does nothing by default."""

    def epoch_end(self, epoch: int, train_losses: Mapping[str, float]) -> None:  # noqa: B027
        """Called after every epoch with the mean training loss of each task."""

    def parameters(self) -> list[nn.Parameter]:
        """Learnable parameters of the strategy itself (optimised by ``fit``)."""
        return []

    @property
    @abstractmethod
    def weights(self) -> dict[str, float]:
        """The current weight of each task."""


class EqualWeight(Weighting):
    """Every task's loss counts once: ``L = Σ_k L_k`` (the default of :func:`mtlbook.fit`)."""

    def backward(self, losses, model, extra=None):
        total = torch.stack(list(losses.values())).sum()
        if extra is not None:
            total = total + extra
        total.backward()
        return total

    @property
    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.task_names, 1.0)
