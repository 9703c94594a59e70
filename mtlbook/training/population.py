"""Many seeds at once: train a population of models of one architecture in one vectorised run.

Whether one architecture beats another is only worth saying over many seeds: the MMoE paper's
trainability study (Ma et al., KDD 2018, section 5.4) trained every model 200 times. Trained
one after another, small models spend most of their time in Python and in launching tiny
operators; :func:`fit_population` instead trains ``K`` members as one model with a leading
member dimension:

* the members' parameters are stacked (``torch.func.stack_module_state``): every parameter
  becomes one ``[K, ...]`` tensor;
* the forward pass and the per-task losses of the model's own code run under ``torch.vmap``
  over the member dimension (``torch.func.functional_call`` on one template module), so that
  each operator runs once for all members;
* the members' total losses are summed and back-propagated once: member ``k``'s parameters
  receive exactly the gradient of member ``k``'s loss, since the members share nothing;
* one Adam optimiser updates the stacked tensors. Adam is elementwise, so this is ``K``
  independent Adam optimisers (the tests check it).

Member ``k`` is built by ``make_model(seeds[k])`` and draws its mini-batches in the order that
``train.loader(batch_size, shuffle=True, seed=seeds[k])`` would: it follows the trajectory of
``fit(make_model(seeds[k]), train, valid, seed=seeds[k], ...)`` with equal loss weights, up to
floating-point rounding (the batched matrix products sum in another order). Validation, the
best epoch, early stopping and the restoration of the best weights are per member, as in
:func:`mtlbook.fit`. It is made for experiments like the paper's trainability study; chapter
12.3.3 of the book re-runs the paper's synthetic experiments.

The members may share one data set (a trainability study: the seeds vary only the initial
weights and the batch order) or each have their own of the same size (each seed's own draw
and split, as :func:`mtlbook.analysis.runs.repeat_fits` makes them).
:func:`~mtlbook.analysis.runs.population_trainer` plugs this into
:func:`~mtlbook.analysis.runs.repeat_fits` and so into the comparison harness
(:mod:`mtlbook.analysis`): the seeds of every configuration that allows it train as one population,
the others one by one with :func:`mtlbook.fit`.

Limitations: fixed loss weights only (equal, or :class:`~mtlbook.weighting.FixedWeights`'
constants), not the adaptive strategies; no dropout (a member's dropout masks could not be
those of its separate run); every member must have the same architecture. A model whose forward
pass cannot run under ``torch.vmap``, or gives other results there than member by member, is
refused with an error that names it (checked on a probe batch before training).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from ..data import Batch, MultiTaskData
from ..metrics import gauc
from ..models.base import MultiTaskModel
from ..models.experts import StackedExperts
from ..utils import resolve_device
from .loop import _check_monitor

__all__ = ["PopulationResult", "fit_population"]

_HISTORY = ["member", "seed", "epoch", "split", "task", "metric", "value"]
_SCORES = ["member", "seed", "task", "metric", "value"]
# How closely the vectorised probe must reproduce each member's own forward pass and
# gradients (float32; the batched products only sum in another order).
_PROBE_RTOL, _PROBE_ATOL = 1e-3, 1e-5


class _Losses(nn.Module):
    """The loss part of one training step of :func:`mtlbook.fit` with fixed weights:
    per-task losses ``[tasks]`` and the total ``Σ_k w_k L_k (+ regularization)``."""

    def __init__(self, model: MultiTaskModel, weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.weights = weights  # [tasks] fixed loss weights, None: all 1

    def forward(self, dense, categorical, labels, masks):
        batch = Batch(dense, categorical, labels, masks)
        losses = self.model.task_losses(self.model(batch), batch)
        extra = self.model.regularization()
        values = torch.stack(list(losses.values()))  # [tasks]
        total = values.sum() if self.weights is None else (self.weights * values).sum()
        if extra is not None:
            total = total + extra
        return values, total


class _Predict(nn.Module):
    """The task predictions of ``model.predict_batch`` (probabilities for binary tasks)."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, dense, categorical):
        outputs = self.model.predict_batch(Batch(dense, categorical))
        return {name: outputs[name] for name in self.model.task_names}


