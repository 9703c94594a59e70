"""Synthetic tasks with a controlled correlation, after Ma et al. (KDD 2018, §3.2).

The MMoE paper builds two regression tasks whose relatedness is set by one number, the cosine
``p`` between their weight vectors:

1. draw orthonormal ``u1, u2`` in ``R^d``;
2. ``w1 = c·u1`` and ``w2 = c·(p·u1 + sqrt(1 − p²)·u2)``, so ``cos(w1, w2) = p``;
3. draw ``x ~ N(0, I_d)``;
4. ``y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε_k``.

The paper does not publish ``c``, ``m``, ``α_i``, ``β_i``, nor whether the noise "0.01" is a
variance or a standard deviation. Our documented defaults: ``c = 1``, ``m = 10``, ``α_i, β_i ~
N(0, 1)`` drawn once from a fixed seed (``params_seed=0``, independent of the data seed, so that
data sets of different seeds share the same non-linearity, as in the PLE paper's re-run) and
noise standard deviation 0.01. Chapter 12.3.3 of the book uses this generator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._core import TaskSpec
from ._multitask import MultiTaskData

__all__ = ["make_correlated_tasks"]


def make_correlated_tasks(
    n_samples: int,
    correlation: float,
    *,
    n_features: int = 100,
    c: float = 1.0,
    m: int = 10,
    noise_std: float = 0.01,
    task_type: str = "regression",
    alpha: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    params_seed: int = 0,
    seed: int = 0,
) -> MultiTaskData:
    """Two tasks whose weight vectors have cosine ``correlation`` (the MMoE paper's generator).

    Args:
        n_samples: number of samples.
        correlation: ``p`` in ``[-1, 1]``, the cosine between the two tasks' weight vectors.
        n_features: input dimension ``d`` (≥ 2).
        c: scale of the weight vectors.
        m: number of sine terms.
        noise_std: standard deviation of the Gaussian label noise ``ε_k``.
        task_type: ``"regression"`` (the paper's setting) or ``"binary"`` (each label
            thresholded at its median, for classification experiments).
        alpha, beta: the ``m`` sine frequencies and phases; by default drawn from
            ``N(0, 1)`` with ``params_seed``.
        params_seed: seed for the default ``alpha`` and ``beta``.
        seed: seed for the weight vectors, the inputs and the noise.

    Returns:
        A :class:`MultiTaskData` with dense features ``x0 … x{d-1}``, tasks ``task1`` and
        ``task2``; ``data.weights`` is the ``[2, d]`` array ``[w1, w2]``; ``data.truth`` holds the
        noise-free labels ``f1, f2``; ``data.meta`` records every generator parameter.
    """
    if not isinstance(n_samples, int | np.integer) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not -1.0 <= float(correlation) <= 1.0:
        raise ValueError(f"correlation must lie in [-1, 1], got {correlation!r}")
    if not isinstance(n_features, int | np.integer) or n_features < 2:
        raise ValueError(f"n_features must be an integer ≥ 2, got {n_features!r}")
    if task_type not in ("regression", "binary"):
        raise ValueError(f"task_type must be 'regression' or 'binary', got {task_type!r}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be ≥ 0, got {noise_std!r}")
    if not isinstance(m, int | np.integer) or m < 0:
        raise ValueError(f"m must be a non-negative integer, got {m!r}")

    p = float(correlation)
    params_rng = np.random.default_rng(params_seed)
    alpha = params_rng.standard_normal(m) if alpha is None else np.asarray(alpha, float)
    beta = params_rng.standard_normal(m) if beta is None else np.asarray(beta, float)
    if alpha.shape != (m,) or beta.shape != (m,):
        raise ValueError(f"alpha and beta must have shape ({m},), got {alpha.shape}, {beta.shape}")

    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n_features, 2)))  # orthonormal columns
    u1, u2 = q[:, 0], q[:, 1]
    w1 = c * u1
    w2 = c * (p * u1 + np.sqrt(max(0.0, 1.0 - p * p)) * u2)
    weights = np.stack([w1, w2])  # [2, d]

    x = rng.standard_normal((n_samples, n_features))  # [n, d]
    z = x @ weights.T  # [n, 2]
    f = z + np.sin(z[:, :, None] * alpha + beta).sum(axis=2)  # [n, 2]
    y = f + noise_std * rng.standard_normal(f.shape)
    if task_type == "binary":
        y = (y > np.median(y, axis=0)).astype(np.float64)

    kind = "regression" if task_type == "regression" else "binary"
    return MultiTaskData(
        dense=x,
        labels={"task1": y[:, 0], "task2": y[:, 1]},
        tasks=[TaskSpec("task1", kind), TaskSpec("task2", kind)],
        dense_names=[f"x{j}" for j in range(n_features)],
        truth=pd.DataFrame({"f1": f[:, 0], "f2": f[:, 1]}),
        meta={
            "generator": "make_correlated_tasks",
            "weights": weights,
            "correlation": p,
            "c": c,
            "m": m,
            "alpha": alpha,
            "beta": beta,
            "noise_std": noise_std,
            "task_type": task_type,
            "seed": seed,
            "params_seed": params_seed,
        },
    )
