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
from torch.func import stack_module_state
from tqdm.auto import tqdm

from ..data import MultiTaskData
from ..models.base import MultiTaskModel
from ..utils import resolve_device
from ._optimizer import sparse_tables
from ._vectorised import _Adam, _Batches, _build_members, _MemberData, _Population, _probe, _score
from .selection import Selection, check_monitor, epoch_rows

__all__ = ["PopulationResult", "fit_population"]

_HISTORY = ["member", "seed", "epoch", "split", "task", "metric", "value"]
_SCORES = ["member", "seed", "task", "metric", "value"]


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
            raise IndexError(
                f"member must be an integer in 0 .. {len(self.seeds) - 1}, got {member!r}"
            )
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

    def evaluate(
        self, data: MultiTaskData | Sequence[MultiTaskData], batch_size: int = 1024
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
        predictions = self._population.predict(
            self._population.params,
            source,
            torch.device("cpu"),
            batch_size,
            torch.arange(len(self.seeds)),
        )
        scored = parts[0] if len(parts) == 1 else parts
        return pd.DataFrame(_score(predictions, scored, members, self.seeds), columns=_SCORES)


def _data_parts(name: str, data, n_members: int) -> list[MultiTaskData]:
    """``[data]`` for one data set shared by every member, or the list of per-member data
    sets, checked: one per member, the same schema and the same size."""
    if isinstance(data, MultiTaskData):
        return [data]
    if isinstance(data, str | bytes) or not isinstance(data, Sequence):
        raise TypeError(
            f"{name} must be a MultiTaskData or a sequence of them (one per seed), "
            f"got {type(data).__name__}"
        )
    parts = list(data)
    bad = [type(p).__name__ for p in parts if not isinstance(p, MultiTaskData)]
    if bad:
        raise TypeError(f"{name} must hold MultiTaskData objects, got {bad[0]}")
    if len(parts) != n_members:
        raise ValueError(
            f"{name} holds {len(parts)} data sets for {n_members} seeds; give one "
            "per seed, or one MultiTaskData for all"
        )
    for i, part in enumerate(parts[1:], start=1):
        if part.schema != parts[0].schema:
            raise ValueError(
                f"{name}[{i}] has another schema than {name}[0]: the members of a "
                "population share one architecture, so their data share a schema"
            )
        if len(part) != len(parts[0]):
            raise ValueError(
                f"{name}[{i}] has {len(part)} rows, {name}[0] {len(parts[0])}: a "
                "population's per-seed data sets must have the same size"
            )
    return parts


def _task_weights(task_weights, task_names: Sequence[str]) -> list[float] | None:
    """The fixed loss weights in task order (``None``: every weight 1), checked."""
    if task_weights is None:
        return None
    if not isinstance(task_weights, Mapping):
        raise TypeError(
            f"task_weights must be a mapping task -> weight, got {type(task_weights).__name__}"
        )
    unknown = sorted(set(task_weights) - set(task_names))
    missing = [t for t in task_names if t not in task_weights]
    if unknown or missing:
        raise ValueError(
            f"task_weights must give a weight for each task {list(task_names)}; "
            f"unknown {unknown}, missing {missing}"
        )
    values = []
    for task in task_names:
        w = task_weights[task]
        if (
            isinstance(w, bool)
            or not isinstance(w, int | float | np.floating | np.integer)
            or not math.isfinite(w)
            or w < 0
        ):
            raise ValueError(f"task_weights[{task!r}] must be a finite number ≥ 0, got {w!r}")
        values.append(float(w))
    if not any(values):
        raise ValueError(f"every task weight is 0, so no task would be trained: {task_weights}")
    return values


def _check_arguments(
    seeds, epochs, batch_size, lr, weight_decay, early_stopping, eval_batch_size
) -> tuple[int, ...]:
    if isinstance(seeds, int | np.integer):
        raise TypeError(
            f"seeds must be a sequence of integers such as range({seeds}), "
            f"got the single integer {seeds}"
        )
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds is empty: a population needs at least one member")
    bad = [s for s in seeds if not isinstance(s, int | np.integer) or isinstance(s, bool)]
    if bad:
        raise TypeError(f"seeds must be integers, got {bad[:3]}")
    seeds = tuple(int(s) for s in seeds)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(
            f"seeds {repeated} appear more than once; members with the same seed "
            "would be identical runs"
        )
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("eval_batch_size", eval_batch_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay!r}")
    if early_stopping is not None and (
        not isinstance(early_stopping, int)
        or isinstance(early_stopping, bool)
        or early_stopping < 1
    ):
        raise ValueError(
            f"early_stopping must be None or a positive integer, got {early_stopping!r}"
        )
    return seeds


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
        epochs, batch_size, lr, weight_decay, monitor: as in :func:`mtlbook.fit`.
        early_stopping: a member stops after this many epochs without improvement of
            ``monitor`` (``None``: never); it leaves the vectorised run with its best weights.
        progress, device: a progress bar over epochs; ``"auto"``, ``"cpu"`` or ``"cuda"``.
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
    seeds = _check_arguments(
        seeds, epochs, batch_size, lr, weight_decay, early_stopping, eval_batch_size
    )
    train_parts = _data_parts("train", train, len(seeds))
    valid_parts = _data_parts("valid", valid, len(seeds))
    higher_is_better = check_monitor(monitor, valid_parts[0])
    dev = resolve_device(device)
    population, weights = _stacked_population(
        make_model, seeds, train_parts, valid_parts, task_weights
    )
    template = population.template
    start = time.perf_counter()
    template.to(dev).train()
    optimizer = _Adam(
        {
            n: p.detach().to(dev).requires_grad_(p.requires_grad)
            for n, p in population.params.items()
        },
        lr,
        weight_decay,
    )
    if weights is not None:
        assert population._losses.weights is not None  # built from weights above
        population._losses.weights = population._losses.weights.to(dev)
    best = {n: p.detach().clone() for n, p in optimizer.params.items()}  # all members
    batches = _Batches(train_parts, seeds, batch_size, dev)
    valid_source = valid_parts[0] if len(valid_parts) == 1 else _MemberData(valid_parts)
    valid_scored = valid_parts[0] if len(valid_parts) == 1 else valid_parts
    records = _Records(
        seeds, template.task_names, weights, monitor, higher_is_better, early_stopping
    )
    active = torch.arange(len(seeds))  # members still training, in the stacked order
    bar = tqdm(
        range(1, epochs + 1),
        desc=f"{type(template).__name__} × {len(seeds)}",
        disable=not progress,
        leave=False,
    )
    for epoch in bar:
        sums, totals = batches.train_epoch(population, optimizer, active, epoch, seeds)
        template._clear_gates()
        predictions = population.predict(
            optimizer.params, valid_source, dev, eval_batch_size, active
        )
        scores = _score(predictions, valid_scored, active.tolist(), seeds)
        improved = records.epoch(epoch, active.tolist(), sums, totals, scores)
        if improved:
            where = torch.tensor(improved, device=dev)
            for name, p in optimizer.params.items():
                best[name][active[where].to(dev)] = p.detach()[where]
        keep = records.training(active.tolist())
        bar.set_postfix({"training": len(keep)})
        if not keep:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep)
            optimizer.keep(index.to(dev))
            active = active[index]
    bar.close()

    population.params = {name: p.cpu() for name, p in best.items()}
    template.cpu().eval()
    return PopulationResult(
        seeds=seeds,
        history=records.history(),
        summary=records.summary(),
        monitor=monitor,
        train_seconds=time.perf_counter() - start,
        _make_model=make_model,
        _population=population,
    )


