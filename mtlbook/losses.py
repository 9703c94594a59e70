"""Per-task losses with masks: log-loss for binary tasks, squared error for regression."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import Batch, Schema

__all__ = ["task_losses"]


def task_losses(
    outputs: dict[str, torch.Tensor], batch: Batch, schema: Schema
) -> dict[str, torch.Tensor]:
    """Mean loss of each task over the samples on which it is defined.

    ``outputs`` holds logits for binary tasks and predictions for regression tasks (``[batch]``
    each). A masked task averages over its own subspace only; a batch in which the mask is all
    false contributes a zero loss that still carries a graph.
    """
    losses = {}
    for task in schema.tasks:
        out, y = outputs[task.name], batch.labels[task.name]
        if task.kind == "binary":
            per_sample = F.binary_cross_entropy_with_logits(out, y, reduction="none")
        else:
            per_sample = F.mse_loss(out, y, reduction="none")
        mask = batch.masks.get(task.name)
        if mask is None:
            losses[task.name] = per_sample.mean()
        else:
            weight = mask.to(per_sample.dtype)
            losses[task.name] = (per_sample * weight).sum() / weight.sum().clamp(min=1.0)
    return losses
