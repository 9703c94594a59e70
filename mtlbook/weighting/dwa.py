"""Dynamic Weight Average (DWA): weigh tasks by how slowly their loss falls.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019. The weight
of task ``k`` in epoch ``t`` (1-based) is

    w_k(t) = K · exp(r_k(t−1) / T) / Σ_i exp(r_i(t−1) / T),    r_k(t−1) = L_k(t−1) / L_k(t−2),

where ``L_k(t)`` is the mean training loss of task ``k`` over the steps of epoch ``t`` (what
:func:`mtlbook.fit` passes to :meth:`~mtlbook.weighting.Weighting.epoch_end`), ``K`` the
number of tasks and ``T`` a temperature (``T = 2`` in the paper; a large ``T`` makes the
weights equal). The weights sum to ``K``, and ``w_k = 1`` in the first two epochs, before
there are two epoch losses to divide. A task whose loss fell less in the last epoch (a
larger ratio r_k) gets a larger weight. Only loss values are needed, no gradients.
Chapter 12.4.1 of the book measures it.
"""

from __future__ import annotations

import math

import torch

from ._per_task import add_extra, check_number, stack_losses
from .base import Weighting

__all__ = ["DWA"]


class DWA(Weighting):
    """Dynamic Weight Average: ``w(t) = K · softmax(r(t−1) / T)`` from epoch loss ratios.

    Args:
        temperature: ``T`` (2 in the paper), positive.

    :attr:`weights` are those of the epoch being trained, or just trained: the history of
    :func:`mtlbook.fit` shows at epoch ``t`` the weights that trained epoch ``t``.
    :meth:`weights_for_epoch` gives the weights of any epoch whose two preceding epoch losses
    are known.
    """

    #: The recorded epoch losses, the epoch of the latest step and its weight vector.
    state_attributes = ("_epoch_losses", "_epoch", "_vector")

    def __init__(self, temperature: float = 2.0) -> None:
        self.temperature = check_number("temperature", temperature, positive=True)

    def setup(self, task_names, model) -> None:
        super().setup(task_names, model)
        self._epoch_losses: list[list[float]] = []  # one [n_tasks] list per finished epoch
        self._epoch = 1  # the epoch whose weights the latest step used
        self._vector: torch.Tensor | None = None

    def epoch_end(self, epoch, train_losses) -> None:
        row = []
        for name in self.task_names:
            value = float(train_losses[name])
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"DWA divides epoch losses, so they must be positive and finite; task "
                    f"{name!r} had a mean training loss of {value} in epoch {epoch} (a masked "
                    "task without any labelled sample?)"
                )
            row.append(value)
        self._epoch_losses.append(row)

    def weights_for_epoch(self, epoch: int) -> dict[str, float]:
        """The weights of (1-based) ``epoch``: 1 for epochs 1 and 2, else the formula above
        with the recorded losses of epochs ``epoch − 1`` and ``epoch − 2``."""
        n_known = len(self._epoch_losses)
        if not isinstance(epoch, int) or not 1 <= epoch <= n_known + 1:
            raise ValueError(
                f"epoch must be an integer from 1 to {n_known + 1} (the losses of "
                f"{n_known} epoch(s) are known), got {epoch!r}"
            )
        return dict(zip(self.task_names, self._weights_tensor(epoch).tolist(), strict=True))

    def _weights_tensor(self, epoch: int) -> torch.Tensor:
        k = len(self.task_names)
        if epoch <= 2:
            return torch.ones(k, dtype=torch.float64)
        last, before = (
            torch.tensor(self._epoch_losses[epoch - i], dtype=torch.float64) for i in (2, 3)
        )  # L(t−1), L(t−2), [n_tasks] each
        ratio = last / before  # r_k(t−1)
        return k * torch.softmax(ratio / self.temperature, dim=0)  # [n_tasks]

    def backward(self, losses, model, extra=None):
        values = stack_losses(losses, self.task_names)  # [n_tasks]
        epoch = len(self._epoch_losses) + 1
        if self._vector is None or epoch != self._epoch:
            self._epoch = epoch
            self._vector = self._weights_tensor(epoch).to(values.device, values.dtype)
        total = add_extra((self._vector * values).sum(), extra)
        total.backward()
        return total.detach()

    @property
    def weights(self) -> dict[str, float]:
        return self.weights_for_epoch(self._epoch)
