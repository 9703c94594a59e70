"""Uncertainty weighting: learn each task's weight as its homoscedastic noise.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics", CVPR 2018. Each task ``k`` gets an observation noise σ_k, learned
with the model by maximising the likelihood. For a Gaussian (regression) task and for a
classification task the paper derives

    regression:      L_k / (2σ_k²) + log σ_k
    classification:  L_k / σ_k²    + log σ_k

and, for numerical stability, learns ``s_k = log σ_k²`` (initialised to 0, i.e. σ_k = 1), so
that with ``log σ_k = s_k / 2`` the combined loss is

    L = Σ_{k regression} (½ e^{−s_k} L_k + ½ s_k) + Σ_{k binary} (e^{−s_k} L_k + ½ s_k).

A task with a large loss (noisy or hard) learns a large σ_k and so a small weight; the
``log σ_k`` term stops every σ_k from growing without bound. For a fixed loss the optimum is
``s_k = log L_k`` (regression) or ``log 2L_k`` (binary). Chapter 12.4.1 of the book explains
and measures it.
"""

from __future__ import annotations

import torch
from torch import nn

from ._per_task import add_extra, model_device, stack_losses
from .base import Weighting

__all__ = ["UncertaintyWeighting"]

#: The factor c_k in front of ``e^{−s_k} L_k`` for each task kind.
_FACTOR = {"regression": 0.5, "binary": 1.0}


class UncertaintyWeighting(Weighting):
    """Learned task weights ``c_k · exp(−s_k)`` with ``s_k = log σ_k²`` (Kendall et al.).

    ``c_k`` is ½ for regression tasks and 1 for binary tasks, read from ``model.schema``.
    The ``s_k`` are returned by :meth:`parameters`, so :func:`mtlbook.fit` trains them with
    the model (same Adam optimiser, learning rate and weight decay; a weight decay pulls the
    ``s_k`` towards 0). :attr:`weights` are the current multipliers ``c_k · exp(−s_k)`` of the
    task losses; :attr:`log_variances` the ``s_k`` themselves.
    """

    def setup(self, task_names, model) -> None:
        super().setup(task_names, model)
        schema = getattr(model, "schema", None)
        if schema is None:
            raise TypeError(
                "UncertaintyWeighting reads the task kinds from model.schema; "
                f"{type(model).__name__} has no schema (use a MultiTaskModel)"
            )
        kinds = [schema.task(name).kind for name in self.task_names]
        unknown = [(n, k) for n, k in zip(self.task_names, kinds, strict=True) if k not in _FACTOR]
        if unknown:
            raise ValueError(
                f"UncertaintyWeighting knows task kinds {list(_FACTOR)}, got {unknown}"
            )
        device = model_device(model)
        self.kinds = dict(zip(self.task_names, kinds, strict=True))
        self._factor = torch.tensor([_FACTOR[k] for k in kinds], device=device)  # [n_tasks]
        # s_k = log σ_k², initialised to 0 (σ_k = 1).
        self.log_vars = nn.Parameter(torch.zeros(len(kinds), device=device))  # [n_tasks]

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def _multipliers(self) -> torch.Tensor:
        return self._factor * torch.exp(-self.log_vars)  # [n_tasks]

    def backward(self, losses, model, extra=None):
        values = stack_losses(losses, self.task_names)  # [n_tasks]
        total = (self._multipliers() * values).sum() + 0.5 * self.log_vars.sum()
        total = add_extra(total, extra)
        total.backward()
        return total.detach()

    @property
    def weights(self) -> dict[str, float]:
        with torch.no_grad():
            return dict(zip(self.task_names, self._multipliers().tolist(), strict=True))

    @property
    def log_variances(self) -> dict[str, float]:
        """The learned ``s_k = log σ_k²`` of each task."""
        return dict(zip(self.task_names, self.log_vars.detach().tolist(), strict=True))
