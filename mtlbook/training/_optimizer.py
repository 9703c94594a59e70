"""The optimiser :func:`mtlbook.fit` trains with: Adam, and SparseAdam for sparse embedding tables.

A model whose embedding tables have sparse gradients (:func:`mtlbook.models.sparse_embeddings`)
gets, for each such table, only the rows its batch looked up: ``torch.optim.SparseAdam`` updates
those rows (and their moments) and leaves the others as they are, the "lazy" Adam of large-scale
recommenders. Every other parameter is updated by Adam as usual. With tables of 10⁶ rows this
halves a training step on the CPU (``benchmarks/bench_models.py``, configuration ``large``): a
dense gradient writes and Adam updates every row at every step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["DenseAndSparseAdam", "make_optimizer", "sparse_tables"]


def sparse_tables(model: nn.Module) -> list[torch.Tensor]:
    """The weights of the model's ``nn.Embedding`` tables that have sparse gradients."""
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse
    ]


class DenseAndSparseAdam:
    """Adam for ``dense`` parameters and SparseAdam for ``sparse`` ones, stepped as one optimiser
    (``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``)."""

    def __init__(self, dense: list[torch.Tensor], sparse: list[torch.Tensor], lr: float) -> None:
        self.optimizers: list[torch.optim.Optimizer] = [torch.optim.SparseAdam(sparse, lr=lr)]
        if dense:
            self.optimizers.append(torch.optim.Adam(dense, lr=lr, foreach=True))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("optimizers") if isinstance(state, dict) else None
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError(
                "the saved optimiser state is not that of a model with sparse embedding tables "
                "and the same dense parameters"
            )
        for optimizer, entry in zip(self.optimizers, saved, strict=True):
            optimizer.load_state_dict(entry)


def make_optimizer(
    model: nn.Module,
    parameters: list[nn.Parameter],
    lr: float,
    weight_decay: float,
    weighting: Any,
    several_processes: bool,
) -> torch.optim.Optimizer | DenseAndSparseAdam:
    """Adam over ``parameters``; :class:`DenseAndSparseAdam` when ``model`` has sparse tables.

    Raises:
        ValueError: sparse tables with ``weight_decay`` (SparseAdam has none), with a weighting
            that reads per-task gradients of the shared parameters, or on several processes.
    """
    sparse = sparse_tables(model)
    if not sparse:
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, foreach=True)
    name = type(weighting).__name__
    problems = []
    if weight_decay:
        problems.append(f"weight_decay={weight_decay!r} (SparseAdam has no weight decay)")
    if not getattr(weighting, "sparse_gradients", True):
        problems.append(
            f"the weighting {name}, which combines the tasks' gradients of the shared "
            "parameters (use a loss weighting such as EqualWeight or UncertaintyWeighting)"
        )
    if several_processes:
        problems.append("training on several processes")
    if problems:
        raise ValueError(
            "the model has embedding tables with sparse gradients, which fit supports only on "
            "one process, with a loss weighting and weight_decay=0; it was given "
            + "; ".join(problems)
            + ". Turn them off with mtlbook.models.sparse_embeddings(model, False)"
        )
    ids = {id(p) for p in sparse}
    return DenseAndSparseAdam([p for p in parameters if id(p) not in ids], sparse, lr)