class _Population:
    """The template module, the stacked parameters of the members still training and the
    vectorised functions that run them."""

    def __init__(self, template: MultiTaskModel, params: dict[str, torch.Tensor],
                 weights: torch.Tensor | None = None) -> None:
        self.template = template
        for module in template.modules():  # vmap-friendly layout of the experts' first layer
            if isinstance(module, StackedExperts):
                module.single_gemm = True
        self.params = params  # "model.<name>" -> [members, ...]
        self._losses, self._predict = _Losses(template, weights), _Predict(template)

    def losses(self, params, dense, categorical, labels, masks):
        """Per-member task losses ``[members, tasks]`` and totals ``[members]``; the batch
        tensors carry a leading member dimension (each member its own samples)."""
        dims = (0, None if dense is None else 0, None if categorical is None else 0, 0, 0)
        run = torch.vmap(lambda p, *batch: functional_call(self._losses, p, batch),
                         in_dims=dims, randomness="error")
        return run(params, dense, categorical, labels, masks)

    @torch.no_grad()
    def predict(self, params, data: MultiTaskData | _MemberData, device: torch.device,
                batch_size: int, members: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """Every member's predictions on ``data``: task -> ``[members, n]`` float32 array.

        ``data`` is one data set that every member predicts, or a :class:`_MemberData` whose
        rows ``members`` (the members in ``params``, in order) each member predicts on its own.
        """
        shared = isinstance(data, MultiTaskData)
        dense_dim = None if shared or data.dense is None else 0
        categorical_dim = None if shared or data.categorical is None else 0
        run = torch.vmap(lambda p, d, c: functional_call(self._predict, p, (d, c)),
                         in_dims=(0, dense_dim, categorical_dim), randomness="error")
        was_training = self.template.training
        self.template.eval()
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in self.template.task_names}
        try:
            if shared:
                batches = ((b.dense, b.categorical) for b in
                           (batch.to(device) for batch in data.loader(batch_size, shuffle=False)))
            else:
                batches = data.chunks(members, batch_size, device)
            for dense, categorical in batches:
                for name, value in run(params, dense, categorical).items():
                    chunks[name].append(value.float().cpu().numpy())  # [members, chunk]
        finally:
            self.template.train(was_training)
        return {name: np.concatenate(parts, axis=1) for name, parts in chunks.items()}


class _MemberData:
    """One data set per member, all of the same schema and size, as stacked tensors: member
    ``k``'s row ``i`` is row ``k * n + i`` of the concatenation."""

    def __init__(self, parts: Sequence[MultiTaskData]) -> None:
        self.parts = list(parts)
        self.n = len(self.parts[0])
        tensors = [part.tensors() for part in self.parts]
        dense, categorical = tensors[0][0], tensors[0][1]
        self.dense = None if dense is None else torch.cat([t[0] for t in tensors])
        self.categorical = None if categorical is None else torch.cat([t[1] for t in tensors])

    def chunks(self, members: torch.Tensor, batch_size: int, device: torch.device):
        """``(dense, categorical)`` per chunk of rows, each ``[members, chunk, ...]``."""
        base = members.to(torch.long).mul(self.n).unsqueeze(1)  # [members, 1]
        for start in range(0, self.n, batch_size):
            index = base + torch.arange(start, min(start + batch_size, self.n))
            yield (None if self.dense is None else _rows(self.dense, index).to(device),
                   None if self.categorical is None else
                   _rows(self.categorical, index).to(device))


def _rows(t: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """Rows ``index`` (``[members, batch]``) of ``t``, as ``[members, batch, ...]``."""
    if t is None:
        return None
    return t.index_select(0, index.reshape(-1)).view(*index.shape, *t.shape[1:])


def _member_metrics(kind: str, y: np.ndarray, p: np.ndarray, groups: np.ndarray | None
                    ) -> dict[str, np.ndarray]:
    """:mod:`mtlbook.metrics`' metrics of one task for every member at once: labels ``y``
    ``[n]``, predictions ``p`` ``[members, n]``; metric -> ``[members]`` values, in the order
    :func:`mtlbook.evaluate` reports them."""
    if kind == "regression":
        error = p - y
        return {"mse": np.mean(error * error, axis=1), "mae": np.mean(np.abs(error), axis=1)}
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos and n_neg:  # Mann–Whitney form of the AUC, ties ranked by their average
        ranks = stats.rankdata(p, method="average", axis=1)
        auc = (ranks @ y - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    else:
        auc = np.full(len(p), np.nan)
    q = np.clip(p, 1e-7, 1 - 1e-7)  # as mtlbook.metrics clips before sklearn's log_loss
    out = {"auc": auc, "logloss": -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q), axis=1)}
    if groups is not None:
        out["gauc"] = np.array([gauc(y, row, groups) for row in p])
    return out


