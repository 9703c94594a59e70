"""Gradients of the tasks on the shared parameters: do the tasks pull the same way?

* :func:`pairwise_cosine` turns a ``[tasks, parameters]`` gradient matrix into cosines;
  :func:`gradient_conflict` measures the cosines of every two tasks' gradients on
  :meth:`~mtlbook.models.MultiTaskModel.shared_parameters` once, on a batch;
  :class:`GradientConflict`, a :func:`~mtlbook.training.fit` callback, records them (and each
  task's gradient norm) on a fixed probe every few steps while a model trains;
  :func:`plot_gradient_conflict` draws either.
* :class:`StepConflictLog` records what gradient surgery does to every training step (below).
  Chapters 12.4.1 and 12.4.2 of the book uses both to discuss negative transfer and PCGrad.

**What gradient surgery does to each step.**
:class:`~mtlbook.analysis.gradients.GradientConflict` measures the tasks' gradient cosine on a fixed
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
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import nn

from ..data import Batch, MultiTaskData
from ..models.base import MultiTaskModel
from ..training.loop import Callback
from ..utils import model_device
from ..weighting import EqualWeight, Weighting
from ..weighting._grads import shared_and_specific, task_gradients
from ..weighting.pcgrad import project_conflicting
from ._common import SHARED_COLOR, check_model_data

__all__ = [
    "GradientConflict",
    "StepConflictLog",
    "gradient_conflict",
    "pairwise_cosine",
    "plot_gradient_conflict",
    "step_summary",
]


# ---------------------------------------------------------------------------- gradients
def pairwise_cosine(gradients: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[T, T]`` cosine similarities between the rows of a ``[T, P]`` gradient matrix.

    Row ``i`` is task ``i``'s flattened gradient; a zero row (a task whose loss does not move
    the parameters, e.g. a masked task with no sample in the batch) gives NaN cosines.

    Example:
        >>> from mtlbook.analysis.gradients import pairwise_cosine
        >>> pairwise_cosine([[1.0, 0.0], [-2.0, 0.0], [0.0, 3.0]]).round(6).tolist()
        [[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    g = (
        torch.as_tensor(
            np.asarray(gradients) if not isinstance(gradients, torch.Tensor) else gradients
        )
        .detach()
        .to("cpu", torch.float64)
    )
    if g.dim() != 2:
        raise ValueError(
            f"gradients must be a [tasks, parameters] matrix, got shape {tuple(g.shape)}"
        )
    norms = g.norm(dim=1)  # [T]
    unit = g / norms.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)  # [T, P]
    cosine = (unit @ unit.T).clamp(-1.0, 1.0).numpy()  # [T, T]
    zero = (norms == 0).numpy()
    cosine[zero, :] = np.nan
    cosine[:, zero] = np.nan
    return cosine


def _shared_parameters(model: MultiTaskModel) -> list[torch.nn.Parameter]:
    params = [p for p in model.shared_parameters() if p.requires_grad]
    if not params:
        name = type(model).__name__
        raise ValueError(
            f"{name} has no shared parameters (model.shared_parameters() is empty): its tasks "
            "share no parameter, so their gradients never meet and cannot conflict. Measure "
            "gradient conflict on a model that shares parameters, such as SharedBottom, MMoE "
            "or PLE"
        )
    return params


def _check_tasks(model: MultiTaskModel) -> None:
    if len(model.task_names) < 2:
        raise ValueError(
            f"gradient conflict compares tasks; the model has one task {list(model.task_names)}"
        )


def _probe_batch(data: MultiTaskData, probe_size: int, seed: int) -> Batch:
    """A fixed random sample of ``probe_size`` rows (all rows if fewer) as one batch."""
    if not isinstance(probe_size, int | np.integer) or probe_size < 2:
        raise ValueError(f"probe_size must be an integer ≥ 2, got {probe_size!r}")
    n = len(data)
    if n > probe_size:
        index = np.sort(np.random.default_rng(seed).choice(n, size=int(probe_size), replace=False))
        data = data.subset(index)
    return next(iter(data.loader(len(data), shuffle=False)))


def _conflict_rows(model: MultiTaskModel, batch: Batch) -> pd.DataFrame:
    """Cosines and norms of the tasks' gradients on the shared parameters for ``batch``, at
    the current weights, in evaluation mode; ``.grad`` and the random state are untouched."""
    params = _shared_parameters(model)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            losses = model.task_losses(model(batch), batch)
            grads = task_gradients([losses[t] for t in model.task_names], params)  # [T, P]
    finally:
        model.train(was_training)
    cosine = pairwise_cosine(grads)
    norms = grads.detach().norm(dim=1).cpu().double().numpy()  # [T]
    names = model.task_names
    a, b = np.triu_indices(len(names), k=1)
    return pd.DataFrame(
        {
            "task_a": [names[i] for i in a],
            "task_b": [names[j] for j in b],
            "cosine": cosine[a, b],
            "norm_a": norms[a],
            "norm_b": norms[b],
        }
    )


def gradient_conflict(
    model: MultiTaskModel, data: MultiTaskData, *, probe_size: int = 1024, seed: int = 0
) -> pd.DataFrame:
    """The cosine between every two tasks' gradients on the shared parameters, now.

    Each task's mean loss over a probe of ``probe_size`` samples of ``data`` (a fixed random
    sample drawn with ``seed``; all of ``data`` if smaller) is differentiated with respect to
    :meth:`~mtlbook.models.MultiTaskModel.shared_parameters`, in evaluation mode (no dropout).
    A negative cosine means a step that lowers one task's loss raises the other's: the
    gradient conflict behind negative transfer (chapter 12.4), which PCGrad, MGDA or CAGrad
    resolve. The norms show whether one task dominates the shared update.

    Args:
        model: a model with shared parameters and at least two tasks.
        data: where the probe is drawn from (the training data, or a validation split).
        probe_size: samples in the probe.
        seed: seed of the probe's sample.

    Returns:
        One row per pair of tasks ``task_a < task_b`` (schema order): ``cosine``, ``norm_a``
        and ``norm_b`` (the two gradients' Euclidean norms).

    Raises:
        ValueError: for a model without shared parameters (naming it) or with one task.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gradients import gradient_conflict
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.make_correlated_tasks(1_000, 0.5, n_features=8, seed=0)
        >>> frame = gradient_conflict(SharedBottom(data.schema, bottom_units=(16,)), data)
        >>> frame[["task_a", "task_b"]].values.tolist()
        [['task1', 'task2']]
    """
    check_model_data(model, data)
    _shared_parameters(model)
    _check_tasks(model)
    batch = _probe_batch(data, probe_size, seed).to(model_device(model))
    return _conflict_rows(model, batch)


class GradientConflict(Callback):
    """A :func:`~mtlbook.fit` callback recording the tasks' gradient conflict during training.

    :meth:`Callback.on_step_end` runs after the optimiser step and receives the step's losses
    as floats, without their graph, so the step's own gradients are gone. Rather than keep
    every step's graph alive (or change :func:`~mtlbook.fit`), the callback measures the
    gradients on a **probe**: a fixed random sample of ``probe_size`` rows of ``data``, drawn
    once with ``seed``. Before the first step (step 0) and every ``every`` steps it computes,
    at the current weights and as :func:`gradient_conflict` does, each task's gradient of its
    mean probe loss on the shared parameters, and records their pairwise cosines and norms.

    Why a fixed probe: the same samples at every record make the curve follow the weights,
    not the sampling noise of the mini-batches; the probe can be a validation split, so the
    conflict is measured where the model is judged. It does not interfere with training: the
    probe runs in evaluation mode (no dropout, so the random state seeded by ``fit`` is not
    consumed), through ``torch.autograd.grad`` (no parameter's ``.grad`` is touched), and
    training with or without the callback gives the same weights. Its cost is one forward and
    ``T`` backward passes on the probe every ``every`` steps.

    Args:
        data: the data set the probe is drawn from (the model's schema).
        every: record every ``every`` optimiser steps (the step count runs over all epochs).
        probe_size: samples in the probe (all of ``data`` if it has fewer).
        seed: seed of the probe's sample.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gradients import GradientConflict
        >>> from mtlbook.models import SharedBottom
        >>> train, valid = mb.make_correlated_tasks(1_000, 0.5, n_features=8).split((0.8, 0.2))
        >>> conflict = GradientConflict(valid, every=5)
        >>> result = mb.fit(SharedBottom(train.schema, bottom_units=(16,)), train, valid,
        ...                 epochs=2, batch_size=100, progress=False, callbacks=[conflict])
        >>> conflict.frame()["step"].tolist()
        [0, 5, 10, 15]
    """

    def __init__(
        self, data: MultiTaskData, every: int = 50, probe_size: int = 512, seed: int = 0
    ) -> None:
        if not isinstance(data, MultiTaskData):
            raise TypeError(f"data must be a MultiTaskData, got {type(data).__name__}")
        if not isinstance(every, int | np.integer) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.data = data
        self.every = int(every)
        self._batch = _probe_batch(data, probe_size, seed)
        self._records: list[pd.DataFrame] = []
        self._epoch = 0

    def on_train_begin(self, model: MultiTaskModel, weighting: Any) -> None:
        """Check the model, move the probe to its device, clear earlier records, record step
        0 (the initial weights)."""
        check_model_data(model, self.data)
        _shared_parameters(model)
        _check_tasks(model)
        self._batch = self._batch.to(model_device(model))
        self._records = []
        self._epoch = 0
        self._record(model, 0)
        self._epoch = 1

    def on_step_end(self, model: MultiTaskModel, step: int, losses: dict[str, float]) -> None:
        """Record when ``step`` is a multiple of ``every``."""
        if step % self.every == 0:
            self._record(model, step)

    def on_epoch_end(self, model: MultiTaskModel, epoch: int, history: pd.DataFrame) -> None:
        """Count epochs, so each record knows the epoch its step belongs to."""
        self._epoch = epoch + 1

    def _record(self, model: MultiTaskModel, step: int) -> None:
        rows = _conflict_rows(model, self._batch)
        rows.insert(0, "step", int(step))
        rows.insert(1, "epoch", self._epoch)
        self._records.append(rows)

    def frame(self) -> pd.DataFrame:
        """Columns ``step`` (0: before training), ``epoch`` (0 for step 0), ``task_a``,
        ``task_b``, ``cosine``, ``norm_a`` and ``norm_b``; one row per record and pair."""
        if not self._records:
            return pd.DataFrame(
                columns=["step", "epoch", "task_a", "task_b", "cosine", "norm_a", "norm_b"]
            )
        return pd.concat(self._records, ignore_index=True)

    def norms(self) -> pd.DataFrame:
        """Columns ``step``, ``epoch``, ``task`` and ``norm``: one row per record and task."""
        return _norms(self.frame())


def _norms(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("step", "epoch") if c in frame.columns]
    parts = [
        frame[[*keys, f"task_{s}", f"norm_{s}"]].set_axis([*keys, "task", "norm"], axis=1)
        for s in ("a", "b")
    ]
    norms = pd.concat(parts, ignore_index=True).drop_duplicates([*keys, "task"])
    return norms.sort_values(keys, kind="stable").reset_index(drop=True)


def plot_gradient_conflict(frame: pd.DataFrame) -> plt.Figure:
    """Draw a gradient-conflict frame: cosines and gradient norms.

    A :meth:`GradientConflict.frame` (several steps) gives two panels over the training steps:
    the cosine of every pair of tasks, with the conflicting region (cosine < 0) shaded, and
    each task's gradient norm (log scale). A :func:`gradient_conflict` frame (one moment)
    gives the tasks × tasks cosine matrix and a bar per task's norm.

    Args:
        frame: the output of :meth:`GradientConflict.frame` or :func:`gradient_conflict`.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gradients import gradient_conflict, plot_gradient_conflict
        >>> from mtlbook.models import SharedBottom
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> model = SharedBottom(data.schema, bottom_units=(16,))
        >>> fig = plot_gradient_conflict(gradient_conflict(model, data))
    """
    needed = ("task_a", "task_b", "cosine", "norm_a", "norm_b")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"not a gradient-conflict frame: column(s) {missing} are missing")
    if frame.empty:
        raise ValueError("the gradient-conflict frame is empty (did training run?)")
    norms = _norms(frame)
    tasks = list(dict.fromkeys(norms["task"]))
    palette = dict(zip(tasks, sns.color_palette("colorblind", len(tasks)), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6))
    over_time = "step" in frame.columns and frame["step"].nunique() > 1
    if over_time:
        pairs = frame.assign(pair=frame["task_a"] + " · " + frame["task_b"])
        ax = axes[0]
        ax.axhspan(-1.05, 0.0, color="#f4cccc", alpha=0.5, linewidth=0, label="conflict")
        ax.axhline(0.0, color=SHARED_COLOR, linewidth=0.8)
        sns.lineplot(
            data=pairs,
            x="step",
            y="cosine",
            hue="pair",
            ax=ax,
            marker="o",
            markersize=3,
            palette="dark",
        )
        ax.set(
            ylim=(-1.05, 1.05),
            ylabel="cosine of task gradients",
            title="gradient agreement on shared parameters",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        sns.lineplot(
            data=norms,
            x="step",
            y="norm",
            hue="task",
            ax=axes[1],
            marker="o",
            markersize=3,
            palette=palette,
        )
        axes[1].set(yscale="log", ylabel="gradient norm", title="gradient norm per task")
        axes[1].grid(alpha=0.3)
    else:
        matrix = pd.DataFrame(np.eye(len(tasks)), index=tasks, columns=tasks)
        for a, b, c in frame[["task_a", "task_b", "cosine"]].itertuples(index=False):
            matrix.loc[a, b] = matrix.loc[b, a] = c
        sns.heatmap(
            matrix,
            ax=axes[0],
            vmin=-1,
            vmax=1,
            center=0,
            cmap="vlag",
            annot=True,
            fmt=".2f",
            square=True,
            cbar_kws={"label": "cosine"},
        )
        axes[0].set(title="cosine of task gradients")
        axes[0].tick_params(axis="y", labelrotation=0)
        last = norms.drop_duplicates("task", keep="last")
        axes[1].bar(last["task"], last["norm"], color=[palette[t] for t in last["task"]])
        axes[1].set(yscale="log", ylabel="gradient norm", title="gradient norm per task")
        axes[1].grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------- gradient surgery, per step


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
            raise TypeError(
                f"inner must be a mtlbook.weighting.Weighting, got {type(inner).__name__}"
            )
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
            raise ValueError(
                f"gradient conflict compares tasks; the model has one task {list(self.task_names)}"
            )
        self._shared, _ = shared_and_specific(model, "StepConflictLog")
        self._generator = torch.Generator().manual_seed(self.seed)
        self._pairs, self._align = [], []
        self._step, self._epoch = 0, 1
        self.inner.setup(task_names, model)

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
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
        return pd.DataFrame(
            self._pairs, columns=["step", "epoch", "task_a", "task_b", "cosine", "cosine_projected"]
        )

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
    runs: Mapping[Any, StepConflictLog] = {0: logs} if isinstance(logs, StepConflictLog) else logs
    if not isinstance(runs, Mapping) or not runs:
        raise TypeError("logs must be a StepConflictLog or a non-empty mapping name → log")
    rows = {}
    for name, log in runs.items():
        if not isinstance(log, StepConflictLog):
            raise TypeError(f"log {name!r} is a {type(log).__name__}, not a StepConflictLog")
        pairs, align = log.pairs(), log.alignment()
        if pairs.empty:
            raise ValueError(
                f"log {name!r} has no recorded step; pass it to mtlbook.fit as "
                "weighting=... and train first"
            )
        opposes = (
            align.assign(against=align["cosine"] < -1e-6)
            .groupby(["update", "step"])["against"]
            .any()
            .groupby("update")
            .mean()
        )
        rows[name] = {
            "steps": int(pairs["step"].nunique()),
            "mean_cosine": float(pairs["cosine"].mean()),
            "conflicting": float((pairs["cosine"] < 0).groupby(pairs["step"]).any().mean()),
            "equal_opposes": float(opposes.get("equal", np.nan)),
            "pcgrad_opposes": float(opposes.get("pcgrad", np.nan)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
