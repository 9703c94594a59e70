"""What gradient surgery does to each training step: a recorder for chapter 12.4.

:class:`~mtlbook.diagnostics.GradientConflict` measures the tasks' gradient cosine on a fixed
probe every few steps. PCGrad (:class:`~mtlbook.weighting.PCGrad`), however, acts on the
*mini-batch* gradients of every step, and what it promises is a statement about one step: where
two task gradients conflict (``g_i · g_j < 0``), it removes from each the component along the
other, so that the update no longer points against either task. :class:`StepConflictLog`
records exactly that. It wraps the weighting that trains the model (equal weights by default,
or PCGrad itself) and, on every step, before handing the losses to it, computes the tasks'
mini-batch gradients ``g_i`` on the shared parameters and records

* ``cosine``: ``cos(g_i, g_j)`` for every pair of tasks (negative: the step's tasks conflict),
  and ``cosine_projected``: the same after PCGrad's projection, ``cos(g_i^PC, g_j^PC)``;
* the **alignment** of two candidate updates with each task's gradient: the update of equal
  weighting, ``d = Σ_i g_i``, and the PCGrad update ``d^PC = Σ_i g_i^PC``; ``cos(d, g_i) < 0``
  means the step raises task ``i``'s loss to first order.

Both candidates are computed on the same step and the same weights, whichever of them trains
the model, so the recorder compares them like for like. For two tasks PCGrad's update is never
against either task (``cos(d^PC, g_i) ≥ 0``, up to rounding); with equal weights the update
opposes the task with the smaller gradient whenever the tasks conflict and the other task's
gradient is long enough. :func:`step_summary` turns the records into fractions of steps.

The wrapped weighting trains exactly as it would without the recorder (the recorder only reads
gradients with :func:`torch.autograd.grad`, which leaves every ``.grad`` untouched); each step
costs ``T`` extra backward passes through the shared parameters.

Example:
    >>> import mtlbook as mb
    >>> from mtlbook.models import SharedBottom
    >>> from mtlbook.weighting import PCGrad
    >>> train, valid = mb.make_correlated_tasks(600, -0.5, n_features=8).split((0.8, 0.2))
    >>> log = StepConflictLog(PCGrad())
    >>> _ = mb.fit(SharedBottom(train.schema, bottom_units=(8,)), train, valid, epochs=2,
    ...            batch_size=120, weighting=log, progress=False)
    >>> sorted(log.alignment()["update"].unique())
    ['equal', 'pcgrad']
    >>> summary = step_summary(log)  # fractions of conflicting and opposing steps
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .weighting import EqualWeight, Weighting
from .weighting._grads import shared_and_specific, task_gradients
from .weighting.pcgrad import project_conflicting

__all__ = ["StepConflictLog", "step_summary"]


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of ``[n, P]`` with ``[n, P]`` (NaN where a row is zero)."""
    na, nb = a.norm(dim=1), b.norm(dim=1)
    out = (a * b).sum(dim=1) / (na * nb)
    return torch.where((na > 0) & (nb > 0), out, torch.full_like(out, float("nan")))


