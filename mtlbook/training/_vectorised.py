"""The machinery of :func:`~mtlbook.training.fit_population`: ``K`` models as one vectorised one.

The members' parameters are stacked (one ``[K, ...]`` tensor each) and the model's own forward
pass and losses run under ``torch.vmap`` over the member dimension (:class:`_Population`);
:func:`_probe` checks on a batch that this reproduces every member's own forward pass and
gradients; :class:`_Adam` is one Adam optimiser over the stacked tensors that can drop members;
:class:`_Batches` draws every member's mini-batches as its own loader would; :func:`_score`
computes every member's validation metrics at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.func import functional_call

from ..data import Batch, MultiTaskData
from ..metrics import gauc
from ..models.base import MultiTaskModel
from ..models.experts import StackedExperts
from ..utils import dropout_rates

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

    def __init__(
        self,
        template: MultiTaskModel,
        params: dict[str, torch.Tensor],
        weights: torch.Tensor | None = None,
    ) -> None:
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
        run = torch.vmap(
            lambda p, *batch: functional_call(self._losses, p, batch),
            in_dims=dims,
            randomness="error",
        )
        return run(params, dense, categorical, labels, masks)

    @torch.no_grad()
    def predict(
        self,
        params,
        data: MultiTaskData | _MemberData,
        device: torch.device,
        batch_size: int,
        members: torch.Tensor | None = None,
    ) -> dict[str, np.ndarray]:
        """Every member's predictions on ``data``: task -> ``[members, n]`` float32 array.

        ``data`` is one data set that every member predicts, or a :class:`_MemberData` whose
        rows ``members`` (the members in ``params``, in order) each member predicts on its own.
        """
        shared = isinstance(data, MultiTaskData)
        dense_dim = None if shared or data.dense is None else 0
        categorical_dim = None if shared or data.categorical is None else 0
        run = torch.vmap(
            lambda p, d, c: functional_call(self._predict, p, (d, c)),
            in_dims=(0, dense_dim, categorical_dim),
            randomness="error",
        )
        was_training = self.template.training
        self.template.eval()
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in self.template.task_names}
        try:
            if isinstance(data, MultiTaskData):  # shared
                batches = (
                    (b.dense, b.categorical)
                    for b in (batch.to(device) for batch in data.loader(batch_size, shuffle=False))
                )
            else:
                assert members is not None  # given with a _MemberData
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
            yield (
                None if self.dense is None else _rows(self.dense, index).to(device),
                None if self.categorical is None else _rows(self.categorical, index).to(device),
            )


@overload
def _rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor: ...
@overload
def _rows(t: None, index: torch.Tensor) -> None: ...
def _rows(t: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """Rows ``index`` (``[members, batch]``) of ``t``, as ``[members, batch, ...]``."""
    if t is None:
        return None
    return t.index_select(0, index.reshape(-1)).view(*index.shape, *t.shape[1:])


def _member_metrics(
    kind: str, y: np.ndarray, p: np.ndarray, groups: np.ndarray | None
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


def _score(
    predictions: dict[str, np.ndarray],
    data: MultiTaskData | Sequence[MultiTaskData],
    members: Sequence[int],
    seeds: Sequence[int],
) -> list[tuple]:
    """``(member, seed, task, metric, value)`` rows: :func:`mtlbook.evaluate`'s metrics of
    each member's predictions (row ``i`` of each array belongs to ``members[i]``), on ``data``
    or, given one data set per member, on ``data[member]``."""
    if not isinstance(data, MultiTaskData):  # one data set per member: score them one by one
        rows = []
        for i, member in enumerate(members):
            own = {name: p[i : i + 1] for name, p in predictions.items()}
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
            rows += [(member, seeds[member], task.name, k, float(v[i])) for k, v in metrics.items()]
    return rows


def _build_members(make_model, seeds, train) -> list[MultiTaskModel]:
    if isinstance(make_model, nn.Module) or not callable(make_model):
        raise TypeError(
            f"make_model must be a callable seed -> MultiTaskModel such as "
            f"lambda seed: MMoE(train.schema, seed=seed), got "
            f"{type(make_model).__name__}"
        )
    members = [make_model(seed) for seed in seeds]
    first = members[0]
    if not isinstance(first, MultiTaskModel):
        raise TypeError(
            f"make_model must return a mtlbook MultiTaskModel, got {type(first).__name__}"
        )
    name = type(first).__name__
    shapes = {n: (p.shape, p.dtype, p.requires_grad) for n, p in first.named_parameters()}
    buffers = dict(first.named_buffers())
    for seed, model in zip(seeds[1:], members[1:], strict=True):
        if type(model) is not type(first):
            raise ValueError(
                f"make_model({seed}) built a {type(model).__name__}, "
                f"make_model({seeds[0]}) a {name}: a population has one architecture"
            )
        other = {n: (p.shape, p.dtype, p.requires_grad) for n, p in model.named_parameters()}
        if other != shapes:
            raise ValueError(
                f"make_model({seed}) and make_model({seeds[0]}) built {name}s with "
                "different parameters (names or shapes); a population needs "
                "identical architectures, only the seed may differ"
            )
        other_buffers = dict(model.named_buffers())
        if other_buffers.keys() != buffers.keys() or not all(
            torch.equal(other_buffers[n], b) for n, b in buffers.items() if b is not None
        ):
            raise ValueError(
                f"make_model({seed}) and make_model({seeds[0]}) built {name}s whose "
                "buffers differ; the members must differ in their parameters only"
            )
    dropout = dropout_rates(first)
    if dropout:
        raise ValueError(
            f"{name} uses dropout (p={dropout[0]}); fit_population does not "
            "support dropout, since a member's dropout masks could not match its "
            "separate fit run. Build the members with dropout=0, or train them "
            "one by one with mtlbook.fit"
        )
    first._check_data(train)
    return members


def _probe(
    population: _Population,
    members: list[MultiTaskModel],
    data: MultiTaskData,
    seeds: Sequence[int],
) -> None:
    """Refuse a model that does not run under vmap or runs differently there: compare the
    vectorised losses (all members) and gradients (first and last member) on a small batch
    with each member's own."""
    name = type(population.template).__name__
    n = min(len(data), 64)
    batch = next(iter(data.loader(n, shuffle=False)))
    k = len(members)

    def stacked(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.unsqueeze(0).expand(k, *t.shape).contiguous()

    params = {
        n_: p.detach().clone().requires_grad_(p.requires_grad)
        for n_, p in population.params.items()
    }
    try:
        values, totals = population.losses(
            params,
            stacked(batch.dense),
            stacked(batch.categorical),
            {t: stacked(v) for t, v in batch.labels.items()},
            {t: stacked(v) for t, v in batch.masks.items()},
        )
        totals.sum().backward()
    except Exception as err:  # any failure under vmap: say which model and why
        raise NotImplementedError(
            f"{name} cannot be trained as a vectorised population: its forward pass or loss "
            f"does not run under torch.vmap ({type(err).__name__}: {err}). Train the seeds one "
            "by one with mtlbook.fit"
        ) from err
    finally:
        population.template._clear_gates()
    check = sorted({0, k - 1})
    for i, model in enumerate(members):
        model.train()
        model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(i in check):
            own, own_total = _Losses(model, population._losses.weights)(
                batch.dense, batch.categorical, batch.labels, batch.masks
            )
        problem = None
        if not torch.allclose(
            values[i].detach(), own.detach(), _PROBE_RTOL, _PROBE_ATOL, equal_nan=True
        ):
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
                "Train the seeds one by one with mtlbook.fit"
            )


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
        new = {
            n: p.detach()[index].clone().requires_grad_(p.requires_grad)
            for n, p in self.params.items()
        }
        optimizer = self._make(new)
        for name, p in self.params.items():
            state = self.optimizer.state.get(p)
            if not state:
                continue
            optimizer.state[new[name]] = {
                key: value[index].clone()
                if torch.is_tensor(value) and value.dim() > 0
                else (value.clone() if torch.is_tensor(value) else value)
                for key, value in state.items()
            }  # the step count is shared: a 0-d tensor
        self.params, self.optimizer = new, optimizer
        return new