def _stacked_population(
    make_model: Callable[[int], MultiTaskModel],
    seeds: Sequence[int],
    train_parts: list[MultiTaskData],
    valid_parts: list[MultiTaskData],
    task_weights: Mapping[str, float] | None,
) -> tuple[_Population, list[float] | None]:
    """The members built and checked against the data, stacked into one population whose
    vmapped forward pass and gradients :func:`_probe` has compared with each member's own;
    and the task weights in the model's task order (``None``: all 1)."""
    members = _build_members(make_model, seeds, train_parts[0])
    template = members[0]
    if sparse_tables(template):
        raise ValueError(
            f"{type(template).__name__} has embedding tables with sparse gradients, which a "
            "population cannot train (its members' tables are one stacked tensor); build the "
            "members with dense ones (mtlbook.models.sparse_embeddings(model, False)) or train "
            "each seed with mtlbook.fit"
        )
    for part in [*train_parts, *valid_parts]:
        template._check_data(part)
    for part in train_parts:
        template.check_training_masks(set(part.masks))
    weights = _task_weights(task_weights, template.task_names)
    params, _ = stack_module_state(members)
    population = _Population(
        template,
        {f"model.{n}": p for n, p in params.items()},
        None if weights is None else torch.tensor(weights),
    )
    _probe(population, members, train_parts[0], seeds)
    return population, weights


class _Records:
    """Every member's history rows, its model selection (a
    :class:`~mtlbook.training.selection.Selection` each, as :func:`mtlbook.fit` keeps one) and
    the epochs it ran."""

    def __init__(
        self,
        seeds: Sequence[int],
        task_names: Sequence[str],
        weights: Sequence[float] | None,
        monitor: str,
        higher_is_better: bool,
        early_stopping: int | None,
    ) -> None:
        self.seeds, self.task_names = list(seeds), tuple(task_names)
        self.weights = dict(
            zip(task_names, [1.0] * len(task_names) if weights is None else weights, strict=True)
        )
        self.selections = [Selection(monitor, higher_is_better, early_stopping) for _ in seeds]
        self.epochs_run = [0] * len(seeds)
        self.rows: list[tuple] = []

    def epoch(
        self,
        epoch: int,
        members: Sequence[int],
        sums: Sequence[Sequence[float]],
        totals: Sequence[float],
        scores: Sequence[tuple],
    ) -> list[int]:
        """Record the epoch of the ``members`` still training (their mean task losses, total
        losses and validation ``(member, seed, task, metric, value)`` scores); the positions
        (in ``members``) of those whose epoch is their best so far."""
        by_member: dict[int, list[tuple]] = {i: [] for i in members}
        for member, _, task, metric, value in scores:
            by_member[member].append((task, metric, value))
        improved = []
        for pos, i in enumerate(members):
            rows = epoch_rows(
                epoch,
                dict(zip(self.task_names, sums[pos], strict=True)),
                totals[pos],
                self.weights,
                by_member[i],
            )
            self.rows += [(i, self.seeds[i], *row) for row in rows]
            self.epochs_run[i] = epoch
            if self.selections[i].update(epoch, rows):
                improved.append(pos)
        return improved

    def training(self, members: Sequence[int]) -> list[int]:
        """The positions of the ``members`` that early stopping has not stopped."""
        return [pos for pos, i in enumerate(members) if not self.selections[i].stopped]

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=_HISTORY)

    def summary(self) -> pd.DataFrame:
        best_scores = []
        for s in self.selections:
            assert s.best_score is not None  # every member trains at least one epoch
            best_scores.append(float(s.best_score))
        return pd.DataFrame(
            {
                "member": range(len(self.seeds)),
                "seed": self.seeds,
                "best_epoch": [s.best_epoch for s in self.selections],
                "best_score": best_scores,
                "epochs_run": self.epochs_run,
            }
        )