class StepConflictLog(Weighting):
    """A weighting wrapper that records the tasks' gradient conflict on every training step.

    Pass it to :func:`mtlbook.fit` as ``weighting=``; it trains with ``inner`` and records, per
    step, the pairwise cosines of the tasks' mini-batch gradients on the shared parameters
    (before and after PCGrad's projection) and the alignment of the equal-weights update and
    the PCGrad update with every task's gradient (see the module docstring).

    Args:
        inner: the weighting that actually trains the model (default: equal weights). A
            strategy keeps state, so give a fresh one per fit.
        seed: seed of the random task order of the recorded projection (it matters only for
            three or more tasks; it is independent of a wrapped PCGrad's own order).

    Raises:
        TypeError: if ``inner`` is not a :class:`~mtlbook.weighting.Weighting`.
        ValueError: in :meth:`setup` (when training starts), for a model with no shared
            parameters or a single task.
    """

    def __init__(self, inner: Weighting | None = None, seed: int = 0) -> None:
        inner = EqualWeight() if inner is None else inner
        if not isinstance(inner, Weighting):
            raise TypeError(f"inner must be a mtlbook.weighting.Weighting, got "
                            f"{type(inner).__name__}")
        if isinstance(inner, StepConflictLog):
            raise TypeError("inner is already a StepConflictLog; wrap the strategy itself")
        self.inner = inner
        self.seed = int(seed)
        self._pairs: list[tuple] = []
        self._align: list[tuple] = []

    # ---------------------------------------------------------------- the Weighting protocol
    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        if len(self.task_names) < 2:
            raise ValueError(f"gradient conflict compares tasks; the model has one task "
                             f"{list(self.task_names)}")
        self._shared, _ = shared_and_specific(model, "StepConflictLog")
        self._generator = torch.Generator().manual_seed(self.seed)
        self._pairs, self._align = [], []
        self._step, self._epoch = 0, 1
        self.inner.setup(task_names, model)

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module,
                 extra: torch.Tensor | None = None) -> torch.Tensor:
        self._step += 1
        self._record(list(losses.values()))
        return self.inner.backward(losses, model, extra)

    def after_step(self, model: nn.Module, batch) -> None:
        self.inner.after_step(model, batch)

    def epoch_end(self, epoch: int, train_losses: Mapping[str, float]) -> None:
        self._epoch = epoch + 1
        self.inner.epoch_end(epoch, train_losses)

    def parameters(self) -> list[nn.Parameter]:
        return self.inner.parameters()

    @property
    def weights(self) -> dict[str, float]:
        return self.inner.weights

    # ---------------------------------------------------------------- recording
    def _record(self, losses: list[torch.Tensor]) -> None:
        grads = task_gradients(losses, self._shared).detach().double()  # [T, P]
        projected = project_conflicting(grads, self._generator)  # [T, P]
        n = grads.shape[0]
        a, b = np.triu_indices(n, k=1)
        ia, ib = torch.as_tensor(a), torch.as_tensor(b)
        before = _cosines(grads[ia], grads[ib]).tolist()
        after = _cosines(projected[ia], projected[ib]).tolist()
        names = self.task_names
        for i, j, c, cp in zip(a, b, before, after, strict=True):
            self._pairs.append((self._step, self._epoch, names[i], names[j], c, cp))
        for update, rows in (("equal", grads), ("pcgrad", projected)):
            direction = rows.sum(dim=0, keepdim=True).expand_as(grads)  # [T, P]
            cos = _cosines(direction, grads).tolist()  # [T]
            for t, c in enumerate(cos):
                self._align.append((self._step, self._epoch, names[t], update, c))

    def pairs(self) -> pd.DataFrame:
        """Columns ``step`` (1-based), ``epoch``, ``task_a``, ``task_b``, ``cosine`` (of the
        mini-batch gradients) and ``cosine_projected`` (after PCGrad's projection)."""
        return pd.DataFrame(self._pairs, columns=["step", "epoch", "task_a", "task_b",
                                                  "cosine", "cosine_projected"])

    def alignment(self) -> pd.DataFrame:
        """Columns ``step``, ``epoch``, ``task``, ``update`` (``"equal"`` or ``"pcgrad"``) and
        ``cosine``: the cosine between that update direction and the task's gradient."""
        return pd.DataFrame(self._align, columns=["step", "epoch", "task", "update", "cosine"])


def step_summary(logs: StepConflictLog | Mapping[str, StepConflictLog]) -> pd.DataFrame:
    """Fractions of steps that conflict, per run: the numbers behind PCGrad's promise.

    Args:
        logs: one :class:`StepConflictLog` after training, or several by name (one row each).

    Returns:
        pandas.DataFrame:
        One row per run (index: the names, or ``0``): ``steps``; ``mean_cosine`` of the task
        gradients (over steps and pairs); ``conflicting`` — the fraction of steps with a pair
        of tasks whose gradients conflict (cosine < 0); ``equal_opposes`` and
        ``pcgrad_opposes`` — the fraction of steps whose equal-weights / PCGrad update points
        against at least one task's gradient (cosine < -1e-6, a margin for rounding).

    Raises:
        ValueError: if a log has recorded no step (was it passed to ``fit``?).
    """
    if isinstance(logs, StepConflictLog):
        logs = {0: logs}
    if not isinstance(logs, Mapping) or not logs:
        raise TypeError("logs must be a StepConflictLog or a non-empty mapping name → log")
    rows = {}
    for name, log in logs.items():
        if not isinstance(log, StepConflictLog):
            raise TypeError(f"log {name!r} is a {type(log).__name__}, not a StepConflictLog")
        pairs, align = log.pairs(), log.alignment()
        if pairs.empty:
            raise ValueError(f"log {name!r} has no recorded step; pass it to mtlbook.fit as "
                             "weighting=... and train first")
        opposes = align.assign(against=align["cosine"] < -1e-6).groupby(
            ["update", "step"])["against"].any().groupby("update").mean()
        rows[name] = {
            "steps": int(pairs["step"].nunique()),
            "mean_cosine": float(pairs["cosine"].mean()),
            "conflicting": float((pairs["cosine"] < 0).groupby(pairs["step"]).any().mean()),
            "equal_opposes": float(opposes.get("equal", np.nan)),
            "pcgrad_opposes": float(opposes.get("pcgrad", np.nan)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