class _Batches:
    """Every member's training batches, drawn as its own
    ``BatchLoader(shuffle=True, seed=seed)`` would, from one shared data set or each member's
    own (concatenated, member ``k``'s row ``i`` at row ``k · n + i``)."""

    def __init__(
        self,
        parts: Sequence[MultiTaskData],
        seeds: Sequence[int],
        batch_size: int,
        dev: torch.device,
    ) -> None:
        if len(parts) == 1:  # every member indexes the same rows
            dense, categorical, labels, masks = parts[0].tensors()
            offset = torch.zeros(len(seeds), 1, dtype=torch.long)
        else:
            tensors = [part.tensors() for part in parts]
            dense = None if tensors[0][0] is None else torch.cat([t[0] for t in tensors])
            categorical = None if tensors[0][1] is None else torch.cat([t[1] for t in tensors])
            labels = {k: torch.cat([t[2][k] for t in tensors]) for k in tensors[0][2]}
            masks = {k: torch.cat([t[3][k] for t in tensors]) for k in tensors[0][3]}
            offset = torch.arange(len(seeds)).mul(len(parts[0])).unsqueeze(1)
        self.offset = offset.to(dev)
        self.dense = None if dense is None else dense.to(dev)
        self.categorical = None if categorical is None else categorical.to(dev)
        self.labels = {k: v.to(dev) for k, v in labels.items()}
        self.masks = {k: v.to(dev) for k, v in masks.items()}
        self.n, self.batch_size, self.dev = len(parts[0]), batch_size, dev
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.step = 0

    def train_epoch(
        self,
        population: _Population,
        optimizer: _Adam,
        active: torch.Tensor,
        epoch: int,
        seeds: Sequence[int],
    ) -> tuple[list, list]:
        """One pass of the ``active`` members; each one's mean task losses and total loss."""
        ids = active.tolist()
        # Each member's order, drawn as its own BatchLoader would: [members, n].
        order = torch.stack([torch.randperm(self.n, generator=self.generators[i]) for i in ids]).to(
            self.dev
        )
        order += self.offset[active.to(self.dev)]
        n_tasks = len(population.template.task_names)
        sums = torch.zeros(len(ids), n_tasks, dtype=torch.float64, device=self.dev)
        total_sums = torch.zeros(len(ids), dtype=torch.float64, device=self.dev)
        n_batches = -(-self.n // self.batch_size)
        for b in range(n_batches):
            self.step += 1
            idx = order[:, b * self.batch_size : (b + 1) * self.batch_size]  # [members, batch]
            optimizer.optimizer.zero_grad(set_to_none=True)
            values, totals = population.losses(
                optimizer.params,
                _rows(self.dense, idx),
                _rows(self.categorical, idx),
                {k: _rows(v, idx) for k, v in self.labels.items()},
                {k: _rows(v, idx) for k, v in self.masks.items()},
            )
            values = values.detach()  # [members, tasks]
            if not bool(torch.isfinite(values).all()):
                i, t = (~torch.isfinite(values)).nonzero()[0].tolist()
                raise FloatingPointError(
                    f"the loss of task {population.template.task_names[t]!r} of member "
                    f"{ids[i]} (seed {seeds[ids[i]]}) became {values[i, t].item()} at epoch "
                    f"{epoch}, step {self.step}; lower the learning rate or check the labels' "
                    "scale"
                )
            totals.sum().backward()
            optimizer.optimizer.step()
            sums += values
            total_sums += totals.detach()
        return (sums / n_batches).tolist(), (total_sums / n_batches).tolist()
