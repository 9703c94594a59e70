"""Small helpers: device selection and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["count_parameters", "match_width", "resolve_device", "set_seed"]


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


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global generator on purpose
    torch.manual_seed(seed)


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``model`` (only trainable ones by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def match_width(build, target: int, *, low: int = 1, high: int = 4096) -> int:
    """The width ``w`` in ``[low, high]`` whose model ``build(w)`` has the parameter count
    closest to ``target``.

    This is how the MMoE paper compared architectures at equal size (a Shared-Bottom bottom of
    113 units against 8 experts × 16 units). ``build`` maps a width to a model; the parameter
    count must not decrease as the width grows (true for every width argument of the models
    here), so a binary search finds the best width.

    Example:
        >>> target = count_parameters(MMoE(schema, n_experts=8, expert_units=(16,)))
        >>> width = match_width(lambda w: SharedBottom(schema, bottom_units=(w,)), target)
    """
    if not isinstance(target, int | np.integer) or target < 1:
        raise ValueError(f"target must be a positive parameter count, got {target!r}")
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got low={low}, high={high}")
    lo, hi = low, high
    while lo < hi:  # smallest width whose count reaches the target
        mid = (lo + hi) // 2
        if count_parameters(build(mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = {w for w in (lo - 1, lo) if low <= w <= high}
    return min(sorted(candidates), key=lambda w: abs(count_parameters(build(w)) - target))