def _score(predictions: dict[str, np.ndarray], data: MultiTaskData | Sequence[MultiTaskData],
           members: Sequence[int], seeds: Sequence[int]) -> list[tuple]:
    """``(member, seed, task, metric, value)`` rows: :func:`mtlbook.evaluate`'s metrics of
    each member's predictions (row ``i`` of each array belongs to ``members[i]``), on ``data``
    or, given one data set per member, on ``data[member]``."""
    if not isinstance(data, MultiTaskData):  # one data set per member: score them one by one
        rows = []
        for i, member in enumerate(members):
            own = {name: p[i:i + 1] for name, p in predictions.items()}
            rows += _score(own, data[member], [member], seeds)
        return rows
    rows = []
    for task in data.schema.tasks:
        mask = data.mask(task.name)
        y = data.labels[task.name][mask].astype(np.float64)
        if len(y) == 0:
            continue
        p = predictions[task.name][:, mask].astype(np.float64)  # [members, n_task]
        groups = None if data.groups is None else data.groups[mask]
        metrics = _member_metrics(task.kind, y, p, groups)
        for i, member in enumerate(members):
            rows += [(member, seeds[member], task.name, k, float(v[i]))
                     for k, v in metrics.items()]
    return rows


@dataclass
class PopulationResult:
    """What :func:`fit_population` returns.

    Attributes:
        seeds: the members' seeds; member ``k`` was built by ``make_model(seeds[k])``.
        history: tidy DataFrame with columns ``member, seed, epoch, split, task, metric,
            value``: for each member the rows :attr:`mtlbook.training.FitResult.history` would hold
            (training loss and task weight per epoch, every validation metric, validation
            ``loss`` per task and for task ``all``), for the epochs the member ran.
        summary: one row per member: ``member, seed, best_epoch, best_score, epochs_run``.
        monitor: what was monitored, e.g. ``"loss"`` or ``"task1:auc"``.
        train_seconds: wall-clock time of the whole run (all members, validation included).
    """

    seeds: tuple[int, ...]
    history: pd.DataFrame
    summary: pd.DataFrame
    monitor: str
    train_seconds: float
    _make_model: Callable[[int], MultiTaskModel] = field(repr=False)
    _population: _Population = field(repr=False)

    def __len__(self) -> int:
        return len(self.seeds)

    def _member(self, member: int) -> int:
        if not isinstance(member, int | np.integer) or not 0 <= member < len(self.seeds):
            raise IndexError(f"member must be an integer in 0 .. {len(self.seeds) - 1}, "
                             f"got {member!r}")
        return int(member)

    def model(self, member: int) -> MultiTaskModel:
        """Member ``member``'s trained model (the weights of its best epoch), as a fresh
        module built by ``make_model(seeds[member])``, in eval mode."""
        member = self._member(member)
        model = self._make_model(self.seeds[member])
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self._population.params[f"model.{name}"][member])
        return model.eval()

    def valid_metrics(self, member: int, epoch: int | None = None) -> pd.DataFrame:
        """Member ``member``'s validation metrics at ``epoch`` (default: its best epoch) as
        ``task × metric``, like :meth:`mtlbook.training.FitResult.valid_metrics`."""
        member = self._member(member)
        if epoch is None:
            epoch = int(self.summary.loc[member, "best_epoch"])
        h = self.history
        rows = h[(h["member"] == member) & (h["split"] == "valid") & (h["epoch"] == epoch)]
        return rows.pivot(index="task", columns="metric", values="value")

    def evaluate(self, data: MultiTaskData | Sequence[MultiTaskData], batch_size: int = 1024
                 ) -> pd.DataFrame:
        """Every member's metrics on ``data`` (e.g. the test split), at its best epoch.

        Args:
            data: one data set for every member, or one per member (in the order of
                :attr:`seeds`), as the population was trained.
            batch_size: members × ``batch_size`` samples are held at once.

        Returns:
            A tidy DataFrame with columns ``member, seed, task, metric, value``: for each
            member ``k`` the rows of ``mtlbook.evaluate(result.model(k), data)`` (or of
            ``data[k]``).
        """
        template = self._population.template
        parts = _data_parts("data", data, len(self.seeds))
        for part in parts:
            template._check_data(part)
        members = range(len(self.seeds))
        source = parts[0] if len(parts) == 1 else _MemberData(parts)
        predictions = self._population.predict(self._population.params, source,
                                               torch.device("cpu"), batch_size,
                                               torch.arange(len(self.seeds)))
        scored = parts[0] if len(parts) == 1 else parts
        return pd.DataFrame(_score(predictions, scored, members, self.seeds), columns=_SCORES)


