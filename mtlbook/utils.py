"""Small helpers: device selection, seeding and counting parameters."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Literal, overload

import numpy as np
import torch
from torch import nn

__all__ = [
    "count_parameters",
    "dropout_rates",
    "match_width",
    "model_device",
    "resolve_device",
    "set_seed",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available (e.g. a Colab GPU), otherwise the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return torch.device(device)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    first = next(iter(model.parameters()), None)
    return torch.device("cpu") if first is None else first.device


def dropout_rates(model: nn.Module) -> list[float]:
    """The positive dropout probabilities of ``model``'s dropout layers."""
    return [
        m.p for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
    ]


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global generator on purpose
    torch.manual_seed(seed)


@overload
def count_parameters(
    models: nn.Module | Iterable[nn.Module],
    *,
    by_part: Literal[False] = False,
    trainable_only: bool = True,
) -> int: ...
@overload
def count_parameters(
    models: nn.Module | Iterable[nn.Module], *, by_part: Literal[True], trainable_only: bool = True
) -> dict[str, int]: ...
@overload
def count_parameters(
    models: nn.Module | Iterable[nn.Module], *, by_part: bool, trainable_only: bool = True
) -> int | dict[str, int]: ...
def count_parameters(
    models: nn.Module | Iterable[nn.Module], *, by_part: bool = False, trainable_only: bool = True
) -> int | dict[str, int]:
    """Number of scalar parameters of a model, or of several models together: the one counter
    of the package (``MultiTaskModel.n_parameters`` and the book's tables call it).

    Args:
        models: one module, or several (summed: two models that share nothing, such as one
            single-task model per task).
        by_part: return a breakdown instead of the total (see below).
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The total, or with ``by_part=True`` a dict: ``total``; ``embedding``, the
        ``nn.Embedding`` tables, and ``dense``, the rest; ``shared``, the parameters of
        :meth:`~mtlbook.models.MultiTaskModel.shared_parameters` (0 for other modules), and
        ``task``, the rest.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.simulate_funnel(1_000, seed=0)
        >>> parts = count_parameters(SharedBottom(data.schema), by_part=True)
        >>> sorted(parts)
        ['dense', 'embedding', 'shared', 'task', 'total']
        >>> parts["total"] == parts["embedding"] + parts["dense"] == parts["shared"] + parts["task"]
        True
    """
    modules = [models] if isinstance(models, nn.Module) else list(models)
    counted = {"total": 0, "embedding": 0, "shared": 0}
    for model in modules:
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected torch modules, got {type(model).__name__}")

        def size(params: Iterable[nn.Parameter]) -> int:
            unique = {id(p): p for p in params if p.requires_grad or not trainable_only}
            return sum(p.numel() for p in unique.values())

        counted["total"] += size(model.parameters())
        counted["embedding"] += size(
            p for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
        )
        shared = getattr(model, "shared_parameters", None)
        counted["shared"] += size(shared()) if callable(shared) else 0
    if not by_part:
        return counted["total"]
    return {
        "total": counted["total"],
        "embedding": counted["embedding"],
        "dense": counted["total"] - counted["embedding"],
        "shared": counted["shared"],
        "task": counted["total"] - counted["shared"],
    }


def match_width(
    build,
    target: int,
    *,
    low: int = 1,
    high: int = 4096,
    part: Literal["total", "dense"] = "total",
) -> int:
    """The width ``w`` in ``[low, high]`` whose model ``build(w)`` has the parameter count
    closest to ``target``.

    ``part="dense"`` counts only the parameters outside embedding tables (see
    :func:`count_parameters`): how to match models whose tables differ in number (one set per
    task for separate single-task models, one shared set for a multi-task model) or dominate
    the count.

    This is how the MMoE paper compared architectures at equal size (a Shared-Bottom bottom of
    113 units against 8 experts × 16 units). ``build`` maps a width to a model; the parameter
    count must not decrease as the width grows (true for every width argument of the models
    here), so a binary search finds the best width.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.models import MMoE, SharedBottom
        >>> schema = mb.make_correlated_tasks(10, 0.5, n_features=100).schema
        >>> target = count_parameters(MMoE(schema, n_experts=8, expert_units=(16,)))
        >>> width = match_width(lambda w: SharedBottom(schema, bottom_units=(w,)), target)
        >>> abs(count_parameters(SharedBottom(schema, bottom_units=(width,))) - target) < 150
        True
    """
    if not isinstance(target, int | np.integer) or target < 1:
        raise ValueError(f"target must be a positive parameter count, got {target!r}")
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got low={low}, high={high}")
    if part not in ("total", "dense"):
        raise ValueError(f"part must be 'total' or 'dense', got {part!r}")

    def count(width: int) -> int:
        return count_parameters(build(width), by_part=True)[part]

    lo, hi = low, high
    while lo < hi:  # smallest width whose count reaches the target
        mid = (lo + hi) // 2
        if count(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = {w for w in (lo - 1, lo) if low <= w <= high}
    return min(sorted(candidates), key=lambda w: abs(count(w) - target))
