"""Which parameters each task reaches: the autograd probe behind ``shared_parameters()``.

A parameter is *shared* when every task's loss depends on it. Whether it does is a question
autograd answers: differentiate each task's output and look, element by element, at which
parameters receive a non-zero gradient. :func:`task_reach` does that on a batch (by default a
random one built from the model's schema), :func:`shared_by_reach` names the parameters that
every task reaches.

Element by element matters because models stack the parameters of several tasks into one tensor
(one ``[tasks, in, out]`` weight for all towers): the tensor as a whole receives a gradient from
every task, but each of its slices from one task only. Such a tensor is shared only if some of
its elements are reached by every task; it is *partly shared* when, in addition, some of its
elements are reached by some tasks but not all (a tensor that mixes a shared slice with
task-specific ones).

Each task's output is differentiated with a fixed random weight per sample (not the plain
sum), so that no gradient cancels by accident; labels are not needed. Elements that no task
reaches on the probe batch (embedding rows of categories the batch does not contain, a unit
that no sample activates) say nothing and are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..data import Batch, Schema

if TYPE_CHECKING:
    from .base import MultiTaskModel

__all__ = ["partly_shared", "probe_batch", "shared_by_reach", "task_reach"]


def probe_batch(schema: Schema, n_samples: int = 128, seed: int = 0) -> Batch:
    """A random batch of ``n_samples`` rows in ``schema``: standard-normal dense features,
    uniformly drawn categories, labels of the right kind (0/1 or normal) and no masks.

    Drawn from a private generator: the global random state is untouched.
    """
    generator = torch.Generator().manual_seed(int(seed))
    dense = torch.randn(n_samples, schema.n_dense, generator=generator) if schema.n_dense else None
    categorical = None
    if schema.categorical:
        columns = [
            torch.randint(int(c), (n_samples,), generator=generator) for c in schema.cardinalities
        ]
        categorical = torch.stack(columns, dim=1)  # [batch, fields]
    labels = {}
    for task in schema.tasks:
        if task.kind == "binary":
            labels[task.name] = torch.randint(2, (n_samples,), generator=generator).float()
        else:
            labels[task.name] = torch.randn(n_samples, generator=generator)
    return Batch(dense=dense, categorical=categorical, labels=labels)


def task_reach(
    model: MultiTaskModel, batch: Batch | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """For every trainable parameter, which of its elements each task's output reaches.

    Args:
        model: a :class:`~mtlbook.models.MultiTaskModel`.
        batch: the batch to probe on; ``None`` draws one with :func:`probe_batch` from
            ``model.schema``.
        seed: seed of the probe batch and of the random per-sample weights.

    Returns:
        ``{parameter name: [tasks, *parameter shape] bool tensor}``: entry ``[t, ...]`` is true
        where task ``t``'s output (in ``model.task_names`` order) has a non-zero gradient.

    The model runs in evaluation mode (no dropout) and is put back in its mode afterwards; the
    global random state is untouched.
    """
    if batch is None:
        batch = probe_batch(model.schema, seed=seed)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    device = named[0][1].device if named else torch.device("cpu")
    batch = batch.to(device)
    generator = torch.Generator().manual_seed(int(seed) + 1)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            outputs = model(batch)
            reach = {
                n: torch.zeros((len(model.task_names), *p.shape), dtype=torch.bool, device=device)
                for n, p in named
            }
            for t, task in enumerate(model.task_names):
                out = outputs[task]  # [batch]
                weight = torch.randn(out.shape, generator=generator).to(out)
                grads = torch.autograd.grad(
                    out,
                    [p for _, p in named],
                    grad_outputs=weight,
                    retain_graph=True,
                    allow_unused=True,
                )
                for (name, _), g in zip(named, grads, strict=True):
                    if g is not None:
                        reach[name][t] = g != 0
    finally:
        model.train(was_training)
    return reach


def shared_by_reach(model: MultiTaskModel, batch: Batch | None = None, seed: int = 0) -> list[str]:
    """Names of the parameters some element of which every task reaches, in the order of
    ``model.named_parameters()`` (see :func:`task_reach` for the arguments)."""
    reach = task_reach(model, batch, seed)
    return [name for name, r in reach.items() if bool(r.all(dim=0).any())]


def partly_shared(reach: dict[str, torch.Tensor]) -> list[str]:
    """Names of the parameters, in a :func:`task_reach` result, that are shared in part: some
    elements are reached by every task, others by some tasks but not all."""
    names = []
    for name, r in reach.items():
        by_all, by_some = r.all(dim=0), r.any(dim=0)
        if bool(by_all.any()) and bool((by_some & ~by_all).any()):
            names.append(name)
    return names
