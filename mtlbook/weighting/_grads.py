"""Per-task gradients on the shared parameters, shared by the gradient-based strategies.

Every gradient-based strategy in :mod:`mtlbook.weighting` follows the same recipe (the one of
LibMTL): the ``T`` task losses are differentiated one by one with respect to the model's
:meth:`~mtlbook.models.MultiTaskModel.shared_parameters`, giving a ``[T, P]`` matrix ``G``
whose row ``i`` is task ``i``'s flattened gradient; the strategy combines the rows into one
shared gradient; every other (task-specific) parameter receives the ordinary gradient of the
sum of the losses (a task's tower only ever sees its own task's loss). The model's regulariser
``extra`` is added unweighted to both parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..training import distributed

__all__ = [
    "average_gradients",
    "backward_split",
    "global_gram",
    "global_task_gradients",
    "present_tasks",
    "shared_and_specific",
    "task_gradients",
    "write_gradient",
]


def shared_and_specific(
    model: nn.Module, strategy: str
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The model's trainable shared and task-specific parameters.

    Raises:
        ValueError: when the model has no shared parameters: a gradient-based strategy has
            no conflict to resolve there, and silently training with equal weights would
            report a comparison that did not happen.
    """
    shared_fn = getattr(model, "shared_parameters", None)
    shared = [p for p in shared_fn() if p.requires_grad] if callable(shared_fn) else []
    if not shared:
        raise ValueError(
            f"{strategy} works with the tasks' gradients on the shared parameters, but "
            f"{type(model).__name__} has none (model.shared_parameters() is empty: its tasks "
            "share no parameter, so their gradients never meet). Use a loss-based weighting "
            "such as EqualWeight with this model, or a model that shares parameters"
        )
    ids = {id(p) for p in shared}
    specific = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return shared, specific


def task_gradients(
    losses: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor], allow_unused: bool = True
) -> torch.Tensor:
    """``[T, P]``: row ``i`` is ``∂ losses[i] / ∂ inputs``, flattened and concatenated.

    ``inputs`` are parameters or intermediate tensors (a shared representation). The graph
    is kept (``retain_graph``) so that the losses can be back-propagated again afterwards;
    an input a loss does not reach contributes zeros to its row (with ``allow_unused=False``
    torch raises a ``RuntimeError`` instead).
    """
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=allow_unused)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(x) if g is None else g).reshape(-1)
                    for g, x in zip(grads, inputs, strict=True)
                ]
            )
        )  # [P]
    return torch.stack(rows)  # [T, P]


def present_tasks(gram: torch.Tensor) -> torch.Tensor:
    """``[T]`` bool: the tasks whose gradient is not exactly zero, from the Gram matrix of the
    task gradients (its diagonal holds their squared norms).

    A task without a gradient in a step (a masked task with no labelled row in the batch: its
    loss is a constant 0) has nothing to say about the shared direction, and left in the
    problem it makes MGDA's minimum-norm point and IMTL's solution the zero vector, which
    stops the shared parameters for that step. The strategies solve their problem on the
    present tasks only and give the others weight 0.
    """
    return gram.diagonal() > 0


def global_task_gradients(
    losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
) -> torch.Tensor:
    """:func:`task_gradients` with respect to parameters, of the global batch.

    In one process it is :func:`task_gradients`. When :func:`mtlbook.fit` trains on several
    processes, each process's rows are the gradients of its shard's share of the global losses
    (:func:`mtlbook.training.distributed.global_losses`, scaled so that their average is the global
    gradient), and the matrix is averaged over the processes: every process gets the same
    ``[T, P]`` matrix of the global batch and so combines the rows in the same way.
    """
    grads = task_gradients(losses, params)
    sync = distributed.training()
    return grads if sync is None else sync.mean(grads)


def global_gram(grads: torch.Tensor) -> torch.Tensor:
    """``grads @ grads.T`` ``[T, T]`` for gradients with respect to a per-sample quantity (a
    shared representation ``[batch, units]``), of the global batch.

    Such gradients have one block of rows per sample, so on several processes the global Gram
    matrix is the sum of the processes' Gram matrices; each process's gradients are ``W`` times
    the global ones on its rows (``W`` processes, see
    :func:`mtlbook.training.distributed.global_losses`), hence the division by ``W²``.
    """
    gram = grads @ grads.T
    sync = distributed.training()
    return gram if sync is None else sync.sum(gram) / sync.world**2


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Average the parameters' ``.grad`` over the processes of a distributed :func:`mtlbook.fit`
    (nothing in one process)."""
    sync = distributed.training()
    if sync is not None:
        sync.average_gradients(params)


def write_gradient(params: Sequence[nn.Parameter], flat: torch.Tensor) -> None:
    """Add the flat vector ``flat`` (``[P]``, in the order of ``params``) to their ``.grad``."""
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p).to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g
        offset += n
    if offset != flat.numel():
        raise ValueError(f"the gradient has {flat.numel()} entries, the parameters {offset}")


def backward_split(
    losses: torch.Tensor,
    shared: Sequence[nn.Parameter],
    specific: Sequence[nn.Parameter],
    extra: torch.Tensor | None,
    *,
    shared_grad: torch.Tensor | None = None,
    shared_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Leave the step's gradients in ``.grad`` and return ``Σ_i L_i + extra`` (detached).

    In a distributed :func:`mtlbook.fit` (``distributed = "manual"`` strategies) the gradients
    it leaves are those of the global batch, the same on every process: ``shared_grad`` must
    come from :func:`global_task_gradients`, and the rest is averaged here.

    Task-specific parameters get ``∇(Σ_i L_i + extra)``. Shared parameters get either the
    flat ``shared_grad`` ``[P]`` (a strategy's combination of the rows of
    :func:`task_gradients`) plus ``∇ extra``, or, with ``shared_weights`` ``[T]``,
    ``∇(Σ_i a_i L_i + extra)`` by one more backward pass (for weights found without the
    ``[T, P]`` matrix, e.g. MGDA-UB).

    Args:
        losses: ``[T]`` task losses carrying their graph.
        shared, specific: the two parameter groups of :func:`shared_and_specific`.
        extra: the model's regulariser (``None``: none).
        shared_grad: the combined shared gradient, flat.
        shared_weights: weights of the losses on the shared parameters.
    """
    if (shared_grad is None) == (shared_weights is None):
        raise ValueError("give exactly one of shared_grad and shared_weights")
    total = losses.sum()
    if extra is not None:
        total = total + extra
    if shared_weights is not None:
        on_shared = (shared_weights.to(losses.dtype) * losses).sum()
        if extra is not None:
            on_shared = on_shared + extra
        torch.autograd.backward(on_shared, inputs=list(shared), retain_graph=bool(specific))
        average_gradients(shared)
    else:
        assert shared_grad is not None  # exactly one of the two is given (checked above)
        if extra is not None and extra.requires_grad:
            shared_grad = shared_grad + global_task_gradients([extra], shared)[0]
        write_gradient(shared, shared_grad)
    if specific:
        torch.autograd.backward(total, inputs=list(specific))
        average_gradients(specific)
    return total.detach()