def _data_parts(name: str, data, n_members: int) -> list[MultiTaskData]:
    """``[data]`` for one data set shared by every member, or the list of per-member data
    sets, checked: one per member, the same schema and the same size."""
    if isinstance(data, MultiTaskData):
        return [data]
    if isinstance(data, str | bytes) or not isinstance(data, Sequence):
        raise TypeError(f"{name} must be a MultiTaskData or a sequence of them (one per seed), "
                        f"got {type(data).__name__}")
    parts = list(data)
    bad = [type(p).__name__ for p in parts if not isinstance(p, MultiTaskData)]
    if bad:
        raise TypeError(f"{name} must hold MultiTaskData objects, got {bad[0]}")
    if len(parts) != n_members:
        raise ValueError(f"{name} holds {len(parts)} data sets for {n_members} seeds; give one "
                         "per seed, or one MultiTaskData for all")
    for i, part in enumerate(parts[1:], start=1):
        if part.schema != parts[0].schema:
            raise ValueError(f"{name}[{i}] has another schema than {name}[0]: the members of a "
                             "population share one architecture, so their data share a schema")
        if len(part) != len(parts[0]):
            raise ValueError(f"{name}[{i}] has {len(part)} rows, {name}[0] {len(parts[0])}: a "
                             "population's per-seed data sets must have the same size")
    return parts


def _task_weights(task_weights, task_names: Sequence[str]) -> list[float] | None:
    """The fixed loss weights in task order (``None``: every weight 1), checked."""
    if task_weights is None:
        return None
    if not isinstance(task_weights, Mapping):
        raise TypeError(f"task_weights must be a mapping task -> weight, got "
                        f"{type(task_weights).__name__}")
    unknown = sorted(set(task_weights) - set(task_names))
    missing = [t for t in task_names if t not in task_weights]
    if unknown or missing:
        raise ValueError(f"task_weights must give a weight for each task {list(task_names)}; "
                         f"unknown {unknown}, missing {missing}")
    values = []
    for task in task_names:
        w = task_weights[task]
        if isinstance(w, bool) or not isinstance(w, int | float | np.floating | np.integer) \
                or not math.isfinite(w) or w < 0:
            raise ValueError(f"task_weights[{task!r}] must be a finite number ≥ 0, got {w!r}")
        values.append(float(w))
    if not any(values):
        raise ValueError(f"every task weight is 0, so no task would be trained: {task_weights}")
    return values


def _check_arguments(seeds, epochs, batch_size, lr, weight_decay, early_stopping,
                     eval_batch_size) -> tuple[int, ...]:
    if isinstance(seeds, int | np.integer):
        raise TypeError(f"seeds must be a sequence of integers such as range({seeds}), "
                        f"got the single integer {seeds}")
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds is empty: a population needs at least one member")
    bad = [s for s in seeds if not isinstance(s, int | np.integer) or isinstance(s, bool)]
    if bad:
        raise TypeError(f"seeds must be integers, got {bad[:3]}")
    seeds = tuple(int(s) for s in seeds)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds {repeated} appear more than once; members with the same seed "
                         "would be identical runs")
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("eval_batch_size", eval_batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay!r}")
    if early_stopping is not None and (not isinstance(early_stopping, int)
                                       or isinstance(early_stopping, bool)
                                       or early_stopping < 1):
        raise ValueError("early_stopping must be None or a positive integer, "
                         f"got {early_stopping!r}")
    return seeds


def _dropout_rates(model: nn.Module) -> list[float]:
    """The positive dropout probabilities of ``model``'s dropout layers."""
    return [m.p for m in model.modules()
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def _build_members(make_model, seeds, train) -> list[MultiTaskModel]:
    if isinstance(make_model, nn.Module) or not callable(make_model):
        raise TypeError(f"make_model must be a callable seed -> MultiTaskModel such as "
                        f"lambda seed: MMoE(train.schema, seed=seed), got "
                        f"{type(make_model).__name__}")
    members = [make_model(seed) for seed in seeds]
    first = members[0]
    if not isinstance(first, MultiTaskModel):
        raise TypeError(f"make_model must return a mtlbook MultiTaskModel, got "
                        f"{type(first).__name__}")
    name = type(first).__name__
    shapes = {n: (p.shape, p.dtype, p.requires_grad) for n, p in first.named_parameters()}
    buffers = dict(first.named_buffers())
    for seed, model in zip(seeds[1:], members[1:], strict=True):
        if type(model) is not type(first):
            raise ValueError(f"make_model({seed}) built a {type(model).__name__}, "
                             f"make_model({seeds[0]}) a {name}: a population has one architecture")
        other = {n: (p.shape, p.dtype, p.requires_grad) for n, p in model.named_parameters()}
        if other != shapes:
            raise ValueError(f"make_model({seed}) and make_model({seeds[0]}) built {name}s with "
                             "different parameters (names or shapes); a population needs "
                             "identical architectures, only the seed may differ")
        other_buffers = dict(model.named_buffers())
        if other_buffers.keys() != buffers.keys() or not all(
                torch.equal(other_buffers[n], b) for n, b in buffers.items() if b is not None):
            raise ValueError(f"make_model({seed}) and make_model({seeds[0]}) built {name}s whose "
                             "buffers differ; the members must differ in their parameters only")
    dropout = _dropout_rates(first)
    if dropout:
        raise ValueError(f"{name} uses dropout (p={dropout[0]}); fit_population does not "
                         "support dropout, since a member's dropout masks could not match its "
                         "separate fit run. Build the members with dropout=0, or train them "
                         "one by one with mtlbook.fit")
    first._check_data(train)
    return members


def _probe(population: _Population, members: list[MultiTaskModel], data: MultiTaskData,
           seeds: Sequence[int]) -> None:
    """Refuse a model that does not run under vmap or runs differently there: compare the
    vectorised losses (all members) and gradients (first and last member) on a small batch
    with each member's own."""
    name = type(population.template).__name__
    n = min(len(data), 64)
    batch = next(iter(data.loader(n, shuffle=False)))
    k = len(members)

    def stacked(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.unsqueeze(0).expand(k, *t.shape).contiguous()

    params = {n_: p.detach().clone().requires_grad_(p.requires_grad)
              for n_, p in population.params.items()}
    try:
        values, totals = population.losses(
            params, stacked(batch.dense), stacked(batch.categorical),
            {t: stacked(v) for t, v in batch.labels.items()},
            {t: stacked(v) for t, v in batch.masks.items()})
        totals.sum().backward()
    except Exception as err:  # any failure under vmap: say which model and why
        raise NotImplementedError(
            f"{name} cannot be trained as a vectorised population: its forward pass or loss "
            f"does not run under torch.vmap ({type(err).__name__}: {err}). Train the seeds one "
            "by one with mtlbook.fit") from err
    finally:
        population.template._clear_gates()
    check = sorted({0, k - 1})
    for i, model in enumerate(members):
        model.train()
        model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(i in check):
            own, own_total = _Losses(model, population._losses.weights)(
                batch.dense, batch.categorical, batch.labels, batch.masks)
        problem = None
        if not torch.allclose(values[i].detach(), own.detach(), _PROBE_RTOL, _PROBE_ATOL,
                              equal_nan=True):
            problem = "its losses"
        elif i in check:
            own_total.backward()
            for n_, p in model.named_parameters():
                g_own = torch.zeros_like(p) if p.grad is None else p.grad
                g_pop = params[f"model.{n_}"].grad
                g_pop = torch.zeros_like(p) if g_pop is None else g_pop[i]
                if not torch.allclose(g_pop, g_own, _PROBE_RTOL, _PROBE_ATOL, equal_nan=True):
                    problem = f"the gradients of {n_!r}"
                    break
            model.zero_grad(set_to_none=True)
        if problem is not None:
            raise NotImplementedError(
                f"{name} cannot be trained as a vectorised population: under torch.vmap, "
                f"{problem} for seed {seeds[i]} differ from the model's own on the same batch "
                "(its forward pass probably keeps state outside its parameters and buffers). "
                "Train the seeds one by one with mtlbook.fit")


class _Adam:
    """``torch.optim.Adam`` on the stacked parameters, that can drop members."""

    def __init__(self, params: dict[str, torch.Tensor], lr: float, weight_decay: float) -> None:
        self.lr, self.weight_decay = lr, weight_decay
        self.params = params
        self.optimizer = self._make(params)

    def _make(self, params):
        trainable = [p for p in params.values() if p.requires_grad]
        settings = {"lr": self.lr, "weight_decay": self.weight_decay}
        try:  # the fused kernel: fit's (foreach) Adam update, in one pass per tensor
            return torch.optim.Adam(trainable, fused=True, **settings)
        except RuntimeError:  # torch < 2.4 has no fused Adam on the CPU
            return torch.optim.Adam(trainable, foreach=True, **settings)

    def keep(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keep the members at positions ``index`` (parameters and Adam's moments)."""
        new = {n: p.detach()[index].clone().requires_grad_(p.requires_grad)
               for n, p in self.params.items()}
        optimizer = self._make(new)
        for name, p in self.params.items():
            state = self.optimizer.state.get(p)
            if not state:
                continue
            optimizer.state[new[name]] = {
                key: value[index].clone() if torch.is_tensor(value) and value.dim() > 0
                else (value.clone() if torch.is_tensor(value) else value)
                for key, value in state.items()}  # the step count is shared: a 0-d tensor
        self.params, self.optimizer = new, optimizer
        return new


def fit_population(
    make_model: Callable[[int], MultiTaskModel],
    train: MultiTaskData | Sequence[MultiTaskData],
    valid: MultiTaskData | Sequence[MultiTaskData],
    seeds: Sequence[int],
    *,
    task_weights: Mapping[str, float] | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    early_stopping: int | None = None,
    monitor: str = "loss",
    progress: bool = False,
    device: str = "auto",
    eval_batch_size: int = 1024,
) -> PopulationResult:
    """Train one member per seed, all at once; each as :func:`mtlbook.fit` would train it.

    Member ``k`` is ``make_model(seeds[k])`` trained with ``fit(..., seed=seeds[k])`` and equal
    loss weights: its own initial weights, its own order of mini-batches, its own best epoch
    and early stopping, and at the end the weights of its best epoch. The members run as one
    vectorised model (``torch.vmap``), so ``K`` seeds cost far less than ``K`` runs.

    Args:
        make_model: ``seed -> MultiTaskModel``, e.g. ``lambda s: MMoE(train.schema, seed=s)``;
            every member must have the same architecture and no dropout.
        train: training data, shared by every member, or one data set per seed (same schema
            and size; e.g. each seed's own draw and split), in the order of ``seeds``.
        valid: validation data, the only data used for model selection and early stopping;
            shared, or one per seed like ``train``.
        seeds: the members' seeds, distinct integers, e.g. ``range(200)``.
        task_weights: fixed loss weights ``{task: w}`` (as
            :class:`~mtlbook.weighting.FixedWeights`); default 1 for every task.
        epochs: maximum number of passes over ``train``.
        batch_size: mini-batch size.
        lr: Adam learning rate.
        weight_decay: L2 weight decay (Adam's, coupled).
        early_stopping: a member stops after this many epochs without improvement of
            ``monitor`` (``None``: every member runs every epoch). A stopped member is
            dropped from the vectorised run; its weights stay those of its best epoch.
        monitor: ``"loss"`` (sum over tasks of the validation log-loss/MSE) or
            ``"TASK:METRIC"``, e.g. ``"task1:auc"``.
        progress: show a progress bar over epochs.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        eval_batch_size: validation batch size; every member's activations of a batch are held
            at once (members × batch samples).

    Returns:
        A :class:`PopulationResult`: the tidy history of every member, a per-member summary,
        ``result.model(k)`` and ``result.evaluate(test)``.

    Raises:
        FloatingPointError: when a member's loss becomes NaN or inf (names the member's seed,
            the task and the step).
        NotImplementedError: when the model cannot run under ``torch.vmap``, or runs
            differently there (names the model).
        ValueError, TypeError: for bad arguments, data that do not match the model, members
            of different architectures, or dropout.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.models import MMoE
        >>> from mtlbook.training.population import fit_population
        >>> data = mb.make_correlated_tasks(1_000, 0.5, n_features=8, seed=0)
        >>> train, valid = data.split((0.8, 0.2), seed=0)
        >>> result = fit_population(
        ...     lambda seed: MMoE(train.schema, n_experts=4, expert_units=(8,), seed=seed),
        ...     train, valid, seeds=range(16), epochs=3)
        >>> result.summary.columns.tolist()
        ['member', 'seed', 'best_epoch', 'best_score', 'epochs_run']
        >>> final = result.summary["best_score"]  # 16 restarts' best validation losses
        >>> model = result.model(0)  # seed 0's model at its best epoch
    """
    seeds = _check_arguments(seeds, epochs, batch_size, lr, weight_decay, early_stopping,
                             eval_batch_size)
    train_parts = _data_parts("train", train, len(seeds))
    valid_parts = _data_parts("valid", valid, len(seeds))
    higher_is_better = _check_monitor(monitor, valid_parts[0])
    task_of_monitor, metric_of_monitor = (("all", "loss") if monitor == "loss"
                                          else monitor.split(":"))
    members = _build_members(make_model, seeds, train_parts[0])
    template = members[0]
    for part in [*train_parts, *valid_parts]:
        template._check_data(part)
    for part in train_parts:
        template.check_training_masks(set(part.masks))
    weights = _task_weights(task_weights, template.task_names)
    dev = resolve_device(device)
    params, _ = stack_module_state(members)
    population = _Population(template, {f"model.{n}": p for n, p in params.items()},
                             None if weights is None else torch.tensor(weights))
    _probe(population, members, train_parts[0], seeds)
    del members, params

    start = time.perf_counter()
    template.to(dev).train()
    optimizer = _Adam({n: p.detach().to(dev).requires_grad_(p.requires_grad)
                       for n, p in population.params.items()}, lr, weight_decay)
    best = {n: p.detach().clone() for n, p in optimizer.params.items()}  # all members
    active = torch.arange(len(seeds))  # members still training, in the stacked order
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    if weights is not None:
        population._losses.weights = population._losses.weights.to(dev)
    if len(train_parts) == 1:  # every member indexes the same rows
        dense, categorical, labels, masks = train_parts[0].tensors()
        row_offset = torch.zeros(len(seeds), 1, dtype=torch.long)
    else:  # member k's row i is row k * n + i of the concatenated data sets
        tensors = [part.tensors() for part in train_parts]
        dense = None if tensors[0][0] is None else torch.cat([t[0] for t in tensors])
        categorical = None if tensors[0][1] is None else torch.cat([t[1] for t in tensors])
        labels = {k: torch.cat([t[2][k] for t in tensors]) for k in tensors[0][2]}
        masks = {k: torch.cat([t[3][k] for t in tensors]) for k in tensors[0][3]}
        row_offset = torch.arange(len(seeds)).mul(len(train_parts[0])).unsqueeze(1)
    row_offset = row_offset.to(dev)
    valid_source = valid_parts[0] if len(valid_parts) == 1 else _MemberData(valid_parts)
    valid_scored = valid_parts[0] if len(valid_parts) == 1 else valid_parts
    dense = None if dense is None else dense.to(dev)
    categorical = None if categorical is None else categorical.to(dev)
    labels = {k: v.to(dev) for k, v in labels.items()}
    masks = {k: v.to(dev) for k, v in masks.items()}
    n, task_names = len(train_parts[0]), template.task_names
    task_weight = [1.0] * len(task_names) if weights is None else weights
    n_batches = -(-n // batch_size)
    best_score = [None] * len(seeds)
    best_epoch, stale, epochs_run = [0] * len(seeds), [0] * len(seeds), [0] * len(seeds)
    rows: list[tuple] = []
    step = 0
    bar = tqdm(range(1, epochs + 1), desc=f"{type(template).__name__} × {len(seeds)}",
               disable=not progress, leave=False)
    for epoch in bar:
        ids = active.tolist()
        # Each member's order, drawn as its own BatchLoader would: [members, n].
        order = torch.stack([torch.randperm(n, generator=generators[i]) for i in ids]).to(dev)
        order += row_offset[active.to(dev)]
        sums = torch.zeros(len(ids), len(task_names), dtype=torch.float64, device=dev)
        total_sums = torch.zeros(len(ids), dtype=torch.float64, device=dev)
        for b in range(n_batches):
            step += 1
            idx = order[:, b * batch_size:(b + 1) * batch_size]  # [members, batch]
            optimizer.optimizer.zero_grad(set_to_none=True)
            values, totals = population.losses(
                optimizer.params, _rows(dense, idx), _rows(categorical, idx),
                {k: _rows(v, idx) for k, v in labels.items()},
                {k: _rows(v, idx) for k, v in masks.items()})
            values = values.detach()  # [members, tasks]
            if not bool(torch.isfinite(values).all()):
                i, t = (~torch.isfinite(values)).nonzero()[0].tolist()
                raise FloatingPointError(
                    f"the loss of task {task_names[t]!r} of member {ids[i]} (seed "
                    f"{seeds[ids[i]]}) became {values[i, t].item()} at epoch {epoch}, step "
                    f"{step}; lower the learning rate or check the labels' scale")
            totals.sum().backward()
            optimizer.optimizer.step()
            sums += values
            total_sums += totals.detach()
        template._clear_gates()

        # Per-member training rows, validation metrics and model selection.
        sums, total_sums = (sums / n_batches).tolist(), (total_sums / n_batches).tolist()
        predictions = population.predict(optimizer.params, valid_source, dev, eval_batch_size,
                                         active)
        scores = _score(predictions, valid_scored, ids, seeds)
        by_member: dict[int, list[tuple]] = {i: [] for i in ids}
        for member, _, task, metric, value in scores:
            by_member[member].append((task, metric, value))
        improved = []
        for pos, i in enumerate(ids):
            seed = seeds[i]
            rows += [(i, seed, epoch, "train", t, "loss", v)
                     for t, v in zip(task_names, sums[pos], strict=True)]
            rows.append((i, seed, epoch, "train", "all", "loss", total_sums[pos]))
            rows += [(i, seed, epoch, "train", t, "weight", w)
                     for t, w in zip(task_names, task_weight, strict=True)]
            metrics = by_member[i]
            task_loss = [(t, "loss", v) for t, m, v in metrics if m in ("logloss", "mse")]
            metrics += [*task_loss, ("all", "loss", float(np.sum([v for *_, v in task_loss])))]
            rows += [(i, seed, epoch, "valid", t, m, v) for t, m, v in metrics]
            score = next((float(v) for t, m, v in metrics
                          if t == task_of_monitor and m == metric_of_monitor), None)
            if score is None:
                raise ValueError(f"monitor {monitor!r} was not computed on the validation "
                                 "split (is the task defined on any validation sample?)")
            epochs_run[i] = epoch
            if best_score[i] is None or (score > best_score[i] if higher_is_better
                                         else score < best_score[i]):
                best_score[i], best_epoch[i], stale[i] = score, epoch, 0
                improved.append(pos)
            else:
                stale[i] += 1
        if improved:
            where = torch.tensor(improved, device=dev)
            for name, p in optimizer.params.items():
                best[name][active[where].to(dev)] = p.detach()[where]
        keep = [pos for pos, i in enumerate(ids)
                if early_stopping is None or stale[i] < early_stopping]
        bar.set_postfix({"training": len(keep)})
        if not keep:
            break
        if len(keep) < len(ids):
            index = torch.tensor(keep)
            optimizer.keep(index.to(dev))
            active = active[index]
    bar.close()

    population.params = {name: p.cpu() for name, p in best.items()}
    template.cpu().eval()
    history = pd.DataFrame(rows, columns=_HISTORY)
    summary = pd.DataFrame({"member": range(len(seeds)), "seed": seeds,
                            "best_epoch": best_epoch,
                            "best_score": [float(s) for s in best_score],
                            "epochs_run": epochs_run})
    return PopulationResult(seeds=seeds, history=history, summary=summary, monitor=monitor,
                            train_seconds=time.perf_counter() - start,
                            _make_model=make_model, _population=population)
